"""Media types of the OCI and Docker v2 image formats, and what each means for a reader."""

from __future__ import annotations

__all__ = [
    "OCI_INDEX",
    "OCI_MANIFEST",
    "OCI_CONFIG",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "ACCEPT",
    "compression_of",
    "oci_layer_type",
    "sniff_compression",
    "REF_NAME",
    "CONTAINERD_NAME",
]

REF_NAME = "org.opencontainers.image.ref.name"  # index annotation: the tag in an OCI layout
CONTAINERD_NAME = "io.containerd.image.name"  # index annotation: the full reference, as containerd writes it

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))

_COMPRESSION = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN: "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
}


def compression_of(media_type: str) -> str | None:
    """'none', 'gzip' or 'zstd' for a known layer media type, else None (sniff the bytes)."""
    return _COMPRESSION.get(media_type)


def sniff_compression(head: bytes) -> str:
    """Compression from the first bytes of a layer blob (archives carry no media type)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def oci_layer_type(compression: str) -> str:
    """The OCI layer media type for a compression."""
    return {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}[compression]
