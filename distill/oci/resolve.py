"""From a top-level manifest or index to one platform's `Image`, for any transport."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from distill.errors import SourceError
from distill.oci.digest import VerifiedReader, sha256_of
from distill.oci.image import MAX_MANIFEST_BYTES, Descriptor, Image, index_platforms, parse_json, parse_manifest, select_platform
from distill.target import Platform

__all__ = ["resolve_image", "read_verified"]


def read_verified(open_raw: Callable[[Descriptor], BinaryIO], descriptor: Descriptor, where: str) -> bytes:
    """The whole (small) blob behind `descriptor`, checked against its size and digest."""
    if descriptor.size > MAX_MANIFEST_BYTES:
        raise SourceError(
            f"{where}: {descriptor.digest} declares {descriptor.size} bytes; a manifest or config may be "
            f"at most {MAX_MANIFEST_BYTES >> 20} MiB"
        )
    with VerifiedReader(open_raw(descriptor), descriptor.digest, descriptor.size, f"{where}: {descriptor.digest[:19]}") as reader:
        data = reader.read(MAX_MANIFEST_BYTES + 1)
        reader.verify()
    return data


def resolve_image(
    name: str,
    top: bytes,
    top_media_type: str | None,
    read_manifest: Callable[[Descriptor], bytes],
    read_blob: Callable[[Descriptor], bytes],
    open_blob: Callable[[Descriptor], BinaryIO],
    platform: Platform,
    probe_blob: Callable[[Descriptor], None] | None = None,
) -> Image:
    """Pick `platform` from an index if `top` is one, then load the manifest's config."""
    kind, document = parse_manifest(top, name, top_media_type)
    manifest_bytes = top
    offered: tuple[Platform, ...] = ()
    if kind == "index":
        offered = tuple(p for p, _ in index_platforms(document, name))
        chosen = select_platform(document, platform, name)
        manifest_bytes = read_manifest(chosen)
        kind, document = parse_manifest(manifest_bytes, f"{name}: {chosen.digest[:19]}", chosen.media_type)
        if kind != "manifest":
            raise SourceError(f"{name}: nested indexes are not supported")
    config_descriptor = Descriptor.from_json(document["config"])
    config_bytes = read_blob(config_descriptor)
    config = parse_json(config_bytes, f"{name}: config")
    layers = [Descriptor.from_json(layer) for layer in document["layers"]]
    image = Image(
        name,
        document,
        manifest_bytes,
        sha256_of(manifest_bytes),
        config,
        config_bytes,
        config_descriptor,
        layers,
        open_blob,
        offered,
        probe_blob,
    )
    if (
        kind == "manifest"
        and top is manifest_bytes
        and platform.architecture
        and image.platform.architecture
        and not platform.matches(image.platform.os, image.platform.architecture, image.platform.variant)
    ):
        raise SourceError(f"{name}: the image is for {image.platform}, not {platform} (use --platform {image.platform})")
    return image
