"""Parse and normalise container image references exactly as `docker pull` does.

Follows github.com/distribution/reference (ParseNormalizedNamed, then TagNameOnly), so that a
name means the same image here as in Docker: "nginx" is "docker.io/library/nginx:latest",
"user/app:1" is "docker.io/user/app:1", and "localhost:5000/x" names a local registry.

    reference  := [registry "/"] path [":" tag] ["@" digest]
    registry   := (domain-name | "[" ipv6 "]") [":" port]   only if it has "." or ":", is "localhost" or has uppercase
    path       := component ("/" component)*            component := [a-z0-9]+ (("." | "_" | "__" | "-"+) [a-z0-9]+)*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := "sha256:" 64 lowercase hex | "sha512:" 128 lowercase hex

One deliberate difference: a first component such as "foo_bar.com" (a "." makes it a registry, but "_" is not
allowed in a host) is refused, where upstream accepts the whole name as a path with an empty registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = ["ImageReference", "ReferenceError", "parse_reference"]

_DOCKER_HUB = "docker.io"
_DOCKER_HUB_LEGACY = "index.docker.io"
_DOCKER_HUB_API = "registry-1.docker.io"
_OFFICIAL_PREFIX = "library/"
_DEFAULT_TAG = "latest"
_MAX_PATH = 255
_MAX_TAG = 128
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}

# The upstream grammar (regexp.go); classes are spelled out because Python's \w and \d match non-ASCII and Go's do not.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY_RE = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_DIGEST_RE = re.compile(r"([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*):([0-9a-fA-F]{32,})")
_IMAGE_ID_RE = re.compile(r"[a-f0-9]{64}")
_QUOTE_ESCAPES = {'"': '\\"', "\\": "\\\\"}


class ReferenceError(ValueError):
    """An image reference Docker would refuse; the message is one line that names the input and the problem."""


@dataclass(frozen=True)
class ImageReference:
    """A normalised reference: full registry and repository path, and a tag, a digest or both."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __post_init__(self) -> None:
        if self.tag is None and self.digest is None:
            raise ValueError(f"image reference {self.registry}/{self.repository} needs a tag or a digest")

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}{self._suffix()}"

    @property
    def familiar(self) -> str:
        """The short form Docker shows users: Docker Hub's domain, and "library/" before a one-part name, dropped."""
        if self.registry != _DOCKER_HUB:
            return str(self)
        official = self.repository.removeprefix(_OFFICIAL_PREFIX)
        return (official if "/" not in official else self.repository) + self._suffix()

    @property
    def api_host(self) -> str:
        """The host serving the registry API: Docker Hub's name "docker.io" is not where its API lives."""
        return _DOCKER_HUB_API if self.registry == _DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """The <reference> of /v2/<name>/manifests/<reference>: a digest pins the content, so it wins over a tag."""
        if self.digest is not None:
            return self.digest
        assert self.tag is not None  # __post_init__ refuses neither
        return self.tag

    def with_reference(self, tag: str | None = None, digest: str | None = None) -> ImageReference:
        """The same repository at another tag and/or digest; with neither, at "latest" as parsing would give."""
        new = replace(self, tag=_DEFAULT_TAG if tag is None and digest is None else tag, digest=digest)
        if tag is not None:
            _check_tag(str(new), tag)
        if digest is not None:
            _check_digest(str(new), digest)
        return new

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag is not None else "") + (f"@{self.digest}" if self.digest is not None else "")


def parse_reference(text: str) -> ImageReference:
    """Normalise `text` as Docker does, or raise ReferenceError saying what is wrong with it."""
    if not text:
        raise _error(text, "reference is empty")
    if _IMAGE_ID_RE.fullmatch(text):
        raise _error(text, "a 64-character hex string is an image ID, not a repository name")
    registry, remainder = _split_registry(text)
    name, has_digest, digest = remainder.partition("@")
    path, has_tag, tag = name.partition(":")
    if path.lower() != path:
        raise _error(text, "repository name must be lowercase")
    if not _REGISTRY_RE.fullmatch(registry):
        raise _error(text, f"invalid registry host {_quote(registry)}")
    _check_path(text, path)
    if registry == _DOCKER_HUB and "/" not in path:
        path = _OFFICIAL_PREFIX + path
    if len(path) > _MAX_PATH:
        raise _error(text, f"repository name is longer than {_MAX_PATH} characters")
    if has_tag:
        _check_tag(text, tag)
    if has_digest:
        _check_digest(text, digest)
    default_tag = None if has_digest else _DEFAULT_TAG
    return ImageReference(registry, path, tag if has_tag else default_tag, digest if has_digest else None)


def _split_registry(text: str) -> tuple[str, str]:
    """Split off the first component if it must be a registry (a path component never has ".", ":" or uppercase)."""
    first, slash, rest = text.partition("/")
    if not slash:
        return _DOCKER_HUB, text
    if first == _DOCKER_HUB_LEGACY:
        return _DOCKER_HUB, rest
    if first == "localhost" or "." in first or ":" in first or first.lower() != first:
        return first, rest
    return _DOCKER_HUB, text


def _check_path(text: str, path: str) -> None:
    if not path:
        raise _error(text, "repository name is missing")
    for component in path.split("/"):
        if not component:
            raise _error(text, "repository name has an empty path component (leading, trailing or doubled '/')")
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise _error(
                text,
                f"invalid repository path component {_quote(component)}: use lowercase letters and digits"
                " joined by single '.', '_' or '__', or by '-'s",
            )


def _check_tag(text: str, tag: str) -> None:
    if not _TAG_RE.fullmatch(tag):
        raise _error(text, f"invalid tag {_quote(tag)}: use letters, digits, '_', '.' and '-', not starting with '.' or '-'")
    if len(tag) > _MAX_TAG:
        raise _error(text, f"tag is longer than {_MAX_TAG} characters")


def _check_digest(text: str, digest: str) -> None:
    match = _DIGEST_RE.fullmatch(digest)
    if match is None:
        raise _error(text, f"invalid digest {_quote(digest)}: expected <algorithm>:<hex>, at least 32 hex digits")
    algorithm, encoded = match.groups()
    length = _DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        raise _error(text, f"unsupported digest algorithm {_quote(algorithm)}: use sha256 or sha512")
    if len(encoded) != length or encoded.lower() != encoded:
        raise _error(text, f"a {algorithm} digest must be {length} lowercase hex digits")


def _error(text: str, problem: str) -> ReferenceError:
    return ReferenceError(f"invalid image reference {_quote(text)}: {problem}")


def _quote(text: str) -> str:
    """Double-quote like Go's %q so that a message stays on one line whatever the input holds."""
    body = "".join(_QUOTE_ESCAPES.get(c, c) if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return f'"{body}"'
