"""`docker://REF` (and bare references): an image in a registry, its blobs cached by digest."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from distill import progress
from distill.errors import SourceError
from distill.oci.digest import VerifiedReader
from distill.oci.image import Descriptor, Image
from distill.oci.layers import Cache
from distill.oci.resolve import resolve_image
from distill.reference import ImageReference
from distill.registry.client import RegistryClient
from distill.registry.options import RegistryOptions
from distill.target import Platform

__all__ = ["registry_image", "fetch_blob"]


def fetch_blob(client: RegistryClient, repository: str, descriptor: Descriptor, cache: Cache, name: str) -> Path:
    """The verified blob in the cache, downloading it the first time."""
    path = cache.blob_path(descriptor.digest)
    if path.exists() and path.stat().st_size == descriptor.size:
        return cache.use(path)
    where = f"{name}: blob {descriptor.digest[:19]}"
    with (
        cache.writing(path) as out,
        VerifiedReader(client.open_blob(repository, descriptor.digest), descriptor.digest, descriptor.size, where) as reader,
        progress.task(f"Copying blob {descriptor.digest.removeprefix('sha256:')[:12]}", descriptor.size) as advance,
    ):
        while chunk := reader.read(1 << 20):
            out.write(chunk)
            advance(len(chunk))
        reader.verify()
    return path


def registry_image(reference: ImageReference, platform: Platform, cache: Cache, options: RegistryOptions) -> Image:
    """The image for `platform` behind a registry reference."""
    client = RegistryClient(reference, options)
    repository, name = reference.repository, f"docker://{reference}"
    top, media_type = client.get_manifest(repository, reference.reference)

    def read_manifest(descriptor: Descriptor) -> bytes:
        return client.get_manifest(repository, descriptor.digest)[0]

    def open_blob(descriptor: Descriptor) -> BinaryIO:
        # the cache holds only blobs verified on the way in, written atomically under their digest
        return open(fetch_blob(client, repository, descriptor, cache, name), "rb")

    def read_blob(descriptor: Descriptor) -> bytes:
        with open_blob(descriptor) as stream:
            return stream.read()

    def probe_blob(descriptor: Descriptor) -> None:
        response = client.request("HEAD", f"/v2/{repository}/blobs/{descriptor.digest}", repository, ok=(200, 404))
        response.close()
        if response.status_code != 200:
            raise SourceError(f"{name}: the registry does not hold blob {descriptor.digest[:19]} that the manifest names")

    return resolve_image(name, top, media_type, read_manifest, read_blob, open_blob, platform, probe_blob)
