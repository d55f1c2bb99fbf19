"""`oci:DIR[:REF]` and `oci-archive:FILE[:REF]`: an OCI image layout, as a directory or a tar."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import BinaryIO

from distill.errors import SourceError
from distill.oci import media
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

    def open(self, relpath: str) -> BinaryIO:
        clean = normalize_member_name(relpath, self.name)
        path = self.root / clean.lstrip("/")
        if path.is_symlink() or not path.is_file():
            raise SourceError(f"{self.name}: {clean.lstrip('/')} is missing or not a regular file")
        return open(path, "rb")


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
        except (OSError, tarfile.TarError) as exc:
            raise SourceError(f"{name}: cannot read the archive ({getattr(exc, 'strerror', None) or exc})") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in self.tar.getmembers():
            self.members[normalize_member_name(member.name, name)] = member

    def has(self, relpath: str) -> bool:
        return normalize_member_name(relpath, self.name) in self.members

    def open(self, relpath: str) -> BinaryIO:
        member = self.members.get(normalize_member_name(relpath, self.name))
        stream = self.tar.extractfile(member) if member is not None else None
        if stream is None:
            raise SourceError(f"{self.name}: {relpath} is missing from the archive")
        return stream  # type: ignore[return-value]


def _blob(store: DirStore | TarStore, descriptor: Descriptor) -> BinaryIO:
    return store.open(f"blobs/sha256/{hex_of(descriptor.digest)}")


def layout_image(store: DirStore | TarStore, ref: str | None, platform: Platform) -> Image:
    """The image named `ref` (or the only one) in an OCI layout."""
    with store.open("index.json") as stream:
        raw_index = stream.read(MAX_MANIFEST_BYTES + 1)
    index = parse_json(raw_index, f"{store.name}: index.json")
    entries = [e for e in index.get("manifests", []) if isinstance(e, dict)]
    names = [_name(e) for e in entries]

    def read(descriptor: Descriptor) -> bytes:
        return read_verified(lambda d: _blob(store, d), descriptor, store.name)

    def open_blob(descriptor: Descriptor) -> BinaryIO:
        return VerifiedReader(_blob(store, descriptor), descriptor.digest, descriptor.size,  # type: ignore[return-value]
                              f"{store.name}: blob {descriptor.digest[:19]}")

    if ref is None and len(entries) > 1 and not any(names):
        # an unnamed multi-platform layout: index.json is itself the index to pick a platform from
        return resolve_image(store.name, raw_index, None, read, read, open_blob, platform)
    if ref is not None:
        chosen = [e for e, n in zip(entries, names, strict=True)
                  if n == ref or (e.get("annotations") or {}).get(media.CONTAINERD_NAME) == ref]
        if not chosen:
            known = ", ".join(sorted(n for n in names if n)) or "none"
            raise SourceError(f"{store.name}: no image named {ref!r} in the layout (names: {known})")
    elif len(entries) != 1:
        example = next((n for n in names if n), "REF")
        raise SourceError(f"{store.name}: the layout holds {len(entries)} images; name one, e.g. {store.name}:{example}")
    else:
        chosen = entries
    descriptor = Descriptor.from_json(chosen[0], f"{store.name}: index.json")
    return resolve_image(store.name, read(descriptor), descriptor.media_type, read, read, open_blob, platform)


def _name(entry: dict) -> str | None:  # type: ignore[type-arg]
    annotations = entry.get("annotations") or {}
    return annotations.get(media.REF_NAME) or annotations.get(media.CONTAINERD_NAME)
