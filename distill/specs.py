"""The typed entries a profile is made of (what `schema.py` validates and the planner reads)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "PathKind",
    "Switch",
    "Setuid",
    "DlopenPriority",
    "HintMode",
    "BinarySpec",
    "PackageSpec",
    "PathSpec",
    "PluginSpec",
    "UserSpec",
    "GroupSpec",
]


class PathKind(enum.StrEnum):
    """What a `paths:` entry does (the key that names it; `source` when none does)."""

    SOURCE = "source"  # ship what the path (or glob) names in the source
    MAKE = "make"  # an empty directory
    SYMLINK = "symlink"  # a symlink with the given target
    TEXT = "text"  # a file with the given content
    COPY = "copy"  # a file of the source, at another path


class Switch(enum.StrEnum):
    """A setting that can also be left to distill: `auto`, `yes` (true) or `no` (false)."""

    AUTO = "auto"
    YES = "yes"
    NO = "no"


class Setuid(enum.StrEnum):
    """`system.setuid`: what happens to the setuid/setgid bits of files copied from the source."""

    STRIP = "strip"
    KEEP = "keep"


class DlopenPriority(enum.StrEnum):
    """`.note.dlopen` priorities, most needed first; `runtime.dlopen-notes` takes one as a threshold."""

    REQUIRED = "required"
    RECOMMENDED = "recommended"
    SUGGESTED = "suggested"
    NO = "no"


class HintMode(enum.StrEnum):
    """`hints:` in a profile: what to do with executables and libraries named in shipped files' strings."""

    REPORT = "report"  # list them (explain, the summary, --json)
    INCLUDE = "include"  # ship them, each with its reason
    NO = "no"  # do not look


@dataclass(frozen=True)
class BinarySpec:
    path: str
    optional: bool = False
    mode: int | None = None


@dataclass(frozen=True)
class PathSpec:
    """One `paths:` entry."""

    path: str
    kind: PathKind
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
    depends: bool = False  # also its Depends and Pre-Depends, except what the ELF closure provides and essential ones


@dataclass(frozen=True)
class PluginSpec:
    """Plugins (`paths`, globs) that `host` loads into its own process: checked as its dlopen would load them."""

    host: str
    paths: tuple[str, ...]
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
