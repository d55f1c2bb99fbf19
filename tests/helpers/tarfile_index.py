"""The layer index as distill built it with the standard library's `tarfile` before
distill/oci/tarindex.py (its `_index` and `_member`, unchanged): the oracle that the struct-based
reader is compared with in tests/e2e/test_tarindex.py. Kept only here."""

from __future__ import annotations

import math
import tarfile
from pathlib import Path

from distill import paths
from distill.errors import SourceError
from distill.oci.documents import MAX_TIME
from distill.oci.tarindex import MAX_ID, Member, normalize_member_name

_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def tarfile_index(spool: Path, where: str) -> tuple[list[Member], list[str]]:
    """Members of a spool, each checked once, and notes on what was clamped."""
    size = spool.stat().st_size
    members: list[Member] = []
    notes: list[str] = []
    try:
        with tarfile.open(spool, mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
            for info in tar:
                members.append(_member(info, size, where, notes))
    except tarfile.TarError as exc:
        raise SourceError(f"{where}: not a valid tar stream ({exc})") from None
    except (EOFError, ValueError, OverflowError, UnicodeError) as exc:
        raise SourceError(f"{where}: not a valid tar stream ({type(exc).__name__}: {str(exc)[:80]})") from None
    return members, notes


def _member(info: tarfile.TarInfo, spool_size: int, where: str, notes: list[str]) -> Member:
    """One member, its metadata checked: names without NUL or `..`, owners in 0..2^32-2, sizes inside the
    layer; an mtime that is not finite or outside 1970..9999 is clamped (and noted)."""
    for field, text in (("name", info.name), ("link target", info.linkname)):
        if "\0" in text:
            raise SourceError(f"{where}: member {text[:200]!r} has a NUL byte in its {field}")
    name = normalize_member_name(info.name, where)
    base = name.rsplit("/", 1)[1]
    kind = _TYPES.get(info.type)
    if base == ".wh..wh..opq":
        kind, name = "opaque", paths.parent(name)
    elif base.startswith(".wh."):
        hidden = base[4:]
        if hidden in ("", ".", ".."):
            raise SourceError(f"{where}: whiteout {info.name[:200]!r} names no entry")
        kind, name = "whiteout", paths.join(paths.parent(name), hidden)
    if kind is None:
        raise SourceError(f"{where}: member {info.name[:200]!r} has an unsupported type {info.type!r}")
    if name == "/" and kind not in {"dir", "opaque"}:
        raise SourceError(f"{where}: member {info.name[:200]!r} names the root but is a {kind}, not a directory")
    for field, owner in (("uid", info.uid), ("gid", info.gid)):
        if not isinstance(owner, int) or not 0 <= owner <= MAX_ID:
            raise SourceError(f"{where}: member {info.name[:200]!r} has {field} {owner!r}, outside 0..{MAX_ID}")
    if kind == "file" and (info.size < 0 or info.offset_data + info.size > spool_size):
        raise SourceError(f"{where}: member {info.name[:200]!r} claims {info.size} bytes past the end of the layer")
    mtime = info.mtime
    if not isinstance(mtime, (int, float)) or not math.isfinite(mtime) or not 0 <= mtime <= MAX_TIME:
        clamped = 0 if not isinstance(mtime, (int, float)) or not math.isfinite(mtime) or mtime < 0 else MAX_TIME
        notes.append(f"{name} (mtime {mtime!r} -> {clamped})")
        mtime = clamped
    linkname = info.linkname
    if kind == "hardlink":
        linkname = normalize_member_name(linkname, where)
    return Member(
        name, kind, info.mode & 0o7777, info.uid, info.gid, int(mtime), info.size if kind == "file" else 0, linkname, info.offset_data
    )
