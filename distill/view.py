"""A read-only view of one merged filesystem, and the root-confined lookups every reader uses.

A backend (a rootfs directory, an image's layer index, a plan) implements three primitives
on *canonical* paths, which hold no symlink and no `..`: `lstat`, `listdir` and `open`.
Everything else (symlink resolution, globbing, walking) is done here, once, with chroot
semantics: an absolute link target starts again at the view's root, `..` stops at the
root, and at most 40 links are followed, as the kernel does. No lookup can name a host path.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from distill import paths

__all__ = ["MAX_SYMLINKS", "NodeType", "Node", "Resolved", "View"]

MAX_SYMLINKS = 40


class NodeType(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"
    SOCKET = "socket"


@dataclass(frozen=True)
class Node:
    """Metadata of one filesystem object, at its canonical path."""

    path: str
    type: NodeType
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    target: str | None = None  # symlink target, verbatim
    file_id: object = None  # equal for the hard links of one file, else None

    @property
    def is_dir(self) -> bool:
        return self.type is NodeType.DIR

    @property
    def is_file(self) -> bool:
        return self.type is NodeType.FILE

    @property
    def is_symlink(self) -> bool:
        return self.type is NodeType.SYMLINK


@dataclass(frozen=True)
class Resolved:
    """The outcome of looking a path up.

    `path` is canonical (for a missing path: the canonical parent plus the missing tail),
    `node` is None when nothing is there, `links` are the symlinks followed, in order, and
    `error` says why a lookup failed when it was not a plain absence.
    """

    path: str
    node: Node | None
    links: tuple[Node, ...] = ()
    error: str | None = None


class View(ABC):
    """Read-only access to one filesystem tree, rooted at `/`."""

    #: how the view names itself in messages, e.g. `rootfs:/srv/fat`
    name: str = "view"

    @abstractmethod
    def lstat(self, path: str) -> Node | None:
        """Metadata of the object at canonical `path`, not following a final symlink."""

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Sorted names in the directory at canonical `path`."""

    @abstractmethod
    def open(self, path: str) -> BinaryIO:
        """A seekable binary stream of the regular file at canonical `path`."""

    #: a view whose objects never change while it is read memoizes its lookups (a planner and its
    #: checks ask for the same paths again and again: 190,000 lookups for 1,750 roots)
    snapshot: bool = False
    _resolved: dict[tuple[str, bool], Resolved]

    def resolve(self, path: str, *, follow: bool = True) -> Resolved:
        """Look `path` up inside the view, following symlinks (the last one only if `follow`)."""
        if not self.snapshot:
            return self._lookup(path, follow)
        try:
            memo = self._resolved
        except AttributeError:
            memo = self._resolved = {}
        found = memo.get((path, follow))
        if found is None:
            found = memo[path, follow] = self._lookup(path, follow)
        return found

    def _lookup(self, path: str, follow: bool) -> Resolved:
        pending = paths.split(path)
        pending.reverse()
        current = "/"
        links: list[Node] = []
        while pending:
            part = pending.pop()
            if part == "..":
                current = paths.parent(current)
                continue
            candidate = paths.join(current, part)
            node = self.lstat(candidate)
            if node is None:
                tail = [candidate, *reversed(pending)]
                return Resolved(paths.clean("/".join(tail)), None, tuple(links))
            if node.is_symlink and (pending or follow):
                if len(links) >= MAX_SYMLINKS:
                    return Resolved(candidate, None, tuple(links), "too many levels of symbolic links")
                links.append(node)
                target = node.target or ""
                if target.startswith("/"):
                    current = "/"
                pending.extend(reversed(paths.split(target)))
                continue
            if pending and not node.is_dir:
                return Resolved(candidate, None, tuple(links), "not a directory")
            current = candidate
        return Resolved(current, self.lstat(current), tuple(links))

    def stat(self, path: str) -> Node | None:
        """Metadata of what `path` finally names, following symlinks."""
        return self.resolve(path).node

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        """Contents of the regular file `path` names (following symlinks), at most `limit` bytes."""
        found = self.resolve(path)
        if found.node is None or not found.node.is_file:
            raise FileNotFoundError(path)
        with self.open(found.path) as stream:
            return stream.read() if limit is None else stream.read(limit)

    def content_key(self, path: str) -> str | None:
        """A name of the bytes of the regular file at canonical `path` that stays valid across runs (a cache key
        for what is made of them), or None when the backend cannot vouch for one (by default)."""
        return None

    def file_totals(self) -> tuple[int, int]:
        """(regular files, their bytes) in the whole view; backends that know them without a walk say so."""
        files = size = 0
        for node in self.walk("/"):
            if node.is_file:
                files += 1
                size += node.size
        return files, size

    def file_totals_ahead(self) -> Callable[[], tuple[int, int]]:
        """Start `file_totals`; the function returned gives them. A backend whose count can run beside
        its other reads starts it on a thread; by default it runs when asked."""
        return self.file_totals

    def walk(self, path: str = "/") -> Iterator[Node]:
        """Every object below the canonical directory `path`, depth first, without following symlinks."""
        stack = [path]
        while stack:
            directory = stack.pop()
            children = []
            for name in self.listdir(directory):
                node = self.lstat(paths.join(directory, name))
                if node is not None:
                    children.append(node)
            for node in children:
                yield node
            stack.extend(node.path for node in reversed(children) if node.is_dir)

    def glob(self, pattern: str) -> list[str]:
        """Paths matching `pattern`, spelled as the pattern spells them, in canonical order.

        The literal prefix may pass through symlinks (`/lib/x86_64-linux-gnu/libnss_*` works on a
        merged-/usr tree); below a `**` symlinked directories are matched but not descended into.
        """
        if not paths.is_glob(pattern):
            return [paths.clean(pattern)] if self.resolve(pattern, follow=False).node else []
        parts = paths.split(pattern)
        first_glob = next(i for i, part in enumerate(parts) if paths.is_glob(part))
        prefix = "/" + "/".join(parts[:first_glob])
        base = self.resolve(prefix)
        if base.node is None or not base.node.is_dir:
            return []
        found: list[str] = []
        self._glob_from(paths.clean(prefix), base.path, parts[first_glob:], found)
        regex = paths.compile_glob(pattern)
        return sorted({p for p in found if regex.match(p)}, key=paths.sort_key)

    def _glob_from(self, spelled: str, canonical: str, rest: list[str], found: list[str]) -> None:
        if not rest:
            found.append(spelled)
            return
        part, tail = rest[0], rest[1:]
        if part == "**":
            found.append(spelled)
            for node in self.walk(canonical):
                found.append(spelled + node.path[len(canonical.rstrip("/")) :])
            return
        regex = paths.compile_glob("/" + part)
        for name in self.listdir(canonical):
            if not regex.match("/" + name):
                continue
            child_spelled = paths.join(spelled, name)
            if not tail:
                found.append(child_spelled)
                continue
            child = self.resolve(paths.join(canonical, name))
            if child.node is not None and child.node.is_dir:
                self._glob_from(child_spelled, child.path, tail, found)
