"""The plan: every entry to emit, each with the reasons it is there; and a View over it.

A plan is what checks inspect and sinks write. `PlanView` lets the loader model run on the
output before it exists, so "the closure resolves in the output" is checked with the same
code that computed it in the source.
"""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass, field
from typing import BinaryIO

from distill import paths
from distill.hints import Hint
from distill.loader import Closure
from distill.view import Node, NodeType, View

__all__ = ["EntryKind", "ReasonKind", "Reason", "entry_of", "Entry", "Plan", "PlanView"]


class EntryKind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"


class ReasonKind(enum.StrEnum):
    """Why an entry is in the plan (the `kind` of its reasons in `explain` and `--json`)."""

    ROOT = "root"  # a profile binary
    NEEDED = "needed"  # DT_NEEDED or PT_INTERP of `via`
    SHEBANG = "shebang"  # the #! interpreter of `via`, or what its `env` finds on PATH
    PROFILE = "profile"  # a `paths:` rule
    PACKAGE = "package"  # a file of a `packages:` package
    RUNTIME = "runtime"  # loaded at run time, collected by a `runtime:` setting
    SYSTEM = "system"  # a system file (`system:` settings, package records)
    LINK = "link"  # a symlink on the way to `via`
    TARGET = "target"  # what the shipped symlink `via` points to
    PARENT = "parent"  # a directory holding `via`
    BASE = "base"  # the base image's own file, in a `rootfs:` output written on a base
    HINT = "hint"  # named in the strings of `via`, taken by `hints: include` (distill.hints)


@dataclass(frozen=True)
class Reason:
    """Why an entry is in the plan: its kind, a detail, and the path it came by."""

    kind: ReasonKind
    detail: str
    via: str | None = None
    rule: str | None = None  # for `needed`: the loader rule, e.g. "ld.so.conf: /etc/ld.so.conf.d/x86_64-linux-gnu.conf"

    def describe(self) -> str:
        """`libssl.so.3 <- /usr/sbin/nginx (ld.so.conf: /etc/ld.so.conf.d/x86_64-linux-gnu.conf)`"""
        text = f"{self.detail} <- {self.via}" if self.via else self.detail
        return f"{text} ({self.rule})" if self.rule else text


@dataclass
class Entry:
    """One object of the output, at its canonical path."""

    path: str
    kind: EntryKind
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int | None = None  # None: generated; filled in when the plan is finished
    size: int = 0
    source: str | None = None  # canonical path in the source whose bytes this file carries
    data: bytes | None = None  # generated content
    target: str | None = None  # symlink target, or the path a hard link points to
    reasons: list[Reason] = field(default_factory=list)
    explicit: bool = False  # set by a profile rule; beats implicit entries for the same path

    def same_object(self, other: Entry) -> bool:
        """Whether two entries would write the same thing (so they can merge)."""
        return (self.kind, self.source, self.data, self.target) == (other.kind, other.source, other.data, other.target)


_NODE_KINDS = {NodeType.FILE: EntryKind.FILE, NodeType.DIR: EntryKind.DIR, NodeType.SYMLINK: EntryKind.SYMLINK}


def entry_of(node: Node) -> Entry | None:
    """The entry that writes `node` exactly as it is; None for a device, fifo or socket, which a plan cannot hold."""
    kind = _NODE_KINDS.get(node.type)
    if kind is None:
        return None
    source = node.path if kind is EntryKind.FILE else None
    return Entry(node.path, kind, node.mode, node.uid, node.gid, node.mtime, node.size, source=source, target=node.target)


@dataclass
class Plan:
    """Everything a sink needs, plus what reports and checks need."""

    source: str
    profile: str
    entries: dict[str, Entry] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)  # closure roots, in planning order
    closures: list[Closure] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # a path as rules and loaders spell it -> canonical path
    packages: dict[str, tuple[str, ...]] = field(default_factory=dict)  # package -> shipped paths it owns
    dangling: tuple[str, ...] = ()  # globs of symlinks the profile lets point at nothing
    broken_in_source: set[str] = field(default_factory=set)  # shipped symlinks that dangle in the source already
    hosts: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # plugin -> (host, companions)
    hints: list[Hint] = field(default_factory=list)  # executables/libraries named in shipped strings (distill.hints)

    def entry_for(self, path: str) -> Entry | None:
        """The entry a path names, by its canonical path or by a spelling through symlinks."""
        return self.entries.get(path) or self.entries.get(self.aliases.get(path, ""))

    def ordered(self) -> list[Entry]:
        """Entries in canonical order: parents first, then bytewise by component."""
        return [self.entries[p] for p in sorted(self.entries, key=paths.sort_key)]

    def file_bytes(self) -> int:
        return sum(e.size for e in self.entries.values() if e.kind is EntryKind.FILE)

    def count(self, kind: EntryKind) -> int:
        return sum(1 for e in self.entries.values() if e.kind is kind)


class PlanView(View):
    """The output as the plan describes it, readable through the View interface."""

    def __init__(self, plan: Plan, source: View) -> None:
        self.plan = plan
        self.source = source
        self.name = "output"
        children: dict[str, list[str]] = {}
        for path in plan.entries:
            if path != "/":
                children.setdefault(paths.parent(path), []).append(path.rsplit("/", 1)[1])
        self._children = {k: sorted(v) for k, v in children.items()}

    def _entry(self, path: str) -> Entry | None:
        entry = self.plan.entries.get(path)
        while entry is not None and entry.kind is EntryKind.HARDLINK:
            entry = self.plan.entries.get(entry.target or "")
        return entry

    def lstat(self, path: str) -> Node | None:
        entry = self._entry(path)
        if entry is None:
            return None
        kind = {EntryKind.FILE: NodeType.FILE, EntryKind.DIR: NodeType.DIR, EntryKind.SYMLINK: NodeType.SYMLINK}[entry.kind]
        return Node(path, kind, entry.mode, entry.uid, entry.gid, entry.mtime or 0, entry.size, entry.target)

    def listdir(self, path: str) -> list[str]:
        return self._children.get(path, [])

    def open(self, path: str) -> BinaryIO:
        entry = self._entry(path)
        if entry is None or entry.kind is not EntryKind.FILE:
            raise FileNotFoundError(path)
        if entry.data is not None:
            return io.BytesIO(entry.data)
        assert entry.source is not None
        return self.source.open(entry.source)
