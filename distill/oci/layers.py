"""Layers as data: decompress and verify each once into a cached spool, then index its members.

A layer is never extracted. Its blob is streamed (the compressed digest checked as it goes),
decompressed (gzip or zstd, multi-member and multi-frame), hashed against the config's diff_id
and written to `$XDG_CACHE_HOME/distill/layers/sha256/<diff_id>.tar`; the member index (name,
type, metadata, data offset) sits beside it. Later runs reuse both.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from distill import paths
from distill.errors import SourceError
from distill.oci import media
from distill.oci.digest import VerifiedReader, hex_of
from distill.oci.image import Image

try:  # Python 3.14
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - below 3.14
    from backports import zstd

__all__ = ["Cache", "Member", "layer_members", "normalize_member_name"]

_INDEX_VERSION = 1
_CHUNK = 1 << 20


class Cache:
    """The content-addressed cache: verified blobs and layer spools with their indexes."""

    def __init__(self, root: Path | None = None) -> None:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        self.root = root or base / "distill"

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / hex_of(digest)

    def layer_path(self, diff_id: str) -> Path:
        return self.root / "layers" / "sha256" / f"{hex_of(diff_id)}.tar"

    def index_path(self, diff_id: str) -> Path:
        return self.root / "layers" / "sha256" / f"{hex_of(diff_id)}.index.json"

    @contextmanager
    def writing(self, final: Path) -> Iterator[BinaryIO]:
        """A temporary file renamed to `final` when the block succeeds, removed when it fails."""
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
            os.replace(name, final)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise


@dataclass(frozen=True)
class Member:
    """One tar member of a layer, normalised. type: file, dir, symlink, hardlink, char, block, fifo,
    whiteout (hides `name` below) or opaque (hides everything below the directory `name`)."""

    name: str
    type: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    linkname: str
    offset: int


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


def normalize_member_name(name: str, where: str) -> str:
    """`./usr/bin/x`, `usr/bin/x/` or `/usr/bin/x` -> `/usr/bin/x`; a `..` component is refused."""
    parts = paths.split(name)
    if ".." in parts:
        raise SourceError(f"{where}: member {name[:200]!r} climbs out of the root with '..'")
    return "/" + "/".join(parts)


def _decompressed(stream: BinaryIO, compression: str) -> BinaryIO:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        return zstd.ZstdFile(stream, mode="rb")  # type: ignore[no-any-return]
    return stream


def _spool(image: Image, number: int, cache: Cache) -> Path:
    diff_id = image.diff_ids[number]
    target = cache.layer_path(diff_id)
    if target.exists():
        return target
    descriptor = image.layers[number]
    where = f"{image.name}: layer {number + 1} ({descriptor.digest[:19]})"
    with image.open_blob(descriptor) as blob, cache.writing(target) as out:
        buffered = io.BufferedReader(cast(io.RawIOBase, blob), _CHUNK)
        compression = media.compression_of(descriptor.media_type) or media.sniff_compression(buffered.peek(4))
        digest = hashlib.sha256()
        try:
            reader = _decompressed(buffered, compression)
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        except SourceError:
            raise
        except (EOFError, OSError, zlib.error, zstd.ZstdError, ValueError) as exc:
            raise SourceError(f"{where}: corrupt or truncated {compression} stream ({exc})") from None
        while buffered.read(_CHUNK):  # the rest of the blob, so its digest is checked in full
            pass
        if isinstance(blob, VerifiedReader):
            blob.verify()
        if "sha256:" + digest.hexdigest() != diff_id:
            raise SourceError(f"{where}: uncompressed content does not match diff_id {diff_id}")
    return target


def _index(spool: Path, where: str) -> list[Member]:
    size = spool.stat().st_size
    members: list[Member] = []
    try:
        with tarfile.open(spool, mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
            for info in tar:
                members.append(_member(info, size, where))
    except tarfile.TarError as exc:
        raise SourceError(f"{where}: not a valid tar stream ({exc})") from None
    return members


def _member(info: tarfile.TarInfo, spool_size: int, where: str) -> Member:
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
    if kind == "file" and info.offset_data + info.size > spool_size:
        raise SourceError(f"{where}: member {info.name[:200]!r} claims {info.size} bytes past the end of the layer")
    linkname = info.linkname
    if kind == "hardlink":
        linkname = normalize_member_name(linkname, where)
    return Member(name, kind, info.mode & 0o7777, info.uid, info.gid, int(info.mtime),
                  info.size if kind == "file" else 0, linkname, info.offset_data)


def layer_members(image: Image, number: int, cache: Cache) -> tuple[Path, list[Member]]:
    """The spool file and member index of layer `number`, from the cache when present."""
    diff_id = image.diff_ids[number]
    spool = _spool(image, number, cache)
    index_file = cache.index_path(diff_id)
    where = f"{image.name}: layer {number + 1} ({diff_id[:19]})"
    if index_file.exists():
        try:
            data = json.loads(index_file.read_text())
            if data.get("version") == _INDEX_VERSION:
                return spool, [Member(*row) for row in data["members"]]
        except (ValueError, KeyError, TypeError, RecursionError):
            pass  # a damaged index is rebuilt from the verified spool
    members = _index(spool, where)
    with cache.writing(index_file) as out:
        rows = [[m.name, m.type, m.mode, m.uid, m.gid, m.mtime, m.size, m.linkname, m.offset] for m in members]
        out.write(json.dumps({"version": _INDEX_VERSION, "members": rows}, separators=(",", ":")).encode())
    return spool, members
