"""The table of transports: syntax, source or destination, image or filesystem, local or remote, and the
module that reads and writes each (see the package docstring for what that module provides)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Transport", "TRANSPORTS", "UNSUPPORTED", "transport", "source_names", "destination_names"]


@dataclass(frozen=True)
class Transport:
    name: str
    syntax: str  # as the docs and messages spell it
    summary: str
    source: bool  # usable with --from and --base
    destination: bool  # usable with --out
    image: bool  # carries an image (manifest, config, layers), not just a filesystem
    local: bool  # a path on this machine, checked before anything is read or written
    module: str  # the module that reads and writes it (see above)
    platforms: bool = False  # as a destination, holds several platforms under one image index (--platform all)


TRANSPORTS: tuple[Transport, ...] = (
    Transport(
        "docker",
        "docker://REF, or a bare REF",
        "a registry image (normalised as Docker does)",
        source=True,
        destination=True,
        image=True,
        local=False,
        module="distill.transports.docker",
        platforms=True,
    ),
    Transport(
        "oci",
        "oci:DIR[:REF]",
        "an OCI image layout directory",
        source=True,
        destination=True,
        image=True,
        local=True,
        module="distill.transports.oci",
        platforms=True,
    ),
    Transport(
        "oci-archive",
        "oci-archive:FILE[:REF]",
        "a tar of an OCI image layout",
        source=True,
        destination=True,
        image=True,
        local=True,
        module="distill.transports.oci",
        platforms=True,
    ),
    Transport(
        "docker-archive",
        "docker-archive:FILE[:REF|@N]",
        "`docker save` / `podman save` output (legacy or OCI-dual)",
        source=True,
        destination=True,
        image=True,
        local=True,
        module="distill.transports.docker_archive",
    ),
    Transport(
        "docker-daemon",
        "docker-daemon:REF",
        "an image in a Docker-API daemon (docker, podman system service)",
        source=True,
        destination=True,
        image=True,
        local=False,
        module="distill.transports.docker_daemon",
    ),
    Transport(
        "rootfs",
        "rootfs:DIR",
        "a root filesystem directory",
        source=True,
        destination=True,
        image=False,
        local=True,
        module="distill.transports.rootfs",
    ),
    Transport(
        "layer",
        "layer:FILE.tar[.gz]",
        "one layer tarball",
        source=False,
        destination=True,
        image=False,
        local=True,
        module="distill.transports.layer",
    ),
)

# transports of skopeo and podman that distill refuses with a way around
UNSUPPORTED = ("containers-storage", "dir", "registry", "ostree", "sif", "tarball")

_BY_NAME = {t.name: t for t in TRANSPORTS}


def transport(name: str) -> Transport:
    """The transport called `name` (a KeyError for any other: callers parse references first)."""
    return _BY_NAME[name]


def source_names() -> tuple[str, ...]:
    return tuple(t.name for t in TRANSPORTS if t.source)


def destination_names() -> tuple[str, ...]:
    return tuple(t.name for t in TRANSPORTS if t.destination)
