"""Fit a plan onto a base image: the layer ships only what the base lacks, where the base expects it.

- Paths are rebased through the base's symlinks, so a layer never puts a directory where the base
  has a symlink (`/lib -> usr/lib` on a merged-/usr base).
- A file the base has with the same bytes is left out; so is a directory or symlink it has alike.
- A library the closure needs that the base already has at that path comes from the base (the
  checks then prove the base's copy is new enough), unless `replace_libs` ships the source's.
- /etc/passwd and /etc/group become the base's entries plus ours.
The result is a new plan; the checks run on it laid over the base (`OverlayView`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

from distill import paths
from distill.accounts import Account, Group, ShadowLine, parse_group, parse_passwd, parse_shadow
from distill.pkgmeta import STATUS_D
from distill.plan import Entry, EntryKind, Plan, PlanView, Reason, ReasonKind, entry_of
from distill.view import Node, View

__all__ = ["LayeringReport", "rebase_plan", "OverlayView", "overlay", "flattened"]

_CLOSURE_REASONS = (ReasonKind.NEEDED,)
_ACCOUNT_FILES: dict[str, Callable[[str], Sequence[Account | Group | ShadowLine]]] = {
    "/etc/passwd": parse_passwd,
    "/etc/group": parse_group,
    "/etc/shadow": parse_shadow,
    "/etc/gshadow": parse_shadow,
}


@dataclass
class LayeringReport:
    """What the base made unnecessary, for the summary and the JSON report."""

    same_in_base: list[str]
    from_base: list[str]  # closure libraries the base provides
    merged: list[str]  # files merged with the base's (passwd, group)


class OverlayView(View):
    """The planned layer laid over the base: upper entries win, directories merge."""

    def __init__(self, upper: View, lower: View) -> None:
        self.upper, self.lower = upper, lower
        self.name = f"{lower.name} + distill layer"

    def lstat(self, path: str) -> Node | None:
        return self.upper.lstat(path) or self.lower.lstat(path)

    def listdir(self, path: str) -> list[str]:
        above, below = self.upper.lstat(path), self.lower.lstat(path)
        names = set(self.upper.listdir(path))  # the layer may hold children of a directory it leaves to the base
        if below is not None and below.is_dir and (above is None or above.is_dir):
            names.update(self.lower.listdir(path))
        return sorted(names)

    def open(self, path: str) -> BinaryIO:
        return self.upper.open(path) if self.upper.lstat(path) else self.lower.open(path)


def _digest(view: View, path: str) -> str:
    digest = hashlib.sha256()
    with view.open(path) as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _entry_digest(entry: Entry, source: View) -> str:
    if entry.data is not None:
        return hashlib.sha256(entry.data).hexdigest()
    return _digest(source, entry.source or entry.path)


def _merge_accounts(path: str, ours: bytes, base_text: str) -> bytes:
    """The base's lines, then ours whose names the base does not have."""
    parse = _ACCOUNT_FILES[path]
    known = {item.name for item in parse(base_text)}
    extra = [item.line for item in parse(ours.decode()) if item.name not in known]
    lines = [line for line in base_text.splitlines() if line.strip()]
    return ("\n".join([*lines, *extra]) + "\n").encode()


def rebase_plan(plan: Plan, source: View, base: View, *, replace_libs: bool = False) -> tuple[Plan, LayeringReport]:
    """The layer that, over `base`, gives what `plan` describes."""
    layer = Plan(
        plan.source,
        plan.profile,
        roots=plan.roots,
        closures=plan.closures,
        excluded=plan.excluded,
        warnings=plan.warnings,
        aliases=plan.aliases,
    )
    report = LayeringReport([], [], [])
    spellings: dict[str, set[str]] = {}
    for spelled, canonical in plan.aliases.items():
        spellings.setdefault(canonical, set()).add(spelled)
    provided: set[str] = set()  # loader spellings the base answers itself
    if not replace_libs:
        for entry in plan.entries.values():
            if entry.kind is EntryKind.FILE and entry.reasons and all(r.kind in _CLOSURE_REASONS for r in entry.reasons):
                found = [s for s in {entry.path, *spellings.get(entry.path, ())} if (n := base.stat(s)) is not None and n.is_file]
                if found:
                    provided.update(spellings.get(entry.path, set()) | {entry.path})
                    report.from_base.append(min(found))
    moved: dict[str, str] = {}
    for entry in plan.ordered():
        if entry.path in provided or (
            entry.kind is EntryKind.SYMLINK
            and entry.reasons
            and all(r.kind is ReasonKind.LINK and r.via in provided for r in entry.reasons)
        ):
            continue  # the base has this library (or the link leading to it) where the loader looks
        target = _rebased(entry.path, base, moved)
        present = base.lstat(target)
        entry = replace(entry, path=target, reasons=list(entry.reasons))
        if entry.kind is EntryKind.HARDLINK:
            entry.target = moved.get(entry.target or "", entry.target)
        if present is not None and _same(entry, present, source, base):
            report.same_in_base.append(target)
            continue
        if present is not None and present.is_file and entry.kind is EntryKind.FILE and target in _ACCOUNT_FILES:
            entry.data = _merge_accounts(target, _entry_bytes(entry, source), base.read_bytes(target).decode("utf-8", "replace"))
            entry.size, entry.source = len(entry.data), None
            report.merged.append(target)
        if present is not None and present.is_symlink and entry.kind is EntryKind.DIR:
            continue  # the base's link stays; what we ship below it was rebased through it
        if present is not None and present.is_dir and entry.kind is EntryKind.SYMLINK:
            report.same_in_base.append(target)
            continue  # a link over the base's directory would hide what the base keeps there
        layer.entries[target] = entry
    layer.dangling, layer.broken_in_source = plan.dangling, {moved.get(p, p) for p in plan.broken_in_source}
    layer.hosts = plan.hosts  # keyed like `roots`, which the checks resolve through the overlay
    _drop_records_of_packages_left_to_the_base(plan, layer, moved)
    _ensure_parents(layer, base)
    return layer, report


def _drop_records_of_packages_left_to_the_base(plan: Plan, layer: Plan, moved: dict[str, str]) -> None:
    """A package whose files all come from the base is the base's to declare (its own status.d)."""
    for name, owned in plan.packages.items():
        kept = tuple(path for path in (moved.get(p, p) for p in owned) if path in layer.entries)
        if kept:
            layer.packages[name] = kept
            continue
        for record in (f"{STATUS_D}/{name}", f"{STATUS_D}/{name}.md5sums"):
            layer.entries.pop(moved.get(record, record), None)


def _entry_bytes(entry: Entry, source: View) -> bytes:
    if entry.data is not None:
        return entry.data
    with source.open(entry.source or entry.path) as stream:
        return stream.read()


def _rebased(path: str, base: View, moved: dict[str, str]) -> str:
    """`path` with its parent resolved through the base's symlinks (the base's layout wins)."""
    if path == "/":
        return path
    parent = base.resolve(paths.parent(path))
    target = paths.join(parent.path, path.rsplit("/", 1)[1]) if not parent.error else path
    if target != path:
        moved[path] = target
    return target


def _same(entry: Entry, node: Node, source: View, base: View) -> bool:
    if entry.kind is EntryKind.DIR:
        return node.is_dir and (node.mode, node.uid, node.gid) == (entry.mode, entry.uid, entry.gid)
    if entry.kind is EntryKind.SYMLINK:
        return node.is_symlink and node.target == entry.target
    if entry.kind is EntryKind.FILE and node.is_file and node.size == entry.size:
        return (node.mode, node.uid, node.gid) == (entry.mode, entry.uid, entry.gid) and _entry_digest(entry, source) == _digest(
            base, node.path
        )
    return False


def _ensure_parents(layer: Plan, base: View) -> None:
    """Every entry's parent exists in the layer or, as a directory, in the base."""
    for path in list(layer.entries):
        for ancestor in ["/", *paths.parents(path)]:
            if ancestor in layer.entries:
                continue
            below = base.lstat(ancestor)
            if below is not None and below.is_dir:
                continue
            layer.entries[ancestor] = Entry(
                ancestor,
                EntryKind.DIR,
                0o755,
                mtime=layer.entries[path].mtime,
                reasons=[Reason(ReasonKind.PARENT, "parent directory", via=path)],
            )


def overlay(layer: Plan, source: View, base: View) -> OverlayView:
    """The base with the layer applied, as the checks and a container would see it."""
    return OverlayView(PlanView(layer, source), base)


def flattened(layer: Plan, merged: OverlayView) -> Plan:
    """The whole filesystem a container would see (the base with the layer applied), as one plan.

    A directory output on a base must hold the base too, or it neither runs in a chroot nor has the
    parents the layer leaves to the base. Every entry reads its bytes from `merged` at its own path;
    hard links stay links; devices, fifos and sockets of the base are left out (a rootfs written
    by distill holds none of its own).
    """
    root = layer.entries.get("/") or Entry("/", EntryKind.DIR, 0o755)
    flat = Plan(layer.source, layer.profile, entries={"/": replace(root, source=None)})
    leaders: dict[object, str] = {}
    for node in merged.walk("/"):
        own = layer.entries.get(node.path)
        if own is not None and own.kind is EntryKind.HARDLINK:
            flat.entries[node.path] = own
            continue
        entry = entry_of(node)
        if entry is None:
            continue
        reasons = own.reasons if own is not None else [Reason(ReasonKind.BASE, "from the base image")]
        if entry.kind is EntryKind.FILE and own is None and node.file_id is not None:
            leader = leaders.setdefault(node.file_id, node.path)
            if leader != node.path:
                flat.entries[node.path] = Entry(
                    node.path, EntryKind.HARDLINK, node.mode, node.uid, node.gid, node.mtime, target=leader, reasons=reasons
                )
                continue
        entry.reasons = reasons
        flat.entries[node.path] = entry
    return flat
