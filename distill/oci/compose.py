"""Assemble the output image: the base's layers byte for byte, one distill layer, config, manifest.

Everything is derived from the inputs: times come from SOURCE_DATE_EPOCH or the source image's
`created` (never the clock), JSON is written with sorted keys, the layer is a canonical tar
gzipped with mtime 0 at a fixed level, so the same inputs give the same manifest digest.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from distill import __version__
from distill.errors import SourceError
from distill.oci import media
from distill.oci.digest import sha256_of
from distill.oci.image import Descriptor, Image
from distill.plan import Plan
from distill.profile import Profile
from distill.tarstream import GzipWriter, gzip_key, tar_key, write_tar
from distill.view import View

if TYPE_CHECKING:
    from distill.oci.layers import Cache

__all__ = ["Blob", "BuiltImage", "BuiltIndex", "build_image", "build_index", "rfc3339", "canonical_json"]
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
_DOCKER_TO_OCI = {
    media.DOCKER_LAYER_GZIP: media.OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": media.OCI_LAYER,
    media.DOCKER_LAYER_FOREIGN: media.OCI_LAYER_NONDIST_GZIP,
}
_DROPPED = ("Healthcheck", "OnBuild", "Shell")


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Blob:
    descriptor: Descriptor
    open: Callable[[], BinaryIO]


@dataclass(frozen=True)
class BuiltImage:
    manifest: dict[str, Any]
    manifest_bytes: bytes
    manifest_digest: str
    config: dict[str, Any]
    config_blob: Blob
    layers: list[Blob]
    base: Image | None
    base_name: str | None
    created: int

    @property
    def blobs(self) -> list[Blob]:
        return [*self.layers, self.config_blob]


@dataclass(frozen=True)
class BuiltIndex:
    """Several platforms' images under one OCI image index (what `--platform all` writes).

    `docker_list_bytes` is the same list as a Docker manifest list, for registries that refuse
    the OCI index media type (see transports/docker.py for when it is used).
    """

    images: list[BuiltImage]
    index: dict[str, Any]
    index_bytes: bytes
    index_digest: str
    docker_list_bytes: bytes
    created: int

    @property
    def blobs(self) -> list[Blob]:
        """Every layer and config once, sorted by digest (platforms share base layers)."""
        unique = {blob.descriptor.digest: blob for image in self.images for blob in image.blobs}
        return [unique[digest] for digest in sorted(unique)]


def _platform_of(config: dict[str, Any]) -> dict[str, str]:
    platform = {"architecture": config["architecture"], "os": config["os"]}
    if config.get("variant"):
        platform["variant"] = config["variant"]
    return platform


def build_index(images: list[BuiltImage]) -> BuiltIndex:
    """The index over `images`, in the order given (the source index's order, or the user's list)."""
    manifests = [
        {
            "mediaType": media.OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": len(image.manifest_bytes),
            "platform": _platform_of(image.config),
        }
        for image in images
    ]
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": manifests}
    index_bytes = canonical_json(index)
    docker_list = canonical_json({**index, "mediaType": media.DOCKER_LIST})
    return BuiltIndex(images, index, index_bytes, sha256_of(index_bytes), docker_list, max(image.created for image in images))


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it (to `target`, or nowhere)."""

    def __init__(self, target: Any = None) -> None:
        self.target, self.hash, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.target.write(data) if self.target is not None else len(data)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _write_layer(plan: Plan, source: View, path: Path, cache: Cache | None) -> tuple[Descriptor, str]:
    """(descriptor of the gzipped layer, diff_id). The tar streams through its hash into the parallel gzip, so no
    uncompressed copy lands on disk. With a cache (an image source), an earlier run's gzip of the same tar is
    copied instead (checked on the way to be the recorded blob and to decompress to the recorded diff_id): found
    by the tar's key (`tar_key`: every entry's metadata and the identity of its bytes), so the tar is not written
    at all; where no key can be made, by the diff_id of the tar, written once only to hash it. Either way the
    same bytes."""
    compression = gzip_key() if cache is not None else None  # None: no gzip is looked up or kept
    key = tar_key(plan, source) if compression is not None else None
    if cache is not None and compression is not None:
        if key is not None:
            reused = _cached_gzip(cache, cache.tar_gzip_record_path(key, compression), path, key=key)
        else:
            counted = _HashingWriter()
            write_tar(plan, source, counted)
            reused = _cached_gzip(cache, cache.gzip_record_path(counted.digest, compression), path, diff_id=counted.digest)
        if reused is not None:
            return reused
    with open(path, "wb") as out:
        compressed = _HashingWriter(out)
        with GzipWriter(compressed) as gzipped:
            uncompressed = _HashingWriter(gzipped)
            write_tar(plan, source, uncompressed)
    layer = Descriptor(media.OCI_LAYER_GZIP, compressed.digest, compressed.size)
    if cache is not None and compression is not None:
        _keep_gzip(cache, compression, uncompressed.digest, layer, path, key)
    return layer, uncompressed.digest


def _inflater() -> tuple[Any, tuple[type[BaseException], ...]]:
    """A gzip decompressor (ISA-L's where installed: twice as fast as zlib on a layer; reading is not what
    decides the bytes distill writes) and the errors it raises."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - where no isal wheel exists
        return zlib.decompressobj(wbits=31), (zlib.error,)
    return isal_zlib.decompressobj(wbits=31), (zlib.error, cast(type[BaseException], isal_zlib.error))


def _cached_gzip(cache: Cache, record: Path, path: Path, *, diff_id: str = "", key: str = "") -> tuple[Descriptor, str] | None:
    """The gzip `record` names, copied to `path` when it is intact (its digest as recorded) and decompresses to
    the layer's diff_id (hashed on the way); None when absent, damaged or another layer's. A record by diff_id
    holds the blob's digest; a record by tar key (`key`) holds the blob's digest, the diff_id and the key
    itself (so a record copied to another key's name is not believed)."""
    inflate, errors = _inflater()
    failures: tuple[type[BaseException], ...] = (OSError, ValueError, SourceError, *errors)
    try:
        if key:
            digest, expected, named = record.read_text().split()
            if named != key:
                return None
        else:
            digest, expected = record.read_text().strip(), diff_id
        with open(cache.blob_path(digest), "rb") as blob, open(path, "wb") as out:
            copied, inflated = _HashingWriter(out), _HashingWriter()
            while chunk := blob.read(1 << 20):
                copied.write(chunk)
                inflated.write(inflate.decompress(chunk))
            inflated.write(inflate.flush())
    except failures:  # never kept, evicted, a malformed record or blob: compress again
        return None
    if copied.digest != digest or inflated.digest != expected or not inflate.eof:
        return None
    cache.use(record)
    cache.use(cache.blob_path(digest))
    return Descriptor(media.OCI_LAYER_GZIP, digest, copied.size), expected


def _keep_gzip(cache: Cache, compression: str, diff_id: str, layer: Descriptor, path: Path, key: str | None) -> None:
    """Keep the compressed layer in the blob store, and which diff_id (and tar key) it compresses, for the next run.
    Best effort: the cache is an optimisation, so a read-only or full one costs the next run a compression, no more."""
    try:
        with open(path, "rb") as blob, cache.writing(cache.blob_path(layer.digest)) as out:
            shutil.copyfileobj(blob, out, 1 << 20)
        with cache.writing(cache.gzip_record_path(diff_id, compression)) as record:
            record.write(layer.digest.encode())
        if key is not None:
            with cache.writing(cache.tar_gzip_record_path(key, compression)) as record:
                record.write(f"{layer.digest} {diff_id} {key}".encode())
        cache.trim()
    except OSError:
        return


def _runtime(profile: Profile, source: Image | None, base: Image | None, warnings: list[str]) -> dict[str, Any]:
    """The `config` section: the profile's settings, falling back to the source image's, then the base's."""
    inherited: dict[str, Any] = {}
    for image in (base, source):
        section = image.runtime_config if image else None
        if section:
            inherited = {
                **inherited,
                **section,
                "Env": [*inherited.get("Env", []), *(section.get("Env") or [])],
                "Labels": {**inherited.get("Labels", {}), **(section.get("Labels") or {})},
            }
    for key in _DROPPED:
        if inherited.pop(key, None) is not None:
            warnings.append(f"image config: {key} dropped (it usually needs a shell, which the output does not have)")
    wanted = profile.image
    env = {}
    for item in inherited.get("Env", []):
        name, _, value = str(item).partition("=")
        env[name] = value
    env.update(wanted.env)
    out: dict[str, Any] = {key: value for key, value in inherited.items() if value not in (None, [], {}, "")}
    out["Env"] = [f"{k}={v}" for k, v in env.items()]
    if wanted.entrypoint is not None:
        out["Entrypoint"] = list(wanted.entrypoint)
        out["Cmd"] = list(wanted.cmd or [])  # a new entrypoint resets the inherited command, as in a Dockerfile
    elif wanted.cmd is not None:
        out["Cmd"] = list(wanted.cmd)
    for key, setting in (("WorkingDir", wanted.workdir), ("User", wanted.user), ("StopSignal", wanted.stop_signal)):
        if setting:
            out[key] = setting
    if wanted.expose:
        out["ExposedPorts"] = {port: {} for port in wanted.expose}
    if wanted.volumes:
        out["Volumes"] = {volume: {} for volume in wanted.volumes}
    out["Labels"] = {**inherited.get("Labels", {}), **wanted.labels}
    return {key: value for key, value in out.items() if value not in (None, [], {}, "")}


def _history(base: Image | None, created: str, profile: Profile) -> list[dict[str, Any]]:
    entries = list(base.config.get("history") or []) if base else []
    layered = [e for e in entries if not (isinstance(e, dict) and e.get("empty_layer"))]
    if base and len(layered) != len(base.layers):  # a base without (complete) history: one entry per layer
        entries = [{"created_by": f"base layer {n + 1}"} for n in range(len(base.layers))]
    created_by = f"distill {__version__} {profile.name} (profile {profile.digest}; {', '.join(profile.files) or 'command line'})"
    return [*entries, {"created": created, "created_by": created_by, "comment": "distilled by distill"}]


def build_image(
    layer_plan: Plan,
    source_view: View,
    *,
    workdir: Path,
    profile: Profile,
    source: Image | None,
    base: Image | None,
    base_name: str | None,
    created: int,
    architecture: tuple[str, str, str | None],
    warnings: list[str],
    cache: Cache | None = None,
) -> BuiltImage:
    """Write our layer into `workdir` (its gzip from `cache` when it holds it) and assemble config and manifest around it."""
    layer_path = workdir / "layer.tar.gz"
    layer, diff_id = _write_layer(layer_plan, source_view, layer_path, cache)
    stamp = rfc3339(created)
    os_name, arch, variant = architecture
    config: dict[str, Any] = {
        "created": stamp,
        "architecture": arch,
        "os": os_name,
        "config": _runtime(profile, source, base, warnings),
        "rootfs": {"type": "layers", "diff_ids": [*(base.diff_ids if base else []), diff_id]},
        "history": _history(base, stamp, profile),
    }
    if variant:
        config["variant"] = variant
    config_bytes = canonical_json(config)
    config_descriptor = Descriptor(media.OCI_CONFIG, sha256_of(config_bytes), len(config_bytes))
    layers: list[Blob] = []
    for descriptor in base.layers if base else []:
        kind = _DOCKER_TO_OCI.get(descriptor.media_type, descriptor.media_type)
        oci = Descriptor(kind, descriptor.digest, descriptor.size, descriptor.to_json(kind))
        assert base is not None
        layers.append(Blob(oci, functools.partial(base.open_blob, descriptor)))
    layers.append(Blob(layer, lambda: open(layer_path, "rb")))
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": config_descriptor.to_json(),
        "layers": [blob.descriptor.to_json() for blob in layers],
    }
    if base is not None and base_name:
        manifest["annotations"] = {BASE_NAME: base_name, BASE_DIGEST: base.manifest_digest}
    manifest_bytes = canonical_json(manifest)
    return BuiltImage(
        manifest,
        manifest_bytes,
        sha256_of(manifest_bytes),
        config,
        Blob(config_descriptor, lambda: io.BytesIO(config_bytes)),
        layers,
        base,
        base_name,
        created,
    )
