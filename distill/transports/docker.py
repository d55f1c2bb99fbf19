"""`docker://REF` (and bare references): an image in a registry, pulled (blobs cached by digest) or pushed.

A push uploads what the registry lacks, mounting base layers from the base's repository when both
live on one registry, and puts the manifest last. Several platforms go out as each manifest by digest,
then the OCI image index under the tag; a registry that refuses the OCI index media type (HTTP 400 or
415 on that PUT, as registries that predate OCI do) gets the same list as a Docker manifest list.
This module (and with it `requests`) is imported only when a reference names a registry.
"""

from __future__ import annotations

import errno
import tempfile
from contextlib import ExitStack, suppress
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from distill import progress
from distill.errors import DestinationError, SourceError
from distill.oci import media
from distill.oci.compose import BuiltImage, BuiltIndex
from distill.oci.digest import VerifiedReader
from distill.oci.image import Descriptor, Image
from distill.oci.layers import Cache
from distill.oci.resolve import resolve_image
from distill.reference import ImageReference, ReferenceError, parse_reference
from distill.refs import Ref
from distill.registry.client import RegistryClient
from distill.registry.options import RegistryOptions
from distill.target import Platform
from distill.transports.oci import copy_blob

if TYPE_CHECKING:
    from distill.transports import SourceOptions

__all__ = ["read_image", "registry_image", "write_image"]


class _CachingReader(VerifiedReader):
    """A blob streamed from the registry, verified as it is read, and copied into the cache on the way: the
    copy appears there (atomically, under its digest) only once every byte was read and checked, so a
    consumer can work on the bytes while they arrive (decompress a layer) instead of after the download.

    The copy is an optimisation: when writing it fails (a full disk, a read-only cache), it is dropped and
    the stream goes on, with one warning in `warnings` for the run."""

    def __init__(self, stream: BinaryIO, descriptor: Descriptor, cache: Cache, name: str, warnings: list[str]) -> None:
        super().__init__(stream, descriptor.digest, descriptor.size, f"{name}: blob {descriptor.digest[:19]}")
        self.path, self.warnings = cache.blob_path(descriptor.digest), warnings
        self.copy = ExitStack()  # the cache's temporary file, ended once
        self.steps = ExitStack()  # the progress line, ended once
        self.out: BinaryIO | None = None
        try:
            try:
                self.out = self.copy.enter_context(cache.writing(self.path))
            except OSError as exc:
                self._drop(exc)
            self.advance = self.steps.enter_context(
                progress.task(f"Copying blob {descriptor.digest.removeprefix('sha256:')[:12]}", descriptor.size)
            )
        except BaseException:
            self.close()
            raise

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = super().readinto(buffer)  # raises at the end when the size or digest differs
        if count:
            if self.out is not None:
                try:
                    self.out.write(memoryview(buffer)[:count])
                except OSError as exc:
                    self._drop(exc)
            self.advance(count)
        else:
            try:
                self.copy.close()  # verified to the last byte: into the cache (once: an ExitStack is empty after)
            except OSError as exc:  # the last bytes flushed, or the rename, failed
                self._drop(exc)
            self.steps.close()
        return count

    @property
    def cached(self) -> bool:
        """Whether the copy is (or, once read to the end, will be) in the cache."""
        return self.out is not None

    def _drop(self, exc: OSError) -> None:
        """Give up the cache copy (its temporary file removed) and say so once per run."""
        self.out = None
        with suppress(OSError):  # closing flushes what the disk already refused
            self.copy.__exit__(type(exc), exc, None)
        if not any(w.startswith("cache: ") for w in self.warnings):
            reason = f"{errno.errorcode.get(exc.errno or 0, 'error')} ({exc.strerror or exc})"
            self.warnings.append(
                f"cache: cannot write {exc.filename or self.path}: {reason}; blobs that fail so are not cached, "
                "and later runs download them again: free space in the cache or point XDG_CACHE_HOME elsewhere"
            )

    def close(self) -> None:
        try:
            if not self.closed:  # not read to its verified end: nothing is kept
                with suppress(OSError):
                    self.copy.__exit__(SourceError, SourceError("incomplete"), None)
                self.steps.__exit__(SourceError, SourceError("incomplete"), None)
        finally:
            super().close()


def _cached(path: Path, descriptor: Descriptor) -> bool:
    return path.exists() and path.stat().st_size == descriptor.size


def registry_image(reference: ImageReference, platform: Platform, cache: Cache, options: RegistryOptions) -> Image:
    """The image for `platform` behind a registry reference."""
    client = RegistryClient(reference, options)
    repository, name = reference.repository, f"docker://{reference}"
    top, media_type = client.get_manifest(repository, reference.reference)
    warnings: list[str] = []  # the image's (the config blob, read while resolving, may add to it already)

    def read_manifest(descriptor: Descriptor) -> bytes:
        return client.get_manifest(repository, descriptor.digest)[0]

    def open_blob(descriptor: Descriptor) -> BinaryIO:
        # the cache holds only blobs verified on the way in, written atomically under their digest
        path = cache.blob_path(descriptor.digest)
        if _cached(path, descriptor):
            return open(cache.use(path), "rb")
        return _CachingReader(client.open_blob(repository, descriptor.digest), descriptor, cache, name, warnings)  # type: ignore[return-value]

    def read_blob(descriptor: Descriptor) -> bytes:
        with open_blob(descriptor) as stream:
            return stream.read()

    def probe_blob(descriptor: Descriptor) -> None:
        response = client.request("HEAD", f"/v2/{repository}/blobs/{descriptor.digest}", repository, ok=(200, 404))
        response.close()
        if response.status_code != 200:
            raise SourceError(f"{name}: the registry does not hold blob {descriptor.digest[:19]} that the manifest names")

    image = resolve_image(name, top, media_type, read_manifest, read_blob, open_blob, platform, probe_blob)
    image.warnings = warnings
    return image


def read_image(ref: Ref, options: SourceOptions) -> Image:
    assert ref.image is not None
    return registry_image(ref.image, options.platform, options.cache, options.registry)


# -- pushing -----------------------------------------------------------------------------------------


def write_image(built: BuiltImage | BuiltIndex, ref: Ref, registry: RegistryOptions) -> str:
    return f"{ref}: pushed {_push(built, ref, registry)}"


def _push(built: BuiltImage | BuiltIndex, ref: Ref, options: RegistryOptions) -> str:
    assert ref.image is not None
    client = RegistryClient(ref.image, replace(options, error=DestinationError))
    tag = ref.image.tag
    if isinstance(built, BuiltImage):
        return _push_image(client, built, ref, tag or built.manifest_digest)
    for image in built.images:  # every manifest by digest first, so the index never names a missing one
        _push_image(client, image, ref, image.manifest_digest)
    return _put_index(client, built, ref.image.repository, tag or built.index_digest)


def _put_index(client: RegistryClient, built: BuiltIndex, repository: str, reference: str) -> str:
    """PUT the OCI index; a registry that refuses its media type (400/415) gets the Docker manifest list."""
    for data, kind in ((built.index_bytes, media.OCI_INDEX), (built.docker_list_bytes, media.DOCKER_LIST)):
        response = client.put_document(repository, reference, data, kind, also_ok=(400, 415))
        status = response.status_code
        if status == 201:
            digest = client.stored_digest(response, repository, data, "index")
            return digest if kind == media.OCI_INDEX else f"{digest} (as a Docker manifest list: the registry refused the OCI index)"
    raise DestinationError(
        f"{client.registry}/{repository}: the registry refused both the OCI image index and the Docker "
        f"manifest list (HTTP {status}); push one platform at a time with --platform os/arch"
    )


def _push_image(client: RegistryClient, built: BuiltImage, ref: Ref, reference: str) -> str:
    assert ref.image is not None
    repository = ref.image.repository
    base_repository = None
    if built.base is not None and built.base_name:
        try:
            base_ref = parse_reference(built.base_name)
            if base_ref.registry == ref.image.registry and base_ref.repository != repository:
                base_repository = base_ref.repository
        except ReferenceError:
            pass
    base_digests = {d.digest for d in built.base.layers} if built.base else set()
    for blob in built.blobs:
        digest, size = blob.descriptor.digest, blob.descriptor.size
        if client.has_blob(repository, digest):
            continue
        if base_repository and digest in base_digests and client.mount_blob(repository, digest, base_repository):
            continue
        with tempfile.TemporaryFile() as spooled:
            copy_blob(blob.open, blob.descriptor, spooled)

            def reopen(file: BinaryIO = spooled) -> BinaryIO:
                file.seek(0)
                return file

            client.upload_blob(repository, digest, size, reopen)
    return client.put_manifest(repository, reference, built.manifest_bytes, media.OCI_MANIFEST)
