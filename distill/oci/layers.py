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
import queue
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, cast

from distill.errors import SourceError, UsageError
from distill.oci import media, tarindex
from distill.oci.digest import VerifiedReader, hex_of, valid_digest
from distill.oci.image import Descriptor, Image
from distill.oci.tarindex import Member, normalize_member_name

try:  # Python 3.14
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - below 3.14
    from backports import zstd


def _gzip_reader() -> tuple[Callable[[BinaryIO], BinaryIO], tuple[type[BaseException], ...]]:
    """ISA-L's gzip reader where installed (it decompresses layers about twice as fast as zlib, see
    docs/performance.md; what distill writes is unaffected), else the standard library's; and the errors it raises."""
    try:
        from isal import igzip, isal_zlib
    except ImportError:  # pragma: no cover - where no isal wheel exists (pyproject installs it on x86_64 and aarch64)
        return (lambda stream: cast(BinaryIO, gzip.GzipFile(fileobj=stream, mode="rb"))), (zlib.error,)
    error = cast(type[BaseException], isal_zlib.error)
    return (lambda stream: cast(BinaryIO, igzip.IGzipFile(fileobj=stream, mode="rb"))), (zlib.error, error)  # type: ignore[no-untyped-call]


_OPEN_GZIP, _GZIP_ERRORS = _gzip_reader()

__all__ = ["Cache", "Member", "layer_members", "layer_spool", "normalize_member_name", "parse_size"]

_INDEX_VERSION = 4  # 4: pax records framed by their length (CVE-2024-6232), a non-header before the end refused:
# a version 3 index may hold the rows of a layer misread or cut short there
# 3: the struct reader refuses pax sparse files, which a version 2 index holds misread
_CHUNK = 1 << 20
_DEPTH = 8  # chunks (of _CHUNK bytes) the spool writer may lag behind the decompressor
DEFAULT_CACHE_MAX = 5 << 30
DEFAULT_LAYER_MAX = 8 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, name: str) -> int:
    """`5G`, `500M`, `1024`: bytes (binary units); a malformed value is a usage error naming `name`."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit():
        raise UsageError(f"{name}={text!r}: write a size such as 5G, 500M or 1048576")
    return int(number) * _UNITS[unit]


class Cache:
    """The content-addressed cache: verified blobs, layer spools with their indexes, and which blob
    decompressed to which spool. Bounded by `DISTILL_CACHE_MAX`: what was used least recently goes first."""

    def __init__(self, root: Path | None = None, *, limit: int | None = None, layer_limit: int | None = None) -> None:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        self.root = root or base / "distill"
        env_max, env_layer = os.environ.get("DISTILL_CACHE_MAX"), os.environ.get("DISTILL_LAYER_MAX")
        self.limit = limit if limit is not None else parse_size(env_max, "DISTILL_CACHE_MAX") if env_max else DEFAULT_CACHE_MAX
        self.layer_limit = (
            layer_limit if layer_limit is not None else parse_size(env_layer, "DISTILL_LAYER_MAX") if env_layer else DEFAULT_LAYER_MAX
        )
        self.in_use: set[Path] = set()  # never evicted by this run

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / hex_of(digest)

    def layer_path(self, diff_id: str) -> Path:
        return self.root / "layers" / "sha256" / f"{hex_of(diff_id)}.tar"

    def index_path(self, diff_id: str) -> Path:
        return self.root / "layers" / "sha256" / f"{hex_of(diff_id)}.index.json"

    def merged_path(self, diff_ids: list[str]) -> Path:
        """The merged view of the layers `diff_ids` (distill.oci.packed), beside the top layer's spool: evicted with it.
        Named by the chain and the index version too: what a new indexer reads is merged again."""
        chain = hashlib.sha256("\n".join([f"index {_INDEX_VERSION}", *diff_ids]).encode()).hexdigest()
        return self.root / "layers" / "sha256" / f"{hex_of(diff_ids[-1])}.merged-{chain[:32]}"

    def gzip_record_path(self, diff_id: str, key: str) -> Path:
        """Records which blob distill's own gzip (`key`: tarstream.gzip_key) made of the layer `diff_id`
        (the file's content: that blob's digest, the blob itself in the blob store)."""
        return self.root / "layers" / "gzip" / key / hex_of(diff_id)

    def tar_gzip_record_path(self, tar_key: str, key: str) -> Path:
        """Records which blob distill's own gzip (`key`) made of the tar `tar_key` names (see tarstream.tar_key),
        so a warm run need not write the tar to find it (the file's content: that blob's digest and the tar's diff_id)."""
        return self.root / "layers" / "gzip-of-tar" / key / tar_key

    def origin_path(self, blob_digest: str) -> Path:
        """Records that the blob `blob_digest` was verified and decompressed to a diff_id (the file's content)."""
        return self.root / "layers" / "from-blob" / hex_of(blob_digest)

    def use(self, path: Path) -> Path:
        """Mark `path` as used now (the LRU clock) and protect it for the rest of the run."""
        self.in_use.add(path)
        with suppress(OSError):
            os.utime(path)
        return path

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
        self.use(final)

    def entries(self) -> list[tuple[float, int, list[Path]]]:
        """(last use, bytes, files) of every evictable unit: a blob, or a spool with its index."""
        units: dict[Path, list[Path]] = {}
        for directory in (self.root / "blobs" / "sha256", self.root / "layers" / "sha256"):
            with suppress(OSError):
                for path in directory.iterdir():
                    if not path.name.startswith("."):
                        units.setdefault(path.with_name(path.name.split(".", 1)[0]), []).append(path)
        result = []
        for files in units.values():
            try:
                stats = [(f, f.lstat()) for f in files]
            except OSError:  # another run removed it just now
                continue
            used = max((st.st_mtime for f, st in stats if not f.name.endswith(".index.json")), default=0.0)
            result.append((used, sum(st.st_size for _, st in stats), files))
        return sorted(result, key=lambda unit: unit[0])

    def trim(self, limit: int | None = None) -> tuple[int, int]:
        """Evict least recently used units (never those this run uses) until the cache fits `limit`;
        (units removed, bytes freed). Stale temporary files of killed runs go too."""
        limit = self.limit if limit is None else limit
        self._remove_stale()
        units = self.entries()
        total = sum(size for _, size, _ in units)
        removed = freed = 0
        for _, size, files in units:
            if total <= limit:
                break
            if any(f in self.in_use for f in files):
                continue
            for path in files:
                path.unlink(missing_ok=True)
            total -= size
            removed, freed = removed + 1, freed + size
        origins = self.root / "layers" / "from-blob"
        if removed and origins.is_dir():  # records of spools that are gone
            for record in origins.iterdir():
                diff_id = _recorded(record)
                if diff_id is None or not self.layer_path(diff_id).exists():
                    record.unlink(missing_ok=True)
        if removed:  # records of compressed layers whose blob is gone
            for kind in ("gzip", "gzip-of-tar"):
                for record in (self.root / "layers" / kind).glob("*/[!.]*"):
                    digest = _recorded(record, first=True)
                    if digest is None or not self.blob_path(digest).exists():
                        record.unlink(missing_ok=True)
        return removed, freed

    def _remove_stale(self, age: float = 3600.0) -> None:
        now = time.time()
        records = [self.root / "layers" / "from-blob", *(self.root / "layers").glob("gzip*/*")]
        for directory in (self.root / "blobs" / "sha256", self.root / "layers" / "sha256", *records):
            if directory.is_dir():
                for path in directory.glob(".*"):
                    try:
                        if now - path.lstat().st_mtime > age:
                            path.unlink()
                    except OSError:
                        pass


def _decompressed(stream: BinaryIO, compression: str) -> BinaryIO:
    if compression == "gzip":
        return _OPEN_GZIP(stream)
    if compression == "zstd":
        return zstd.ZstdFile(stream, mode="rb")  # type: ignore[no-any-return]
    return stream


class _Feed:
    """The hand-off from the thread that decompresses a layer to the one that hashes and spools it: a
    bounded queue of chunks (None ends it), so memory stays bounded whatever the layer's size."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue(_DEPTH)

    def chunks(self) -> Iterator[bytes]:
        while (chunk := self.queue.get()) is not None:
            yield chunk


@contextmanager
def _in_cache(cache: Cache, final: Path, where: str) -> Iterator[BinaryIO]:
    """`cache.writing`, with a full or read-only cache said as such: reading an image needs room there for
    its layers, so that is a source error (exit 3) naming the path, not an internal one."""
    try:
        with cache.writing(final) as out:
            yield out
    except OSError as exc:
        raise SourceError(
            f"{where}: cannot write {exc.filename or final} in the cache: {exc.strerror or exc}; "
            "free space there, or point XDG_CACHE_HOME at a disk with room for the image's layers"
        ) from None


def layer_spool(image: Image, number: int, cache: Cache, stop: threading.Event | None = None) -> Path:
    """The verified spool of layer `number`. The cache is keyed by the compressed blob's digest as well as
    the diff_id: a spool is reused only for a blob that was verified to decompress to it, and only while
    the image still holds that blob.

    One pass, on two threads (zlib, ISA-L, zstd, hashlib and file writes release the GIL): this one reads
    the blob (its digest checked as it streams, a registry blob while it downloads) and decompresses it,
    another hashes the result against the diff_id and writes the spool. Nothing is kept unless both
    digests match; errors are reported in the order a serial pass meets them (the stream and the blob's
    digest, then the diff_id)."""
    diff_id, descriptor = image.diff_ids[number], image.layers[number]
    where = f"{image.name}: layer {number + 1} ({descriptor.digest[:19]})"
    target, origin = cache.layer_path(diff_id), cache.origin_path(descriptor.digest)
    recorded = _recorded(origin)
    if recorded is not None and recorded != diff_id:
        raise SourceError(f"{where}: the config names diff_id {diff_id}, but this blob decompresses to {recorded}")
    if recorded == diff_id and target.exists():
        image.check_blob(descriptor)
        return cache.use(target)
    if stop is not None and stop.is_set():
        raise SourceError(f"{where}: not fetched: another layer failed")
    feed, digest = _Feed(), hashlib.sha256()
    failed: list[BaseException] = []
    with image.open_blob(descriptor) as blob, _in_cache(cache, target, where) as out:

        def spool() -> None:
            for chunk in feed.chunks():  # read to the end even after a failure, so the producer never waits
                if not failed:
                    try:
                        digest.update(chunk)
                        out.write(chunk)
                    except BaseException as exc:  # a full disk
                        failed.append(exc)

        writer = threading.Thread(target=spool, name="distill-spool", daemon=True)
        writer.start()
        try:
            _decompress(blob, descriptor, cache.layer_limit, where, feed, stop)
        finally:
            feed.queue.put(None)
            writer.join()
        if failed:
            raise failed[0]
        if "sha256:" + digest.hexdigest() != diff_id:
            raise SourceError(f"{where}: uncompressed content does not match diff_id {diff_id}")
    with _in_cache(cache, origin, where) as record:
        record.write(diff_id.encode())
    cache.trim()
    return target


def _decompress(blob: BinaryIO, descriptor: Descriptor, limit: int, where: str, feed: _Feed, stop: threading.Event | None) -> None:
    """Decompress `blob` into `feed`, checking the blob's digest to its last byte; given up (nothing kept)
    when `stop` is set: another layer failed."""
    buffered = io.BufferedReader(cast(io.RawIOBase, blob), _CHUNK)
    compression = media.compression_of(descriptor.media_type) or media.sniff_compression(buffered.peek(4))
    written = 0
    try:
        reader = _decompressed(buffered, compression)
        while chunk := reader.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise SourceError(
                    f"{where}: decompresses to more than {limit:,} bytes (DISTILL_LAYER_MAX); "
                    "a decompression bomb, or a layer larger than allowed: raise DISTILL_LAYER_MAX if you trust it"
                )
            feed.queue.put(chunk)
            if stop is not None and stop.is_set():
                raise SourceError(f"{where}: not read to its end: another layer failed")
    except SourceError:
        raise
    except (EOFError, OSError, *_GZIP_ERRORS, zstd.ZstdError, ValueError) as exc:
        raise SourceError(f"{where}: corrupt or truncated {compression} stream ({exc})") from None
    while buffered.read(_CHUNK):  # the rest of the blob, so its digest is checked in full
        pass
    if isinstance(blob, VerifiedReader):
        blob.verify()


def _recorded(origin: Path, *, first: bool = False) -> str | None:
    """The digest a record holds (`first`: the first of the digests it holds); None when it is unreadable or malformed."""
    try:
        text = origin.read_text(errors="replace").strip()
    except OSError:
        return None
    if first:
        text = text.split(" ", 1)[0]
    return text if valid_digest(text) else None


def layer_members(image: Image, number: int, cache: Cache, stop: threading.Event | None = None) -> tuple[Path, list[Member], list[str]]:
    """The spool file, member index and clamping notes of layer `number`, from the cache when present
    (`stop`: see `_decompress`)."""
    diff_id = image.diff_ids[number]
    spool = layer_spool(image, number, cache, stop)
    index_file = cache.index_path(diff_id)
    where = f"{image.name}: layer {number + 1} ({diff_id[:19]})"
    if index_file.exists():
        try:
            data = json.loads(index_file.read_text())
            if data.get("version") == _INDEX_VERSION:
                return spool, [Member(*row) for row in data["members"]], [str(n) for n in data["notes"]]
        except (ValueError, KeyError, TypeError, RecursionError):
            pass  # a damaged index is rebuilt from the verified spool
    members, notes = tarindex.members(spool, where)
    with _in_cache(cache, index_file, where) as out:
        rows = [list(m) for m in members]
        out.write(json.dumps({"version": _INDEX_VERSION, "members": rows, "notes": notes}, separators=(",", ":")).encode())
    return spool, members, notes
