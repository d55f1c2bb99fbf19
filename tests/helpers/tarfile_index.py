"""The layer index as distill built it with the standard library's `tarfile` before
distill/oci/tarindex.py (its `_index` and `_member`; numbers in its messages now bounded as distill's are,
with `shown`): the oracle that the struct-based
reader is compared with in tests/e2e/test_tarindex.py. Kept only here."""

from __future__ import annotations

import io
import math
import re
import tarfile
from pathlib import Path

from distill import paths
from distill.errors import SourceError
from distill.oci.documents import MAX_TIME
from distill.oci.tarindex import MAX_ID, Member, _Invalid, _records, normalize_member_name, shown

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
            raise SourceError(
                f"{where}: member {info.name[:200]!r} has {field} {shown(owner) if isinstance(owner, int) else repr(owner)}, outside 0..{MAX_ID}"
            )
    if kind == "file" and (info.size < 0 or info.offset_data + info.size > spool_size):
        raise SourceError(f"{where}: member {info.name[:200]!r} claims {shown(info.size)} bytes past the end of the layer")
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


# -- which tarfile the oracle is ----------------------------------------------------------------------


def _frames_pax_records() -> bool:
    """Whether this Python's tarfile frames pax records by their length (the fix of CVE-2024-6232,
    gh-121285: CPython 3.12.6, 3.11.10, Debian's 3.11.2-6+deb12u4 and later): a record `5 path=abcdef\\n`
    is then an invalid header (a ReadError at offset 0); unpatched, it reads as an empty path."""
    payload = b"5 path=abcdef\n"
    pax = tarfile.TarInfo("x")
    pax.type, pax.size = tarfile.XHDTYPE, len(payload)
    member = tarfile.TarInfo("f")
    layer = pax.tobuf(tarfile.USTAR_FORMAT) + payload.ljust(512, b"\0") + member.tobuf(tarfile.USTAR_FORMAT) + bytes(1024)
    try:
        with tarfile.open(fileobj=io.BytesIO(layer), mode="r:") as tar:
            tar.getmembers()
    except tarfile.ReadError:
        return True
    return False


FRAMES_PAX_RECORDS = _frames_pax_records()
_UNPATCHED_RECORD = re.compile(rb"([0-9]+) ([^=]+)=")  # what unpatched tarfile matched at each record
_UNPATCHED_CHARSET = re.compile(rb"[0-9]+ hdrcharset=([^\n]+)\n")  # and searched the whole payload for


def _unpatched_records(payload: bytes) -> dict[str, str] | str:
    """The records of a pax payload as unpatched tarfile (CPython 3.11.7) reads them, or how it fails ("invalid
    header", which ends the archive past offset 0, or another error, which refuses the layer):
    a record's keyword runs to the next "=" wherever it is, the reading stops silently at the first
    record that does not match, a hdrcharset anywhere must be UTF-8, a length may be short. Only the
    records distill reads are kept (as `tarindex._records` keeps them). Quadratic: for small tests only."""
    charset = _UNPATCHED_CHARSET.search(payload)
    records: dict[str, str] = {}
    pos = 0
    try:
        if charset is not None:
            charset[1].decode("utf-8")
        while (match := _UNPATCHED_RECORD.match(payload, pos)) is not None:
            length = int(match[1])
            if length == 0:
                return "invalid header"
            keyword, value = match[2], payload[match.end(2) + 1 : pos + length - 1]
            if keyword in (b"path", b"linkpath", b"size", b"uid", b"gid", b"mtime", b"GNU.sparse.name"):
                records[keyword.decode()] = value.decode("utf-8", "surrogateescape")
            elif keyword.startswith(b"GNU.sparse."):
                records["GNU.sparse."] = ""
            pos += length
    except (ValueError, OverflowError) as exc:  # raised through tarfile: the oracle refuses the layer
        return type(exc).__name__
    return records


def unpatched_misreads(layer: bytes) -> bool:
    """Whether an unpatched tarfile reads a pax header of `layer` (any block at a multiple of 512 that is a
    valid `x`, `X` or `g` header) otherwise than the patched one: then it is no oracle for this layer."""
    for at in range(0, len(layer) - 511, 512):
        try:
            info = tarfile.TarInfo.frombuf(layer[at : at + 512], "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            continue
        if info.type not in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE) or info.size < 0:
            continue
        payload = layer[at + 512 : at + 512 + -(-info.size // 512) * 512]
        try:
            patched: dict[str, str] | str = _records(payload)
        except _Invalid:
            patched = "invalid header"
        if patched != _unpatched_records(payload):
            return True
    return False


def tarfile_stop(spool: Path) -> int:
    """Where tarfile stops reading a layer it accepts: the offset of the end-of-archive marker, of the end of
    the layer, or of the first block past the first member that is not a header (it ends the archive there,
    silently, where distill refuses the layer)."""
    with tarfile.open(spool, mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
        for _info in tar:
            pass
        return tar.offset
