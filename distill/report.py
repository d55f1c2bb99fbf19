"""Say what a plan holds and why: the explain tree, the JSON report, and the size table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distill import __version__
from distill.checks import Finding
from distill.loader import Closure, Link, Rule
from distill.plan import Entry, EntryKind, Plan, ReasonKind
from distill.view import View

if TYPE_CHECKING:
    from distill.pipeline import Prepared

__all__ = ["Totals", "source_totals", "source_totals_ahead", "explain_tree", "explain_path", "json_report", "size_rows"]


@dataclass(frozen=True)
class Totals:
    files: int
    bytes: int


def source_totals(view: View) -> Totals:
    """Regular files in the whole source, for the before/after comparison."""
    return Totals(*view.file_totals())


def source_totals_ahead(view: View) -> Callable[[], Totals]:
    """Start counting the source's totals, on a thread where the view allows (so the count overlaps writing
    the output); the function returned gives them."""
    counted = view.file_totals_ahead()
    return lambda: Totals(*counted())


def _closure_lines(closure: Closure, root_reason: str) -> Iterator[str]:
    children: dict[str, list[Link]] = {}
    for link in closure.links:
        children.setdefault(link.requester, []).append(link)
    yield f"{closure.root}  [{root_reason}]"
    expanded = {closure.root}

    # depth first with an explicit stack: a chain of DT_NEEDED in the source sets the depth
    stack: list[Iterator[tuple[bool, Link]]] = [_with_last(children.get(closure.root, []))]
    prefixes = [""]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
            prefixes.pop()
            continue
        last, link = step
        branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
        yield f"{prefixes[-1]}{branch}{link.path or 'NOT FOUND'}  {link.name} <- {link.requester} ({link.describe()})"
        if link.path and link.path not in expanded and link.rule is not Rule.ALREADY_LOADED:
            expanded.add(link.path)
            stack.append(_with_last(children.get(link.path, [])))
            prefixes.append(prefixes[-1] + indent)


def _with_last(links: list[Link]) -> Iterator[tuple[bool, Link]]:
    return ((index == len(links) - 1, link) for index, link in enumerate(links))


def explain_tree(plan: Plan, *, verbose: bool = False) -> str:
    """Why each shipped path is there: closures as trees, then profile rules, system files, structure."""
    lines: list[str] = []
    for closure in plan.closures:
        entry_reason = _root_reason(plan, closure.root)
        lines.extend(_closure_lines(closure, entry_reason))
        lines.append("")
    groups: dict[str, list[str]] = {}
    structure: list[str] = []
    for entry in plan.ordered():
        first = entry.reasons[0] if entry.reasons else None
        if first is None or first.kind in (ReasonKind.ROOT, ReasonKind.NEEDED):
            continue
        if first.kind in (ReasonKind.LINK, ReasonKind.PARENT):
            structure.append(f"  {entry.path}  ({first.describe()})")
        else:
            groups.setdefault(first.describe() if first.kind is not ReasonKind.PROFILE else first.detail, []).append(_label(entry))
    for heading, members in groups.items():
        lines.append(heading)
        lines.extend(f"  {member}" for member in members)
    lines.extend(hint_lines(plan))
    if structure:
        lines.append(f"symlinks on the way and parent directories: {len(structure)} entries" + (":" if verbose else " (-v lists them)"))
        if verbose:
            lines.extend(structure)
    return "\n".join(lines).rstrip() + "\n"


def hint_lines(plan: Plan) -> list[str]:
    """The hints section: candidates not shipped (`hints: report`); taken ones show up under their reason."""
    candidates = [h for h in plan.hints if plan.entry_for(h.path) is None]
    if not candidates:
        return []
    return [
        "hints: not shipped; named in shipped files' strings (`hints: include` in the profile takes them):",
        *(f"  {h.path}  ({h.describe()})" for h in candidates),
    ]


def _root_reason(plan: Plan, root: str) -> str:
    entry = plan.entry_for(root)
    reasons = entry.reasons if entry else []
    chosen = next((r for r in reasons if r.kind is ReasonKind.ROOT), reasons[0] if reasons else None)
    return chosen.describe() if chosen else "shipped ELF"


def _label(entry: Entry) -> str:
    if entry.kind is EntryKind.SYMLINK:
        return f"{entry.path} -> {entry.target}"
    if entry.kind is EntryKind.HARDLINK:
        return f"{entry.path} (hard link to {entry.target})"
    return entry.path + ("/" if entry.kind is EntryKind.DIR and entry.path != "/" else "")


def explain_path(plan: Plan, path: str) -> str:
    """The chain of reasons that brought one path into the plan, back to a profile rule."""
    entry = plan.entry_for(path)
    if entry is None:
        excluded = " (excluded by the profile's exclude list)" if path in plan.excluded else ""
        return f"{path}: not shipped{excluded}\n"
    lines = [_label(entry)]
    seen = {entry.path}
    frontier = [(entry, 1)]
    while frontier:
        current, depth = frontier.pop(0)
        for reason in current.reasons:
            lines.append("  " * depth + f"<- {reason.describe()}")
            parent = plan.entry_for(reason.via) if reason.via else None
            if parent is not None and parent.path not in seen and reason.kind is not ReasonKind.PARENT:
                seen.add(parent.path)
                frontier.append((parent, depth + 1))
    return "\n".join(lines) + "\n"


def json_report(prepared: Prepared, source: Totals) -> dict[str, Any]:
    """A machine-readable account of the run: entries with reasons, closures, checks, base, image, sizes."""
    plan, profile, checks = prepared.plan, prepared.request.profile, prepared.checks
    report: dict[str, Any] = {
        "distill": __version__,
        "source": plan.source,
        "profile": {"name": profile.name, "files": list(profile.files), "digest": profile.digest},
        "entries": [
            {
                "path": e.path,
                "type": e.kind.value,
                "mode": f"{e.mode:04o}",
                "uid": e.uid,
                "gid": e.gid,
                "size": e.size,
                "mtime": e.mtime,
                **({"target": e.target} if e.target else {}),
                "reasons": [
                    {"kind": r.kind, "detail": r.detail, **({"via": r.via} if r.via else {}), **({"rule": r.rule} if r.rule else {})}
                    for r in e.reasons
                ],
            }
            for e in plan.ordered()
        ],
        "closures": [
            {
                "root": c.root,
                "loader": c.flavor,
                "links": [
                    {"requester": ln.requester, "name": ln.name, "path": ln.path, "rule": ln.rule, "detail": ln.detail} for ln in c.links
                ],
            }
            for c in plan.closures
        ],
        "checks": {
            "errors": [str(f) for f in checks.errors],
            "warnings": [str(f) for f in checks.warnings],
            "findings": [_finding(f) for f in [*checks.errors, *checks.warnings]],
        },
        "excluded": plan.excluded,
        "hints": [
            {"path": h.path, "kind": h.kind, "named_by": h.named_by, "shipped": plan.entry_for(h.path) is not None} for h in plan.hints
        ],
        "warnings": prepared.warnings,
        "summary": _summary(prepared, source),
        "written": prepared.written,
    }
    if prepared.layering is not None:
        report["base"] = {
            "name": prepared.base_name,
            "digest": prepared.base.manifest_digest if prepared.base else None,
            "same_in_base": prepared.layering.same_in_base,
            "provided_by_base": prepared.layering.from_base,
            "merged_with_base": prepared.layering.merged,
        }
    if prepared.built is not None:
        report["image"] = {
            "manifest_digest": prepared.built.manifest_digest,
            "config_digest": prepared.built.config_blob.descriptor.digest,
            "layer_digest": prepared.built.layers[-1].descriptor.digest,
            "diff_id": prepared.built.config["rootfs"]["diff_ids"][-1],
        }
    return report


def _summary(prepared: Prepared, source: Totals) -> dict[str, Any]:
    plan = prepared.plan
    output = plan.file_bytes()
    summary: dict[str, Any] = {
        "source_files": source.files,
        "source_bytes": source.bytes,
        "output_files": plan.count(EntryKind.FILE),
        "output_bytes": output,
        "output_entries": len(plan.entries),
        "hints": sum(1 for h in plan.hints if plan.entry_for(h.path) is None),
    }
    shipped = output
    if prepared.output is not None:  # on a base, what a container gets is the base plus the layer
        image = source_totals(prepared.output)
        summary["image_files"], summary["image_bytes"] = image.files, image.bytes
        shipped = image.bytes
    summary["ratio"] = round(source.bytes / shipped, 2) if shipped else None
    return summary


def size_rows(prepared: Prepared, source: Totals) -> list[tuple[str, ...]]:
    """The before/after table, header first: the source, the distilled layer, and (on a base) the whole image."""
    summary = _summary(prepared, source)
    on_base = "image_bytes" in summary
    ratio = summary["ratio"]
    rows: list[tuple[str, ...]] = [
        ("", "source", "distilled", "with base"),
        ("regular files", f"{source.files:,}", f"{summary['output_files']:,}", f"{summary.get('image_files', 0):,}"),
        ("bytes in files", _human(source.bytes), _human(summary["output_bytes"]), _human(summary.get("image_bytes", 0))),
        ("entries (files, dirs, links)", "", f"{summary['output_entries']:,}", ""),
        ("size ratio", "", "" if on_base else f"{ratio:.1f}x smaller" if ratio else "-", f"{ratio:.1f}x smaller" if ratio else "-"),
    ]
    return rows if on_base else [row[:3] for row in rows]


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1000
    return f"{size} B"


def _finding(finding: Finding) -> dict[str, str]:
    fields = {"kind": finding.kind.value, "path": finding.path, "library": finding.library, "version": finding.version}
    return {key: value for key, value in fields.items() if value is not None} | {"message": finding.message}
