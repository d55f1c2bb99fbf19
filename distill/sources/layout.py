"""`oci:DIR[:REF]` and `oci-archive:FILE[:REF]`: an OCI image layout, as a directory or a tar."""

from __future__ import annotations

import io
import tarfile
import weakref
from pathlib import Path
from typing import Any, BinaryIO

from distill.errors import SourceError
from distill.oci import documents, media
from distill.oci.digest import VerifiedReader, hex_of
from distill.oci.image import MAX_MANIFEST_BYTES, Descriptor, Image, parse_json
from distill.oci.layers import normalize_member_name
from distill.oci.resolve import read_verified, resolve_image
from distill.target import Platform

__all__ = ["DirStore", "TarStore", "layout_image"]


class DirStore:
    """Files of a layout directory; every name is checked to stay inside it."""

    def __init__(self, root: str, name: str) -> None:
        self.root = Path(root)
        self.name = name
        if not self.root.is_dir():
            raise SourceError(f"{name}: no such directory")

    def _path(self, relpath: str) -> Path:
        clean = normalize_member_name(relpath, self.name)
        path = self.root / clean.lstrip("/")
        if path.is_symlink() or not path.is_file():
            raise SourceError(f"{self.name}: {clean.lstrip('/')} is missing or not a regular file")
        return path

    def open(self, relpath: str) -> BinaryIO:
        return open(self._path(relpath), "rb")

    def probe(self, relpath: str, size: int) -> None:
        if self._path(relpath).stat().st_size != size:
            raise SourceError(f"{self.name}: {relpath} is not the {size} bytes its descriptor declares")


class TarStore:
    """Files of a tar archive (oci-archive, docker-archive), read in place by member offset."""

    def __init__(self, source: str | BinaryIO, name: str) -> None:
        self.name = name
        self.file = source  # an open file stays referenced (and open) as long as the store
        try:
            if isinstance(source, str):
                self.tar = tarfile.open(source, mode="r:")
            else:
                self.tar = tarfile.open(fileobj=source, mode="r:")
        except (OSError, tarfile.TarError, ValueError, OverflowError) as exc:
            raise SourceError(f"{name}: cannot read the archive ({getattr(exc, 'strerror', None) or exc})") from None
        weakref.finalize(self, self.tar.close)  # the archive stays open while anything can still read a blob from it
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self.tar:
                self.members[normalize_member_name(member.name, name)] = member
            ended = self._ends_properly()
        except (OSError, tarfile.TarError, EOFError, ValueError, OverflowError) as exc:
            raise SourceError(f"{name}: truncated or corrupt archive ({exc})") from None
        if not ended:  # tarfile takes a header cut short for the end of the archive
            raise SourceError(f"{name}: truncated archive: it stops before its end-of-archive marker")

    def _ends_properly(self) -> bool:
        """True when two zero blocks follow the last member, as every tar writer puts them."""
        fileobj = self.tar.fileobj
        assert fileobj is not None
        fileobj.seek(self.tar.offset)
        tail = fileobj.read(2 * tarfile.BLOCKSIZE)
        return len(tail) == 2 * tarfile.BLOCKSIZE and not tail.strip(b"\0")

    def has(self, relpath: str) -> bool:
        return normalize_member_name(relpath, self.name) in self.members

    def probe(self, relpath: str, size: int) -> None:
        member = self.members.get(normalize_member_name(relpath, self.name))
        if member is None or not member.isfile() or member.size != size:
            raise SourceError(f"{self.name}: {relpath} is missing from the archive or not the {size} bytes its descriptor declares")

    def open(self, relpath: str) -> BinaryIO:
        member = self.members.get(normalize_member_name(relpath, self.name))
        try:
            stream = self.tar.extractfile(member) if member is not None else None
        except KeyError:  # a hard link or symlink member whose target the archive does not hold
            assert member is not None
            raise SourceError(f"{self.name}: {relpath} links to {member.linkname[:200]!r}, which the archive does not hold") from None
        if stream is None:
            raise SourceError(f"{self.name}: {relpath} is missing from the archive")
        return io.BufferedReader(_Checked(stream, f"{self.name}: {relpath}"))  # type: ignore[arg-type]


class _Checked(io.RawIOBase):
    """A member's bytes; an archive that ends inside them is a SourceError, not tarfile's ReadError."""

    def __init__(self, stream: BinaryIO, where: str) -> None:
        super().__init__()
        self.stream, self.where = stream, where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self.stream.read(len(buffer))
        except (OSError, tarfile.TarError, EOFError, ValueError, OverflowError) as exc:
            raise SourceError(f"{self.where}: the archive is truncated or corrupt here ({exc})") from None
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            super().close()


def _blob(store: DirStore | TarStore, descriptor: Descriptor) -> BinaryIO:
    return store.open(f"blobs/sha256/{hex_of(descriptor.digest)}")


def layout_image(store: DirStore | TarStore, ref: str | None, platform: Platform) -> Image:
    """The image named `ref` (or the only one) in an OCI layout."""
    with store.open("index.json") as stream:
        raw_index = stream.read(MAX_MANIFEST_BYTES + 1)
    index = documents.check_index(parse_json(raw_index, f"{store.name}: index.json"), f"{store.name}: index.json")
    entries: list[dict[str, Any]] = index["manifests"]
    names = [_name(e) for e in entries]

    def read(descriptor: Descriptor) -> bytes:
        return read_verified(lambda d: _blob(store, d), descriptor, store.name)

    def open_blob(descriptor: Descriptor) -> BinaryIO:
        return VerifiedReader(
            _blob(store, descriptor),
            descriptor.digest,
            descriptor.size,  # type: ignore[return-value]
            f"{store.name}: blob {descriptor.digest[:19]}",
        )

    def probe(descriptor: Descriptor) -> None:
        store.probe(f"blobs/sha256/{hex_of(descriptor.digest)}", descriptor.size)

    if ref is None and len(entries) > 1 and not any(names):
        # an unnamed multi-platform layout: index.json is itself the index to pick a platform from
        return resolve_image(store.name, raw_index, None, read, read, open_blob, platform, probe)
    if ref is not None:
        chosen = [
            e for e, n in zip(entries, names, strict=True) if n == ref or (e.get("annotations") or {}).get(media.CONTAINERD_NAME) == ref
        ]
        if not chosen:
            known = ", ".join(sorted(n for n in names if n)) or "none"
            raise SourceError(f"{store.name}: no image named {ref!r} in the layout (names: {known})")
    elif len(entries) != 1:
        example = next((n for n in names if n), "REF")
        raise SourceError(f"{store.name}: the layout holds {len(entries)} images; name one, e.g. {store.name}:{example}")
    else:
        chosen = entries
    descriptor = Descriptor.from_json(chosen[0])
    return resolve_image(store.name, read(descriptor), descriptor.media_type, read, read, open_blob, platform, probe)


def _name(entry: dict[str, Any]) -> str | None:
    annotations: dict[str, str] = entry.get("annotations") or {}
    return annotations.get(media.REF_NAME) or annotations.get(media.CONTAINERD_NAME)
