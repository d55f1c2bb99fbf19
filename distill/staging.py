"""Destinations are checked before anything is read, and written atomically: into a temporary
sibling, then renamed into place, so a refused or failed run leaves nothing behind."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.errors import DestinationError, UsageError
from distill.refs import Ref
from distill.transports.table import transport

__all__ = ["check_destination", "check_distinct", "file_mode", "staged"]


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_destination(ref: Ref, *, source_root: str | None, force: bool, layout_ok: bool = False) -> Path:
    """Refuse a destination that is not empty (without --force) or overlaps the source.

    `layout_ok`: an existing OCI layout may receive another image (`oci:DIR:TAG`).
    """
    dest = Path(ref.path).absolute()
    resolved = dest.resolve()
    if source_root is not None:
        root = Path(source_root).resolve()
        if _inside(resolved, root) or _inside(root, resolved):
            raise DestinationError(f"{ref}: overlaps the source {root}; write the output somewhere else")
    if dest.is_symlink() and not force:
        raise DestinationError(f"{ref}: is a symlink; give the real path, or --force to replace the link")
    if dest.exists() and not dest.is_symlink():
        empty_dir = dest.is_dir() and not any(dest.iterdir())
        if layout_ok and (dest / "oci-layout").is_file():
            pass
        elif not empty_dir and not force:
            raise DestinationError(f"{ref}: already exists and is not empty; use --force to replace it")
    parent = dest.parent
    if not parent.is_dir():
        raise DestinationError(f"{ref}: the directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DestinationError(f"{ref}: cannot write in {parent}")
    return dest


def check_distinct(refs: list[Ref]) -> None:
    """Refuse two local outputs on one path: the second would silently replace the first.

    Two `oci:` outputs may share a layout (it gains one image per REF), but not a REF.
    """
    seen: dict[Path, Ref] = {}
    for ref in refs:
        if not transport(ref.transport).local:
            continue
        path = Path(ref.path).absolute().resolve()
        first = seen.get(path)
        if first is not None and not (first.transport == ref.transport == "oci" and first.name != ref.name):
            raise UsageError(f"--out {ref}: writes the same path as --out {first}; give each output its own path")
        seen.setdefault(path, ref)


def file_mode() -> int:
    """The mode a newly created file gets under the process umask, as `open(2)` would give it."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def staged(dest: Path, *, directory: bool) -> Iterator[Path]:
    """A temporary sibling of `dest`, moved into place when the block succeeds, removed when it fails.

    The parent must exist (distill creates no directory the user did not name). A file gets the
    mode the umask gives a new file, not mkstemp's private 0600. OS errors here are exit code 5.
    """
    prefix = f".{dest.name}.distill-{os.getpid()}-"  # ours alone, so cleanup finds it even if a signal beat the assignment
    try:
        try:
            if directory:
                temp = Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
            else:
                fd, name = tempfile.mkstemp(prefix=prefix, dir=dest.parent)
                os.fchmod(fd, file_mode())
                os.close(fd)
                temp = Path(name)
        except OSError as exc:
            raise DestinationError(f"{dest}: cannot write in {dest.parent}: {exc.strerror}") from None
        yield temp
        try:
            with signals_held():
                _replace(temp, dest)
        except OSError as exc:
            raise DestinationError(f"{dest}: cannot move the output into place: {exc.strerror or exc}") from None
    except BaseException:
        for leftover in dest.parent.glob(glob.escape(prefix) + "*"):
            _remove(leftover)
        raise


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, so that an interruption never falls between two
    steps that belong together (a destination moved aside but not yet replaced). A signal that arrived
    meanwhile is raised as the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _replace(temp: Path, dest: Path) -> None:
    """Rename `temp` over `dest`; an existing (non-empty) destination is moved aside first, then removed."""
    if not (dest.exists() or dest.is_symlink()):
        os.rename(temp, dest)
        return
    if dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir()) and temp.is_dir():
        os.rename(temp, dest)  # rename(2) replaces an empty directory
        return
    if not dest.is_dir() and not temp.is_dir():
        os.replace(temp, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.distill-old-", dir=dest.parent))
    os.rename(dest, old / "x")
    os.rename(temp, dest)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _remove_tree(str(path))
    else:
        path.unlink(missing_ok=True)


def _remove_tree(top: str) -> None:
    """Remove a directory tree, best effort, with an explicit stack: its depth is whatever was shipped
    (shutil.rmtree recurses and fails past about a thousand levels). Symlinks are removed, never followed."""
    stack: list[tuple[str, bool]] = [(top, False)]
    while stack:
        directory, emptied = stack.pop()
        if emptied:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
            continue
        stack.append((directory, True))
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, False))
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
        except OSError:
            continue
