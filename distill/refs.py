"""Parse `--from`, `--base` and `--out` references in the transport syntax of skopeo and podman.

The transports and their syntax are listed in `distill.transports.table`. A bare source starting with
`/`, `./` or `../` is a directory; any other bare source is an
image reference, so a directory named `nginx` never shadows the `nginx` image.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.errors import UsageError
from distill.reference import ImageReference, ReferenceError, parse_reference
from distill.transports.table import UNSUPPORTED, destination_names, source_names
from distill.transports.table import transport as transport_row

__all__ = ["Ref", "parse_source", "parse_destination"]


@dataclass(frozen=True)
class Ref:
    """A parsed reference: transport, a local path (directory or file), and the image name or tag."""

    transport: str
    path: str = ""
    name: str | None = None  # oci:/archives: the REF part; docker:/docker-daemon: the normalised reference
    image: ImageReference | None = None  # docker:/docker-daemon: the parsed reference
    index: int | None = None  # docker-archive:FILE@N

    @property
    def is_image(self) -> bool:
        return transport_row(self.transport).image

    def __str__(self) -> str:
        if self.transport == "docker" and self.image is not None:
            return f"docker://{self.image}"
        if self.transport == "docker-daemon":
            return f"docker-daemon:{self.name}"
        suffix = f":{self.name}" if self.name else (f"@{self.index}" if self.index is not None else "")
        return f"{self.transport}:{self.path}{suffix}"


def _image(text: str, flag: str) -> ImageReference:
    try:
        return parse_reference(text)
    except ReferenceError as exc:
        raise UsageError(f"{flag} {text}: {exc}") from None


def _parse(text: str, flag: str, allowed: tuple[str, ...]) -> Ref:
    transport, sep, rest = text.partition(":")
    if not sep or transport not in (*source_names(), *destination_names(), *UNSUPPORTED):
        return Ref("")  # bare
    if transport in UNSUPPORTED:
        if flag == "--out":  # write a layout, then copy it where the user wanted it
            raise UsageError(
                f"{flag} {text}: the {transport}: transport is not supported; write --out oci:DIR:TAG "
                f"and copy it with `skopeo copy oci:DIR:TAG {text}`"
            )
        raise UsageError(
            f"{flag} {text}: the {transport}: transport is not supported; copy the image with "
            f"`skopeo copy {text} oci:DIR:TAG` and use oci:DIR:TAG"
        )
    if transport not in allowed:
        raise UsageError(f"{flag} {text}: {transport}: cannot be used here")
    if transport == "docker":
        if not rest.startswith("//"):
            raise UsageError(f"{flag} {text}: write docker://REFERENCE")
        image = _image(rest[2:], flag)
        return Ref("docker", name=str(image), image=image)
    if transport == "docker-daemon":
        if rest.startswith("sha256:"):
            return Ref("docker-daemon", name=rest)
        image = _image(rest, flag)
        return Ref("docker-daemon", name=str(image), image=image)
    if not rest:
        raise UsageError(f"{flag} {text}: give a path after {transport}:")
    if not transport_row(transport).image:
        return Ref(transport, rest)
    path, _, name = rest.partition(":")
    if transport == "docker-archive" and "@" in path and not name:
        path, _, number = path.rpartition("@")
        if not number.isdigit():
            raise UsageError(f"{flag} {text}: write docker-archive:FILE@N with a number N")
        return Ref(transport, path, index=int(number))
    if not path:
        raise UsageError(f"{flag} {text}: give a path after {transport}:")
    return Ref(transport, path, name or None)


def parse_source(text: str, flag: str = "--from") -> Ref:
    """A `--from` or `--base` reference; a bare path must start with `/`, `./` or `../`."""
    if text.startswith(("/", "./", "../")):
        return Ref("rootfs", text)
    ref = _parse(text, flag, source_names())
    if ref.transport:
        return ref
    image = _image(text, flag)
    return Ref("docker", name=str(image), image=image)


def parse_destination(text: str) -> Ref:
    """An `--out` reference; the transport is always explicit."""
    ref = _parse(text, "--out", destination_names())
    if not ref.transport:
        raise UsageError(f"--out {text}: name a transport, e.g. rootfs:DIR, layer:FILE.tar, oci:DIR:TAG or docker://REF")
    if ref.transport == "layer" and not ref.path.endswith((".tar", ".tar.gz", ".tgz")):
        raise UsageError(f"--out {text}: a layer file must end in .tar, .tar.gz or .tgz")
    if ref.transport == "docker-daemon" and ref.image is None:
        raise UsageError(f"--out {text}: name the image to load, e.g. docker-daemon:app:latest")
    return ref
