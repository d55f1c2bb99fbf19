"""`docker-daemon:REF`: an image in a Docker-API daemon (docker, podman system service).

Read: the daemon saves the image as a docker-archive, spooled to an anonymous temporary file and read
as one. Written: the image as a docker-archive (OCI-dual), loaded by the daemon. The Engine API
client is `distill.daemon`.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

from distill.daemon import DaemonClient
from distill.errors import DestinationError
from distill.oci.compose import BuiltImage, BuiltIndex
from distill.oci.image import Image
from distill.refs import Ref
from distill.registry.options import RegistryOptions
from distill.transports.docker_archive import archive_image
from distill.transports.oci import Content, TarStore, write_archive

if TYPE_CHECKING:
    from distill.transports import SourceOptions

__all__ = ["read_image", "write_image"]


def read_image(ref: Ref, options: SourceOptions) -> Image:
    saved = tempfile.TemporaryFile()  # removed by the OS when the store lets go of it
    DaemonClient().save(ref.name or "", saved)
    saved.seek(0)
    return archive_image(TarStore(saved, str(ref)), None, None, options.platform)


def write_image(built: BuiltImage | BuiltIndex, ref: Ref, registry: RegistryOptions) -> str:
    assert isinstance(built, BuiltImage)  # one platform: the table says so, and the dispatch checks it
    with tempfile.TemporaryFile() as archive:
        write_archive(Content(built), archive, ref.name, docker=built)
        size = archive.tell()
        archive.seek(0)
        said = DaemonClient(error=DestinationError).load(archive, size)
    return f"{ref}: {said}"
