"""The merged filesystem of an image's layers, as a read-only View, without extracting anything.

Layers apply bottom to top as the OCI spec and containerd do: within a layer, whiteouts first
(`.wh.NAME` hides NAME and what is below it; `.wh..wh..opq` hides everything a lower layer put in
its directory), then the entries, last writer wins; a directory over a directory only changes
its attributes, anything else replaces the subtree. A member whose parent is a symlink lands where
the link points (resolved inside the image, never outside). Missing parents appear as 0755 root
directories. File contents are read from the layer spools.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from distill import paths
from distill.errors import SourceError
from distill.oci.digest import source_digest
from distill.oci.image import Image
from distill.oci.layers import Cache, Member, layer_members, layer_spool
from distill.oci.packed import PackedRows, Row, pack, unpack
from distill.view import Node, NodeType, View

__all__ = ["ImageView", "open_image_view"]

_T = TypeVar("_T")
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


# The merged tree is one `Row` (a tuple) per object; its Node is made when a reader asks for it (`lstat`),
# so the merge costs a tuple per member, not a dataclass.
_ROOT: Row = ("/", "dir", 0o755, 0, 0, 0, 0, "", -1, 0)


class ImageView(View):
    """The merged view of an image's layers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.spools: list[Path] = []
        self.diff_ids: list[str | None] = []  # each spool's verified diff_id (None: not known to be verified)
        self.rows: dict[str, Row] = {"/": _ROOT}
        self._packed: PackedRows | None = None  # the rows of a view kept by an earlier run (`open_image_view`)
        self._nodes: dict[str, Node] = {}  # the Nodes made so far
        self._children: dict[str, set[str]] | None = None  # made when first needed (see `_kids`)
        self.warnings: list[str] = []  # what was repaired while reading the layers (clamped times)
        self._fds: list[int] = []
        weakref.finalize(self, _close_all, self._fds)

    # -- View primitives ---------------------------------------------------------------------

    def _row(self, path: str) -> Row | None:
        row = self.rows.get(path)
        if row is None and self._packed is not None:
            row = self._packed.get(path)
            if row is not None:
                self.rows[path] = row
        return row

    def lstat(self, path: str) -> Node | None:
        node = self._nodes.get(path)
        if node is None:
            row = self._row(path)
            if row is None:
                return None
            _, kind, mode, uid, gid, mtime, size, target, layer, offset = row
            node = self._nodes[path] = Node(
                path,
                _NODE_TYPES[kind],
                mode,
                uid,
                gid,
                mtime,
                size,
                target if kind == "symlink" else None,
                file_id=(layer, offset) if kind == "file" else None,
            )
        return node

    def listdir(self, path: str) -> list[str]:
        return sorted(self._kids().get(path, ()))

    def file_totals(self) -> tuple[int, int]:
        """From the merged index: every regular file has its data slice (hard links included, as a walk counts them)."""
        if self._packed is not None:
            return self._packed.totals
        files = size = 0
        for row in self.rows.values():
            if row[1] == "file":
                files += 1
                size += row[6]
        return files, size

    def open(self, path: str) -> BinaryIO:
        row = self._row(path)
        if row is None or row[1] != "file":
            raise SourceError(f"{self.name}: {path} is not a regular file")
        return io.BufferedReader(_Slice(self._fds[row[8]], row[9], row[6]))

    def content_key(self, path: str) -> str | None:
        """What names the bytes of the regular file `path` whatever the run: its layer's verified diff_id, offset
        and size (None when the layer was not read from a verified spool). A cache key for what is made of them."""
        row = self._row(path)
        if row is None or row[1] != "file":
            return None
        diff_id = self.diff_ids[row[8]]
        return None if diff_id is None else f"{diff_id}:{row[9]}:{row[6]}"

    # -- applying layers ---------------------------------------------------------------------

    def add_spool(self, spool: Path, diff_id: str | None) -> int:
        """Open the spool of the next layer (`diff_id`: what it was verified to hash to); its number."""
        self._fds.append(os.open(spool, os.O_RDONLY | os.O_CLOEXEC))
        self.spools.append(spool)
        self.diff_ids.append(diff_id)
        return len(self.spools) - 1

    def use_packed(self, packed: PackedRows) -> None:
        """Take the rows (and the notes) of a view kept by an earlier run over the same spools."""
        assert self.rows == {"/": _ROOT} and self._packed is None, "a kept view replaces a merge, it does not join one"
        self.rows, self._packed, self.warnings = {}, packed, list(packed.warnings)  # the root too comes from the kept rows

    def apply(self, spool: Path, members: list[Member], where: str, diff_id: str | None = None) -> None:
        """Apply one layer on top of what is there (`diff_id`: what the spool was verified to hash to)."""
        assert self._packed is None, "a kept view is not merged further"
        layer = self.add_spool(spool, diff_id)
        # whiteouts first: at this point everything in the tree comes from lower layers
        for member in members:
            if member.type == "opaque":
                directory = self._place(member.name, where)
                below = self.rows.get(directory)
                if below is not None and below[1] != "dir":
                    raise SourceError(f"{where}: opaque whiteout in {member.name}, which is not a directory")
                for name in sorted(self._kids().get(directory, ())):
                    self._remove(paths.join(directory, name))
            elif member.type == "whiteout":
                target = self._place(member.name, where)
                if target != "/":
                    self._remove(target)
        for member in members:
            if member.type not in ("opaque", "whiteout"):
                self._add(member, layer, where)

    def _kids(self) -> dict[str, set[str]]:
        """Each directory's names, made in one pass when first asked for (a first layer without whiteouts or
        replaced directories never needs them while it is merged), then kept up to date."""
        if self._children is None:
            children: dict[str, set[str]] = {}
            for path in self._packed if self._packed is not None else self.rows:
                if path != "/":
                    directory, _, base = path.rpartition("/")
                    children.setdefault(directory or "/", set()).add(base)
            self._children = children
        return self._children

    def _place(self, name: str, where: str) -> str:
        """Where `name` lands: its parent resolved inside the image (through symlinks), then its base."""
        if name == "/":
            return "/"
        directory = paths.parent(name)
        known = self.rows.get(directory)
        if known is not None and known[1] == "dir":  # keys are canonical: a directory key has no symlink above it
            return paths.join(directory, name.rsplit("/", 1)[1])
        parent = self.resolve(directory)
        if parent.error:
            raise SourceError(f"{where}: {name}: parent directory: {parent.error}")
        return paths.join(parent.path, name.rsplit("/", 1)[1])

    def _mkdirs(self, path: str) -> None:
        missing = []
        while path not in self.rows:
            missing.append(path)
            path = paths.parent(path)
        for directory in reversed(missing):
            self._insert((directory, "dir", 0o755, 0, 0, 0, 0, "", -1, 0))

    def _insert(self, row: Row) -> None:
        path = row[0]
        self.rows[path] = row
        self._nodes.pop(path, None)
        children = self._children
        if children is not None and path != "/":
            directory, _, base = path.rpartition("/")
            children.setdefault(directory or "/", set()).add(base)

    def _remove(self, path: str) -> None:
        """Remove `path` and everything below it, with an explicit stack (a layer sets the depth)."""
        row = self.rows.get(path)
        if row is None:
            return
        children = self._kids() if row[1] == "dir" else self._children
        if children is not None:
            directory, _, base = path.rpartition("/")
            children.get(directory or "/", set()).discard(base)
        stack = [path]
        while stack:
            current = stack.pop()
            self.rows.pop(current, None)
            self._nodes.pop(current, None)
            if children is not None:
                stack.extend(paths.join(current, name) for name in children.pop(current, ()))

    def _add(self, member: Member, layer: int, where: str) -> None:
        name = member.name
        directory = name.rpartition("/")[0] or "/"
        known = self.rows.get(directory) if name != "/" else None
        if known is not None and known[1] == "dir":  # the common case: the parent is already there
            target = name
        else:
            target = self._place(name, where)
            if target != "/":
                self._mkdirs(paths.parent(target))
                if self.rows[paths.parent(target)][1] != "dir":
                    raise SourceError(f"{where}: {name}: its parent is not a directory")
        kind = member.type
        if kind == "hardlink":
            self._hardlink(member, target, where)
            return
        existing = self.rows.get(target)
        if existing is not None and not (existing[1] == "dir" and kind == "dir"):
            self._remove(target)
        if kind == "symlink":  # mode 0777, as on any Linux filesystem
            row = (target, kind, 0o777, member.uid, member.gid, member.mtime, member.size, member.linkname, layer, 0)
        elif kind == "file":
            row = (target, kind, member.mode, member.uid, member.gid, member.mtime, member.size, "", layer, member.offset)
        else:
            row = (target, kind, member.mode, member.uid, member.gid, member.mtime, member.size, "", -1, 0)
        self._insert(row)

    def _hardlink(self, member: Member, target: str, where: str) -> None:
        """A hard link is another name of a file: its own metadata, the original's data (and so its file_id)."""
        source = self.resolve(member.linkname, follow=False)
        original = self.rows.get(source.path) if source.node is not None else None
        if original is None or original[1] != "file":
            raise SourceError(f"{where}: hard link {member.name} -> {member.linkname}: no such regular file in the image")
        if target in self.rows:
            self._remove(target)
        _, _, _, _, _, _, size, _, layer, offset = original
        self._insert((target, "file", member.mode, member.uid, member.gid, member.mtime, size, "", layer, offset))


def open_image_view(image: Image, cache: Cache) -> ImageView:
    """Spool, index and merge every layer of `image`. Layers are fetched and spooled concurrently (at most
    `_FETCHES` at a time) and merged in order as they arrive; a failure is the first one in layer order,
    as a serial pass would meet it: no layer after a failed one is started, and the layers still in
    flight stop."""
    view = _kept_view(image, cache)
    if view is None:
        view = _merged_view(image, cache)
        _keep_view(view, image, cache)
    for warning in image.warnings:
        if warning not in view.warnings:
            view.warnings.append(warning)
    return view


def _kept_view(image: Image, cache: Cache) -> ImageView | None:
    """The view an earlier run merged from the same verified layers, over their spools (each checked as a
    merge would check it: its origin record, the image still holding its blob); None when it is not kept,
    is damaged, or a spool must be fetched again (then the layers are fetched concurrently and merged)."""
    if not image.layers:  # nothing to merge (nor `diff_ids` to read: a merge reads them per layer)
        return None
    diff_ids = image.diff_ids
    if not all(cache.layer_path(diff_id).exists() for diff_id in diff_ids):
        return None
    path, merger = cache.merged_path(diff_ids), _merger()
    try:
        packed = unpack(path.read_bytes(), diff_ids, merger) if merger is not None else None
    except OSError:
        return None
    if packed is None:
        return None
    view = ImageView(image.name)
    try:
        for number, spool in enumerate(_in_order(image, lambda number, stop: layer_spool(image, number, cache))):
            view.add_spool(spool, diff_ids[number])
    except FileNotFoundError:  # evicted by another run just now: merged again, from fetched layers
        return None
    view.use_packed(packed)
    cache.use(path)
    return view


@functools.cache
def _merger() -> str | None:
    """What names the merge's code: this module's source (a kept view is the result of this code)."""
    return source_digest(__file__)


def _in_order(image: Image, fetch: Callable[[int, threading.Event], _T]) -> list[_T]:
    """`fetch(number, stop)` of every layer, concurrently as in a merge (a registry answers each layer's
    `HEAD` on its own), the first failure in layer order raised."""
    if len(image.layers) <= 1:
        return [fetch(number, threading.Event()) for number in range(len(image.layers))]
    stop = threading.Event()
    futures, workers = _fetch_all(image, stop, fetch)
    try:
        return [future.result() for future in futures]
    except BaseException:
        _abandon(stop, futures, workers)
        raise


def _keep_view(view: ImageView, image: Image, cache: Cache) -> None:
    """Keep the merged view for the next run over the same layers. Best effort, like the output gzip: a full
    or read-only cache, or a row that does not fit the format, costs the next run a merge, no more."""
    merger = _merger()
    if not image.layers or merger is None:
        return
    try:
        data = pack(view.rows.values(), image.diff_ids, merger, view.file_totals(), view.warnings)
        with cache.writing(cache.merged_path(image.diff_ids)) as out:
            out.write(data)
    except (OSError, ValueError, struct.error):
        return


def _merged_view(image: Image, cache: Cache) -> ImageView:
    """Every layer spooled, indexed and merged (see `open_image_view`)."""
    view = ImageView(image.name)
    count = len(image.layers)
    if count <= 1:
        _merge(view, image, cache, lambda number: layer_members(image, number, cache))
    else:
        stop = threading.Event()
        futures, workers = _fetch_all(image, stop, lambda number, stop: layer_members(image, number, cache, stop))
        try:
            _merge(view, image, cache, lambda number: futures[number].result())
        except BaseException:
            _abandon(stop, futures, workers)
            raise
    return view


def _abandon(stop: threading.Event, futures: Sequence[Future[Any]], workers: list[threading.Thread]) -> None:
    """After a failure, or SIGINT/SIGTERM: nothing more starts, and nobody waits for a stalled fetch."""
    stop.set()
    for future in futures:
        future.cancel()
    _let_finish(workers, _CLEANUP_SECONDS)


def _let_finish(workers: list[threading.Thread], seconds: float) -> None:
    """Give fetches in flight a moment to see `stop` and remove their temporary files (they do at their next
    chunk); one stalled on a silent registry is left behind, a daemon thread, so the run still ends."""
    deadline = time.monotonic() + seconds
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))


def _fetch_all(
    image: Image, stop: threading.Event, fetch: Callable[[int, threading.Event], _T]
) -> tuple[list[Future[_T]], list[threading.Thread]]:
    """Every layer's `fetch(number, stop)` (its `layer_members`, or its checked spool), as futures, computed in
    layer order on `_FETCHES` daemon threads.

    Not a ThreadPoolExecutor: the interpreter joins its threads at exit, so a fetch stalled on a silent
    registry would hold an interrupted run for as long as the registry stays silent. A thread takes the
    next layer only while nothing stopped the run and no earlier layer failed: the layers after the
    first failure are never fetched."""
    count = len(image.layers)
    futures: list[Future[_T]] = [Future() for _ in range(count)]
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
                future.set_result(fetch(number, stop))
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
            view.apply(spool, members, where, image.diff_ids[number])
        except FileNotFoundError:  # another run evicted the spool between our lookup and our open: once more
            spool, members, notes = layer_members(image, number, cache)
            view.apply(spool, members, where, image.diff_ids[number])
        if notes:
            shown = ", ".join(notes[:3]) + (f" and {len(notes) - 3} more" if len(notes) > 3 else "")
            view.warnings.append(
                f"{where}: {len(notes)} member(s) with an mtime that is not finite or outside 1970..9999, clamped: {shown}"
            )
