"""`rootfs:DIR`: a plain directory on the host, read as an image's root filesystem, or written as one.

As a destination the plan becomes a directory tree, ready for `COPY --from` or `chroot`.
Ownership, modes (setuid bits included when the plan keeps them), symlinks, hard links and
mtimes are applied; directories get their modes and times last, deepest first, so a
read-only directory does not block writing into it.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from distill.errors import DestinationError, SourceError
from distill.plan import Entry, EntryKind, Plan
from distill.refs import Ref
from distill.staging import staged
from distill.view import Node, NodeType, View

if TYPE_CHECKING:
    from distill.transports import SourceOptions

__all__ = ["DirView", "node_from_stat", "read_view", "write_plan"]

_TYPES = {
    stat.S_IFREG: NodeType.FILE,
    stat.S_IFDIR: NodeType.DIR,
    stat.S_IFLNK: NodeType.SYMLINK,
    stat.S_IFCHR: NodeType.CHAR,
    stat.S_IFBLK: NodeType.BLOCK,
    stat.S_IFIFO: NodeType.FIFO,
    stat.S_IFSOCK: NodeType.SOCKET,
}


def node_from_stat(path: str, st: os.stat_result, target: str | None = None) -> Node:
    """A Node for an `os.lstat` result; hard links share a file_id only when st_nlink > 1."""
    kind = _TYPES[stat.S_IFMT(st.st_mode)]
    return Node(
        path=path,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime=int(st.st_mtime),
        size=st.st_size if kind is NodeType.FILE else 0,
        target=target,
        file_id=(st.st_dev, st.st_ino) if kind is NodeType.FILE and st.st_nlink > 1 else None,
    )


class DirView(View):
    """A rootfs directory. Every host access is `root + canonical path`, so it stays inside.

    A snapshot: each object's metadata is read once and kept, so one run sees one consistent tree."""

    snapshot = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        host_root = Path(root)
        if not host_root.is_dir():
            raise SourceError(f"rootfs:{root}: not a directory; give the path of an unpacked root filesystem")
        self.root = str(host_root.resolve())
        self.name = f"rootfs:{root}"
        self._cache: dict[str, Node | None] = {}

    def _host(self, path: str) -> str:
        return self.root if path == "/" else self.root + path

    def lstat(self, path: str) -> Node | None:
        if path in self._cache:
            return self._cache[path]
        host = self._host(path)
        try:
            st = os.lstat(host)
            target = os.readlink(host) if stat.S_ISLNK(st.st_mode) else None
        except (FileNotFoundError, NotADirectoryError):
            node = None
        except OSError as exc:
            raise SourceError(f"{self.name}: cannot read {path}: {exc.strerror}") from None
        else:
            node = node_from_stat(path, st, target)
        self._cache[path] = node
        return node

    def file_totals(self) -> tuple[int, int]:
        """One os.scandir pass over the host tree (links not followed), without building a Node per object.

        Each directory is scanned through a file descriptor (one open at a time), so an entry's size is an
        `fstatat` on its name, not an `lstat` that walks the whole path again (about 15% faster on 7,690 files)."""
        files = size = 0
        stack = [self.root]
        while stack:
            directory = stack.pop()
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # an unreadable directory: a walk through lstat/listdir would not count it either
            try:
                with os.scandir(fd) as entries:  # entries of a descriptor carry their names only
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(f"{directory}/{entry.name}")
                        elif entry.is_file(follow_symlinks=False):
                            files += 1
                            size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            finally:
                os.close(fd)
        return files, size

    def file_totals_ahead(self) -> Callable[[], tuple[int, int]]:
        """The walk on a thread: it is mostly system calls, which release the GIL, so it runs while the
        writer waits on the destination's disk (about 14 ms of a 29 ms walk hidden behind writing the nginx
        rootfs). It shares no state with the view's other reads."""
        counted: list[tuple[int, int]] = []
        thread = threading.Thread(target=lambda: counted.append(self.file_totals()), name="distill-totals", daemon=True)
        thread.start()

        def result() -> tuple[int, int]:
            thread.join()
            return counted[0] if counted else self.file_totals()  # the thread failed: count here, so its error shows

        return result

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._host(path)))
        except OSError as exc:
            raise SourceError(f"{self.name}: cannot list {path}: {exc.strerror}") from None

    def open(self, path: str) -> BinaryIO:
        """Open component by component with O_NOFOLLOW, so a directory swapped for a symlink while
        distill runs cannot lead the read outside the root."""
        fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            parts = path.strip("/").split("/")
            for part in parts[:-1]:
                step = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = step
            leaf = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            raise SourceError(f"{self.name}: cannot open {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(leaf).st_mode):
            os.close(leaf)
            raise SourceError(f"{self.name}: {path} is not a regular file")
        return os.fdopen(leaf, "rb")


def _copy(source: BinaryIO, fd: int) -> None:
    """Copy a source file's bytes to `fd`: in the kernel when the source is a host file (no pass through
    Python's buffers; a shared extent where the filesystem has them), else through a buffer (an image's
    spool slice). Whatever stops the kernel copy before its first byte (another filesystem, a seccomp
    filter that answers EPERM, an old kernel, a file that reports no size) leaves the buffer to do it."""
    if isinstance(getattr(source, "raw", None), io.FileIO):
        copied = 0
        try:
            while count := os.copy_file_range(source.fileno(), fd, 1 << 30):
                copied += count
        except OSError:
            if copied:  # part of the file is written: a real error, not a refusal
                raise
        if copied:
            return
    with open(fd, "wb", buffering=1 << 16, closefd=False) as out:
        shutil.copyfileobj(source, out, 1 << 20)


def read_view(ref: Ref, options: SourceOptions) -> DirView:
    return DirView(ref.path)


def write_plan(plan: Plan, view: View, ref: Ref) -> str:
    return _Writer(ref).write(plan, view)


class _Writer:
    def __init__(self, ref: Ref) -> None:
        self.ref = ref
        self.can_chown = os.geteuid() == 0

    def write(self, plan: Plan, source: View) -> str:
        dest = Path(self.ref.path).absolute()
        with staged(dest, directory=True) as temp:
            entries = plan.ordered()
            for entry in entries:
                self._create(temp, entry, source)
            for entry in reversed(entries):
                if entry.kind is EntryKind.DIR:
                    self._attributes(self._host(temp, entry.path), entry)
        return f"{self.ref}: {len(entries)} entries"

    @staticmethod
    def _host(root: Path, path: str) -> Path:
        return root / path.lstrip("/") if path != "/" else root

    def _create(self, root: Path, entry: Entry, source: View) -> None:
        target = self._host(root, entry.path)
        try:
            if entry.kind is EntryKind.DIR:
                if entry.path != "/":
                    target.mkdir(mode=0o700)
                return
            if entry.kind is EntryKind.SYMLINK:
                os.symlink(entry.target or "", target)
            elif entry.kind is EntryKind.HARDLINK:
                os.link(self._host(root, entry.target or ""), target)
                return
            else:
                self._write_file(target, entry, source)
                return
            self._attributes(target, entry)
        except OSError as exc:
            raise DestinationError(f"{self.ref}: cannot write {entry.path}: {exc.strerror}") from None

    def _write_file(self, target: Path, entry: Entry, source: View) -> None:
        """A regular file, its owner, mode and times set through its descriptor (no path lookups)."""
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if entry.data is not None:
                with open(fd, "wb", buffering=1 << 16, closefd=False) as out:  # a buffer size: no isatty probe
                    out.write(entry.data)
            else:
                assert entry.source is not None
                with source.open(entry.source) as src:
                    _copy(src, fd)
            self._attributes(fd, entry)
        finally:
            os.close(fd)

    def _attributes(self, target: Path | int, entry: Entry) -> None:
        """Owner, mode, times of a path or a descriptor; a symlink's own (never what it points to)."""
        follow = entry.kind is not EntryKind.SYMLINK  # a descriptor takes no follow_symlinks=False
        if self.can_chown:
            os.chown(target, entry.uid, entry.gid, follow_symlinks=follow)
        if follow:
            os.chmod(target, entry.mode)  # after chown, which clears setuid bits
        mtime_ns = int(entry.mtime or 0) * 1_000_000_000
        os.utime(target, ns=(mtime_ns, mtime_ns), follow_symlinks=follow)
