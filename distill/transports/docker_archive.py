"""`docker-archive:FILE[:REF|@N]`: what `docker save` and `podman save` write, read and written.

Both the legacy layout (`<id>/layer.tar`, `<id>.json`) and the OCI-dual layout Docker 25+ writes
(`blobs/sha256/...` plus `manifest.json`) are read through `manifest.json`. An archive carries
no layer digests, so each layer is hashed once here; its integrity rests on the config's diff_ids,
which every spool is checked against. Written: the OCI-dual layout (an OCI layout tar plus
Docker's `manifest.json`), which Docker 25+ writes and every `docker load` reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from distill.errors import SourceError
from distill.oci import documents, media
from distill.oci.compose import BuiltImage, BuiltIndex
from distill.oci.digest import VerifiedReader, sha256_of
from distill.oci.image import MAX_MANIFEST_BYTES, Descriptor, Image, parse_json
from distill.reference import ReferenceError, parse_reference
from distill.refs import Ref
from distill.registry.options import RegistryOptions
from distill.staging import staged
from distill.target import Platform
from distill.transports.oci import Content, TarStore, write_archive

if TYPE_CHECKING:
    from distill.transports import SourceOptions

__all__ = ["archive_image", "read_image", "write_image"]


def _entries(store: TarStore) -> list[dict[str, Any]]:
    with store.open("manifest.json") as stream:
        data = stream.read(MAX_MANIFEST_BYTES + 1)
    where = f"{store.name}: manifest.json"
    return documents.check_archive_manifest(documents.load(data, where), where)


def _same_image(tag: str, wanted: str) -> bool:
    try:
        return str(parse_reference(tag)) == str(parse_reference(wanted))
    except ReferenceError:
        return tag == wanted


def _choose(store: TarStore, entries: list[dict[str, Any]], ref: str | None, index: int | None) -> dict[str, Any]:
    if index is not None:
        if index >= len(entries):
            raise SourceError(f"{store.name}: no image @{index}; the archive holds {len(entries)}")
        return entries[index]
    if ref is not None:
        for entry in entries:
            if any(_same_image(tag, ref) for tag in entry.get("RepoTags") or []):
                return entry
        tags = ", ".join(t for e in entries for t in e.get("RepoTags") or []) or "none"
        raise SourceError(f"{store.name}: no image tagged {ref!r} in the archive (tags: {tags})")
    if len(entries) != 1:
        raise SourceError(f"{store.name}: the archive holds {len(entries)} images; name one with :REF or @N")
    return entries[0]


def _describe(store: TarStore, path: str) -> Descriptor:
    digest, size = hashlib.sha256(), 0
    with store.open(path) as stream:
        head = stream.read(4)
        digest.update(head)
        size += len(head)
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return Descriptor(media.oci_layer_type(media.sniff_compression(head)), "sha256:" + digest.hexdigest(), size)


def archive_image(store: TarStore, ref: str | None, index: int | None, platform: Platform) -> Image:
    """The chosen image of a docker-archive, with a synthesised OCI manifest."""
    entry = _choose(store, _entries(store), ref, index)
    config_path, layer_paths = entry["Config"], entry["Layers"]
    with store.open(config_path) as stream:
        config_bytes = stream.read(MAX_MANIFEST_BYTES + 1)
    config = parse_json(config_bytes, f"{store.name}: {config_path}")
    layers = [_describe(store, path) for path in layer_paths]
    paths_by_digest = {layer.digest: path for layer, path in zip(layers, layer_paths, strict=True)}
    config_descriptor = Descriptor(media.OCI_CONFIG, sha256_of(config_bytes), len(config_bytes))
    manifest = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": config_descriptor.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()

    def open_blob(descriptor: Descriptor) -> BinaryIO:
        return VerifiedReader(
            store.open(paths_by_digest[descriptor.digest]),
            descriptor.digest,
            descriptor.size,  # type: ignore[return-value]
            f"{store.name}: {paths_by_digest[descriptor.digest]}",
        )

    image = Image(
        store.name,
        manifest,
        manifest_bytes,
        sha256_of(manifest_bytes),
        config,
        config_bytes,
        config_descriptor,
        layers,
        open_blob,
        probe_blob=lambda descriptor: None,
    )  # each layer was hashed from the archive just now
    if image.platform.architecture and not platform.matches(image.platform.os, image.platform.architecture, image.platform.variant):
        raise SourceError(f"{store.name}: the image is for {image.platform}, not {platform} (use --platform {image.platform})")
    return image


def read_image(ref: Ref, options: SourceOptions) -> Image:
    return archive_image(TarStore(ref.path, str(ref)), ref.name, ref.index, options.platform)


def write_image(built: BuiltImage | BuiltIndex, ref: Ref, registry: RegistryOptions) -> str:
    assert isinstance(built, BuiltImage)  # one platform: the table says so, and the dispatch checks it
    content = Content(built)
    with staged(Path(ref.path).absolute(), directory=False) as temp, open(temp, "wb") as out:
        write_archive(content, out, ref.name, docker=built)
    return f"{ref}: {content.top[1]}"
