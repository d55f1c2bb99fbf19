"""An image as every transport presents it: a manifest, a config, and layer blobs to open.

Transports differ in where bytes come from; once they produce an `Image` the rest of distill
does not care. Manifests and configs are parsed defensively (size caps, shape checks), and an
index is resolved to one platform's manifest here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from distill.errors import SourceError
from distill.oci import documents, media
from distill.target import Platform

__all__ = ["MAX_MANIFEST_BYTES", "Descriptor", "Platform", "Image", "parse_json", "parse_manifest", "index_platforms", "select_platform"]

MAX_MANIFEST_BYTES = documents.MAX_DOCUMENT_BYTES


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor; `raw` keeps every field so a base layer can be copied exactly."""

    media_type: str
    digest: str
    size: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Descriptor:
        """A descriptor from a document that `documents.py` has checked (digest and size are valid)."""
        return cls(value.get("mediaType", ""), value["digest"], value["size"], dict(value))

    def to_json(self, media_type: str | None = None) -> dict[str, Any]:
        out = dict(self.raw) or {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        out.update({"mediaType": media_type or self.media_type, "digest": self.digest, "size": self.size})
        return out


@dataclass
class Image:
    """One platform's image: manifest, config and a way to open each blob (verified while read)."""

    name: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    manifest_digest: str
    config: dict[str, Any]
    config_bytes: bytes
    config_descriptor: Descriptor
    layers: list[Descriptor]
    open_blob: Callable[[Descriptor], BinaryIO]
    offered: tuple[Platform, ...] = ()  # every platform of the index this image was picked from, in its order
    probe_blob: Callable[[Descriptor], None] | None = None  # proves a blob is there without reading it
    warnings: list[str] = field(default_factory=list, compare=False)  # what reading it worked around (a cache it could not write)

    def __post_init__(self) -> None:
        """Check the config's shapes and its diff_ids against the manifest, before any layer is read."""
        documents.check_config(self.config, f"{self.name}: config {self.config_descriptor.digest[:19]}")
        self.diff_ids  # noqa: B018

    def check_blob(self, descriptor: Descriptor) -> None:
        """SourceError unless the image still holds `descriptor`'s blob (of its size, where that is cheap to see)."""
        if self.probe_blob is not None:
            self.probe_blob(descriptor)
        else:
            self.open_blob(descriptor).close()

    @property
    def diff_ids(self) -> list[str]:
        ids: list[str] = self.config["rootfs"]["diff_ids"]  # digests, checked with the config
        if len(ids) != len(self.layers):
            raise SourceError(f"{self.name}: config rootfs.diff_ids names {len(ids)} layers, the manifest {len(self.layers)}")
        return list(ids)

    @property
    def runtime_config(self) -> dict[str, Any]:
        """The config's `config` section (Env, Entrypoint, Cmd, Labels, ...; shapes checked); {} when there is none."""
        return self.config.get("config") or {}

    @property
    def platform(self) -> Platform:
        return Platform(str(self.config.get("os", "linux")), str(self.config.get("architecture", "")), self.config.get("variant"))


def parse_json(data: bytes, where: str) -> dict[str, Any]:
    """A JSON object from a manifest, index or config, refusing what is too large or malformed."""
    return documents.load_object(data, where)


def parse_manifest(data: bytes, where: str, media_type: str | None = None) -> tuple[str, dict[str, Any]]:
    """(kind, document): kind is 'index' or 'manifest', its shape checked; schema 1 and unknown types are refused."""
    document = parse_json(data, where)
    kind = document.get("mediaType") or media_type or ""
    if document.get("schemaVersion") == 1 or "signatures" in document:
        raise SourceError(f"{where}: Docker schema 1 manifests are not supported; push the image again with a current client")
    if kind in media.INDEX_TYPES or (not kind and "manifests" in document):
        return "index", documents.check_index(document, where)
    if kind in media.MANIFEST_TYPES or (not kind and "layers" in document):
        return "manifest", documents.check_manifest(document, where)
    raise SourceError(f"{where}: unsupported manifest media type {str(kind)[:100]!r}")


def index_platforms(index: dict[str, Any], where: str) -> list[tuple[Platform, Descriptor]]:
    """The runnable images of an index with their platforms, in index order (attestations and
    unknown-platform entries skipped, a platform listed twice kept once)."""
    out: list[tuple[Platform, Descriptor]] = []
    for item in index["manifests"]:  # an index checked by documents.check_index
        descriptor = Descriptor.from_json(item)
        annotations = item.get("annotations") or {}
        plat = item.get("platform") or {}
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest" or plat.get("os") == "unknown":
            continue
        variant = plat.get("variant")
        platform = Platform(str(plat.get("os", "")), str(plat.get("architecture", "")), str(variant) if variant else None)
        if all(platform != seen for seen, _ in out):
            out.append((platform, descriptor))
    return out


def select_platform(index: dict[str, Any], wanted: Platform, where: str) -> Descriptor:
    """The manifest for `wanted` in an index; attestation and unknown-platform entries are skipped."""
    offered = index_platforms(index, where)
    for platform, descriptor in offered:
        if wanted.matches(platform.os, platform.architecture, platform.variant):
            return descriptor
    names = ", ".join(str(p) for p, _ in offered)
    raise SourceError(f"{where}: no image for platform {wanted}; the index offers {names or 'nothing'} (use --platform)")
