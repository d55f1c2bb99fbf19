"""A plain directory on the host, read as an image's root filesystem."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from distill.errors import SourceError
from distill.view import Node, NodeType, View

__all__ = ["DirView", "node_from_stat"]

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
    """A rootfs directory. Every host access is `root + canonical path`, so it stays inside."""

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
        """One os.scandir pass over the host tree (links not followed), without building a Node per object."""
        files = size = 0
        stack = [self.root]
        while stack:
            try:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            files += 1
                            size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # an unreadable directory: a walk through lstat/listdir would not count it either
        return files, size

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
