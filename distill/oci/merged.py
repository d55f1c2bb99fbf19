"""The merged filesystem of an image's layers, as a read-only View, without extracting anything.

Layers apply bottom to top as the OCI spec and containerd do: within a layer, whiteouts first
(`.wh.NAME` hides NAME and what is below it; `.wh..wh..opq` hides everything a lower layer put in
its directory), then the entries, last writer wins; a directory over a directory only changes
its attributes, anything else replaces the subtree. A member whose parent is a symlink lands where
the link points (resolved inside the image, never outside). Missing parents appear as 0755 root
directories. File contents are read from the layer spools.
"""

from __future__ import annotations

import io
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from distill import paths
from distill.errors import SourceError
from distill.oci.image import Image
from distill.oci.layers import Cache, Member, layer_members
from distill.view import Node, NodeType, View

__all__ = ["ImageView", "open_image_view"]

_FETCHES = 4  # layers fetched and spooled at once
_CLEANUP_SECONDS = 2.0  # how long a failed or interrupted run lets fetches in flight clean up

_NODE_TYPES = {
    "file": NodeType.FILE,
    "dir": NodeType.DIR,
    "symlink": NodeType.SYMLINK,
    "char": NodeType.CHAR,
    "block": NodeType.BLOCK,
    "fifo": NodeType.FIFO,
}


@dataclass(frozen=True)
class _Data:
    spool: int  # index into ImageView.spools
    offset: int
    size: int


class _Slice(io.RawIOBase):
    """A seekable window onto a region of a spool file."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self.fd = fd  # the view's descriptor of the spool: pread needs no position, and eviction cannot take it away
        self.start, self.size, self.position = offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        length = min(len(buffer), self.size - self.position)
        if length <= 0:
            return 0
        data = os.pread(self.fd, length, self.start + self.position)
        memoryview(buffer)[: len(data)] = data
        self.position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class ImageView(View):
    """The merged view of an image's layers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.spools: list[Path] = []
        self.nodes: dict[str, Node] = {"/": Node("/", NodeType.DIR, 0o755)}
        self.data: dict[str, _Data] = {}
        self.children: dict[str, set[str]] = {"/": set()}
        self.warnings: list[str] = []  # what was repaired while reading the layers (clamped times)
        self._fds: list[int] = []
        weakref.finalize(self, _close_all, self._fds)

    # -- View primitives ---------------------------------------------------------------------

    def lstat(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(self.children.get(path, ()))

    def file_totals(self) -> tuple[int, int]:
        """From the merged index: every regular file has its data slice (hard links included, as a walk counts them)."""
        return sum(1 for n in self.nodes.values() if n.is_file), sum(n.size for n in self.nodes.values() if n.is_file)

    def open(self, path: str) -> BinaryIO:
        data = self.data.get(path)
        if data is None:
            raise SourceError(f"{self.name}: {path} is not a regular file")
        return io.BufferedReader(_Slice(self._fds[data.spool], data.offset, data.size))

    # -- applying layers ---------------------------------------------------------------------

    def apply(self, spool: Path, members: list[Member], where: str) -> None:
        """Apply one layer on top of what is there."""
        self._fds.append(os.open(spool, os.O_RDONLY | os.O_CLOEXEC))
        self.spools.append(spool)
        layer = len(self.spools) - 1
        # whiteouts first: at this point everything in the tree comes from lower layers
        for member in members:
            if member.type == "opaque":
                directory = self._place(member.name, where)
                below = self.nodes.get(directory)
                if below is not None and not below.is_dir:
                    raise SourceError(f"{where}: opaque whiteout in {member.name}, which is not a directory")
                for name in sorted(self.children.get(directory, ())):
                    self._remove(paths.join(directory, name))
            elif member.type == "whiteout":
                target = self._place(member.name, where)
                if target != "/":
                    self._remove(target)
        for member in members:
            if member.type not in ("opaque", "whiteout"):
                self._add(member, layer, where)

    def _place(self, name: str, where: str) -> str:
        """Where `name` lands: its parent resolved inside the image (through symlinks), then its base."""
        if name == "/":
            return "/"
        directory = paths.parent(name)
        known = self.nodes.get(directory)
        if known is not None and known.is_dir:  # keys are canonical: a directory key has no symlink above it
            return paths.join(directory, name.rsplit("/", 1)[1])
        parent = self.resolve(directory)
        if parent.error:
            raise SourceError(f"{where}: {name}: parent directory: {parent.error}")
        return paths.join(parent.path, name.rsplit("/", 1)[1])

    def _mkdirs(self, path: str) -> None:
        missing = []
        while path not in self.nodes:
            missing.append(path)
            path = paths.parent(path)
        for directory in reversed(missing):
            self._insert(Node(directory, NodeType.DIR, 0o755))

    def _insert(self, node: Node) -> None:
        self.nodes[node.path] = node
        if node.path != "/":
            self.children.setdefault(paths.parent(node.path), set()).add(node.path.rsplit("/", 1)[1])
        if node.is_dir:
            self.children.setdefault(node.path, set())

    def _remove(self, path: str) -> None:
        """Remove `path` and everything below it, with an explicit stack (a layer sets the depth)."""
        if path not in self.nodes:
            return
        self.children.get(paths.parent(path), set()).discard(path.rsplit("/", 1)[1])
        stack = [path]
        while stack:
            current = stack.pop()
            self.nodes.pop(current, None)
            self.data.pop(current, None)
            stack.extend(paths.join(current, name) for name in self.children.pop(current, ()))

    def _add(self, member: Member, layer: int, where: str) -> None:
        name = member.name
        directory = name.rpartition("/")[0] or "/"
        known = self.nodes.get(directory) if name != "/" else None
        if known is not None and known.type is NodeType.DIR:  # the common case: the parent is already there
            target = name
        else:
            target = self._place(name, where)
            if target != "/":
                self._mkdirs(paths.parent(target))
                if not self.nodes[paths.parent(target)].is_dir:
                    raise SourceError(f"{where}: {name}: its parent is not a directory")
        existing = self.nodes.get(target)
        if member.type == "hardlink":
            self._hardlink(member, target, where)
            return
        mode = 0o777 if member.type == "symlink" else member.mode  # as on any Linux filesystem
        node = Node(
            target,
            _NODE_TYPES[member.type],
            mode,
            member.uid,
            member.gid,
            member.mtime,
            member.size,
            member.linkname if member.type == "symlink" else None,
            file_id=(layer, member.offset) if member.type == "file" else None,
        )
        if existing is not None and not (existing.is_dir and node.is_dir):
            self._remove(target)
        self._insert(node)
        if member.type == "file":
            self.data[target] = _Data(layer, member.offset, member.size)

    def _hardlink(self, member: Member, target: str, where: str) -> None:
        source = self.resolve(member.linkname, follow=False)
        node = source.node
        if node is None or not node.is_file:
            raise SourceError(f"{where}: hard link {member.name} -> {member.linkname}: no such regular file in the image")
        data = self.data[source.path]
        if target in self.nodes:
            self._remove(target)
        self._insert(
            Node(
                target,
                NodeType.FILE,
                member.mode,
                member.uid,
                member.gid,
                member.mtime,
                node.size,
                file_id=node.file_id or (data.spool, data.offset),
            )
        )
        self.data[target] = data
        if node.file_id is None:  # the first link makes the original part of a hard-linked set too
            self.nodes[source.path] = Node(
                node.path, node.type, node.mode, node.uid, node.gid, node.mtime, node.size, file_id=(data.spool, data.offset)
            )


def open_image_view(image: Image, cache: Cache) -> ImageView:
    """Spool, index and merge every layer of `image`. Layers are fetched and spooled concurrently (at most
    `_FETCHES` at a time) and merged in order as they arrive; a failure is the first one in layer order,
    as a serial pass would meet it: no layer after a failed one is started, and the layers still in
    flight stop."""
    view = ImageView(image.name)
    count = len(image.layers)
    if count <= 1:
        _merge(view, image, cache, lambda number: layer_members(image, number, cache))
    else:
        stop = threading.Event()
        futures, workers = _fetch_all(image, cache, stop)
        try:
            _merge(view, image, cache, lambda number: futures[number].result())
        except BaseException:  # a failure, or SIGINT/SIGTERM: nothing more starts, and nobody waits for a stalled fetch
            stop.set()
            for future in futures:
                future.cancel()
            _let_finish(workers, _CLEANUP_SECONDS)
            raise
    for warning in image.warnings:
        if warning not in view.warnings:
            view.warnings.append(warning)
    return view


def _let_finish(workers: list[threading.Thread], seconds: float) -> None:
    """Give fetches in flight a moment to see `stop` and remove their temporary files (they do at their next
    chunk); one stalled on a silent registry is left behind, a daemon thread, so the run still ends."""
    deadline = time.monotonic() + seconds
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))


def _fetch_all(
    image: Image, cache: Cache, stop: threading.Event
) -> tuple[list[Future[tuple[Path, list[Member], list[str]]]], list[threading.Thread]]:
    """Every layer's `layer_members`, as futures, computed in layer order on `_FETCHES` daemon threads.

    Not a ThreadPoolExecutor: the interpreter joins its threads at exit, so a fetch stalled on a silent
    registry would hold an interrupted run for as long as the registry stays silent. A thread takes the
    next layer only while nothing stopped the run and no earlier layer failed: the layers after the
    first failure are never fetched."""
    count = len(image.layers)
    futures: list[Future[tuple[Path, list[Member], list[str]]]] = [Future() for _ in range(count)]
    lock = threading.Lock()
    state = {"next": 0, "failed": count}  # the next layer to take; the first layer that failed

    def work() -> None:
        while not stop.is_set():
            with lock:
                number = state["next"]
                if number >= state["failed"]:
                    return
                state["next"] += 1
            future = futures[number]
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(layer_members(image, number, cache, stop))
            except BaseException as exc:  # handed to the merging thread, which raises it in layer order
                with lock:
                    state["failed"] = min(state["failed"], number)
                future.set_exception(exc)

    workers = [threading.Thread(target=work, name=f"distill-layer-{n}", daemon=True) for n in range(min(_FETCHES, count))]
    for worker in workers:
        worker.start()
    return futures, workers


def _merge(view: ImageView, image: Image, cache: Cache, members_of: Callable[[int], tuple[Path, list[Member], list[str]]]) -> None:
    """Apply every layer in order, `members_of(number)` giving its spool, members and notes."""
    for number in range(len(image.layers)):
        where = f"{image.name}: layer {number + 1}"
        try:
            spool, members, notes = members_of(number)
            view.apply(spool, members, where)
        except FileNotFoundError:  # another run evicted the spool between our lookup and our open: once more
            spool, members, notes = layer_members(image, number, cache)
            view.apply(spool, members, where)
        if notes:
            shown = ", ".join(notes[:3]) + (f" and {len(notes) - 3} more" if len(notes) > 3 else "")
            view.warnings.append(
                f"{where}: {len(notes)} member(s) with an mtime that is not finite or outside 1970..9999, clamped: {shown}"
            )
