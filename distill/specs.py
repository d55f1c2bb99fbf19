"""The typed entries a profile is made of (what `schema.py` validates and the planner reads)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BinarySpec", "PackageSpec", "PathSpec", "UserSpec", "GroupSpec"]


@dataclass(frozen=True)
class BinarySpec:
    path: str
    optional: bool = False
    mode: int | None = None


@dataclass(frozen=True)
class PathSpec:
    """One `paths:` entry. kind: source (copy from the source), make, symlink, text or copy."""

    path: str
    kind: str
    value: str | None = None
    mode: int | None = None
    owner: str | None = None
    optional: bool = False
    directory: bool = False  # written with a trailing slash


@dataclass(frozen=True)
class PackageSpec:
    """A package whose every file ships (from the source's dpkg or apk database)."""

    name: str
    optional: bool = False


@dataclass(frozen=True)
class UserSpec:
    """A user taken from the source (uid None) or created from a full entry."""

    name: str
    uid: int | None = None
    gid: int | None = None
    home: str = "/nonexistent"
    shell: str = "/usr/sbin/nologin"
    optional: bool = False


@dataclass(frozen=True)
class GroupSpec:
    name: str
    gid: int | None = None
    members: tuple[str, ...] = ()
    optional: bool = False
