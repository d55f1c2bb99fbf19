"""A merged image view kept between runs: one file per chain of layers, named by their verified diff_ids.

A warm run reads it instead of every layer's index and the merge. Only the paths are read into a dict
up front; a row is unpacked (fixed width, `struct`) when a reader asks for its path, so the cost follows
what the planner touches, not the image's member count. The file is derived data, like a layer's
index: its body's sha256 is in its header, and a file that is damaged, of another chain or of another
format is not used (the view is merged again and the file rewritten).

Layout: a magic line; a JSON line (the chain's diff_ids, what names the merge's code, the body's digest, the row count, the byte
lengths of the names and targets, the view's file totals and warnings); the body: every path joined by
NUL (no member name holds one), every symlink target concatenated, then one `_ROW` per path.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Iterator

__all__ = ["Row", "PackedRows", "pack", "unpack"]

# One object of a merged tree at its canonical path: (path, type, mode, uid, gid, mtime, size, symlink
# target or "", layer (index into the view's spools, -1 for none), data offset in that layer's spool)
Row = tuple[str, str, int, int, int, int, int, str, int, int]

_MAGIC = b"distill-merged-view 1\n"
_ROW = struct.Struct("<BIIIqqiqII")  # type, mode, uid, gid, mtime, size, layer, offset, target start, target length
_KINDS = ("file", "dir", "symlink", "char", "block", "fifo")
_CODES = {kind: code for code, kind in enumerate(_KINDS)}


class PackedRows:
    """The rows of a kept view: every path known, each row unpacked when asked for."""

    def __init__(self, names: list[str], targets: str, table: memoryview, totals: tuple[int, int], warnings: list[str]) -> None:
        self.index = dict(zip(names, range(len(names)), strict=True))
        self.targets, self.table = targets, table
        self.totals, self.warnings = totals, warnings

    def get(self, path: str) -> Row | None:
        number = self.index.get(path)
        if number is None:
            return None
        code, mode, uid, gid, mtime, size, layer, offset, start, length = _ROW.unpack_from(self.table, number * _ROW.size)
        return (path, _KINDS[code], mode, uid, gid, mtime, size, self.targets[start : start + length], layer, offset)

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)


def pack(rows: Iterable[Row], diff_ids: list[str], merger: str, totals: tuple[int, int], warnings: list[str]) -> bytes:
    """The file for a view merged from the layers `diff_ids` by `merger` (what names the merge's code), ValueError
    or struct.error when a row does not fit."""
    names, targets, table = [], [], bytearray()
    position = 0
    for path, kind, mode, uid, gid, mtime, size, target, layer, offset in rows:
        if "\0" in path:
            raise ValueError(f"a NUL byte in {path!r}")
        names.append(path)
        targets.append(target)
        table += _ROW.pack(_CODES[kind], mode, uid, gid, mtime, size, layer, offset, position, len(target))
        position += len(target)
    name_bytes = "\0".join(names).encode("utf-8", "surrogateescape")
    target_bytes = "".join(targets).encode("utf-8", "surrogateescape")
    body = name_bytes + target_bytes + table
    header = {
        "diff_ids": diff_ids,
        "merger": merger,
        "digest": hashlib.sha256(body).hexdigest(),
        "count": len(names),
        "names": len(name_bytes),
        "targets": len(target_bytes),
        "totals": list(totals),
        "warnings": warnings,
    }
    return _MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def unpack(data: bytes, diff_ids: list[str], merger: str) -> PackedRows | None:
    """The rows `data` holds when it is an intact file of this format for the layers `diff_ids` merged by `merger`,
    else None."""
    if not data.startswith(_MAGIC):
        return None
    end = data.find(b"\n", len(_MAGIC))
    try:
        header = json.loads(data[len(_MAGIC) : end])
        body = memoryview(data)[end + 1 :]
        if end < 0 or (header["diff_ids"], header["merger"]) != (diff_ids, merger):
            return None
        if hashlib.sha256(body).hexdigest() != header["digest"]:
            return None
        count, name_length, target_length = int(header["count"]), int(header["names"]), int(header["targets"])
        if name_length + target_length + count * _ROW.size != len(body):
            return None
        names = bytes(body[:name_length]).decode("utf-8", "surrogateescape").split("\0")
        if len(names) != count:
            return None
        targets = bytes(body[name_length : name_length + target_length]).decode("utf-8", "surrogateescape")
        files, size = header["totals"]
        warnings = [str(warning) for warning in header["warnings"]]
        return PackedRows(names, targets, body[name_length + target_length :], (int(files), int(size)), warnings)
    except (ValueError, KeyError, TypeError, RecursionError):  # a damaged header (a damaged body fails its digest)
        return None
