"""Parse `--from` and `--out` references (`transport:details`, as skopeo and podman spell them).

Core transports: `rootfs:DIR` (a plain directory, in and out) and `layer:FILE.tar[.gz]` (out).
A bare source path must start with `/`, `./` or `../`, so a directory never shadows an
image name.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.errors import UsageError

__all__ = ["Ref", "parse_source", "parse_destination", "SOURCE_TRANSPORTS", "DESTINATION_TRANSPORTS"]

SOURCE_TRANSPORTS = ("rootfs",)
DESTINATION_TRANSPORTS = ("rootfs", "layer")
_IMAGE_TRANSPORTS = ("docker", "oci", "oci-archive", "docker-archive", "docker-daemon", "containers-storage", "dir")


@dataclass(frozen=True)
class Ref:
    transport: str
    path: str

    def __str__(self) -> str:
        return f"{self.transport}:{self.path}"


def _split(text: str, flag: str) -> tuple[str, str]:
    transport, sep, rest = text.partition(":")
    if not sep:
        return "", text
    if transport in _IMAGE_TRANSPORTS:
        raise UsageError(f"{flag} {text}: the {transport}: transport is not supported yet; unpack the image to a "
                         f"directory and use rootfs:DIR")
    return transport, rest.removeprefix("//") if transport == "docker" else rest


def parse_source(text: str) -> Ref:
    """`rootfs:DIR` or a bare path starting with `/`, `./` or `../`."""
    transport, rest = _split(text, "--from")
    if not transport and text.startswith(("/", "./", "../")):
        return Ref("rootfs", text)
    if transport in SOURCE_TRANSPORTS and rest:
        return Ref(transport, rest)
    raise UsageError(f"--from {text}: give rootfs:DIR or a path starting with /, ./ or ../")


def parse_destination(text: str) -> Ref:
    """`rootfs:DIR` or `layer:FILE.tar` / `layer:FILE.tar.gz`."""
    transport, rest = _split(text, "--out")
    if transport == "layer" and rest.endswith((".tar", ".tar.gz", ".tgz")):
        return Ref("layer", rest)
    if transport == "layer":
        raise UsageError(f"--out {text}: a layer file must end in .tar, .tar.gz or .tgz")
    if transport == "rootfs" and rest:
        return Ref("rootfs", rest)
    raise UsageError(f"--out {text}: give rootfs:DIR or layer:FILE.tar[.gz]")
