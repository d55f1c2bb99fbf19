"""Turn what a traced run touched into a reviewable profile draft, or into what a profile lacks.

Only paths that exist in the source count (a file the run creates needs only its directory), and never
anything under /proc, /sys or /dev. Programs the run executed become `binaries`; ELF files it opened
that no program's closure contains (plugins loaded with dlopen) become `binaries` too, so their own
closures ship; every other file becomes a `paths` entry, and a directory whose every entry was used
collapses into one glob. Files distill writes itself (passwd, group, nsswitch.conf, ld.so.cache,
localtime) are left to it. Each entry carries a comment saying what touched it.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import defaultdict
from dataclasses import dataclass, field

from distill import paths
from distill.accounts import parse_group, parse_passwd
from distill.elf import is_elf
from distill.errors import ElfError, SourceError
from distill.learn.trace import Observations, Touch
from distill.loader import Loader
from distill.plan import PlanView
from distill.planner import make_plan
from distill.profile import Profile
from distill.view import View

__all__ = ["Needs", "needs_of", "render_draft", "missing_from"]

_HIDDEN = ("/proc", "/sys", "/dev")
# written by distill itself (system: keys); the source's copies would be wrong or unsafe in the output
_GENERATED = {
    "/etc/ld.so.cache": "ld.so.cache",
    "/etc/passwd": "accounts",
    "/etc/group": "accounts",
    "/etc/shadow": "never shipped",
    "/etc/gshadow": "never shipped",
    "/etc/nsswitch.conf": "system.nsswitch",
    "/etc/localtime": "system.timezone",
    "/etc/ld.so.preload": "never shipped",
}
_PLAIN = re.compile(r"^/[A-Za-z0-9_/.+@~%-]*(/\*\*?)?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_HOW_ORDER = ("executed", "opened", "written", "created", "expected", "listed", "looked up")


@dataclass
class Needs:
    """What the run needed from the source, each with the touches that show it."""

    binaries: dict[str, list[Touch]] = field(default_factory=dict)  # spelled path -> touches
    modules: dict[str, list[Touch]] = field(default_factory=dict)  # ELF files opened outside every closure
    files: dict[str, list[Touch]] = field(default_factory=dict)
    directories: dict[str, list[Touch]] = field(default_factory=dict)  # listed or written into, nothing below used
    users: dict[str, str] = field(default_factory=dict)  # name -> "setuid(33) by /usr/sbin/nginx"
    groups: dict[str, str] = field(default_factory=dict)
    left_to_distill: dict[str, str] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)  # directories the run read the entries of
    in_closures: int = 0


def _hidden(path: str) -> bool:
    return any(path == top or path.startswith(top + "/") for top in _HIDDEN)


def needs_of(found: Observations, view: View) -> Needs:
    """Sort the touches of a run into binaries, run-time modules, files, directories and accounts."""
    needs = Needs()
    by_path: dict[str, list[Touch]] = defaultdict(list)
    for touch in found.touches:
        if not _hidden(touch.path):
            by_path[touch.path].append(touch)
    loader = Loader(view)
    opened_elf: list[str] = []  # ELF files the run opened without executing them
    for path, touches in by_path.items():
        resolved = view.resolve(path)
        created = [t for t in touches if t.how == "created"]
        if created and (resolved.node is None or len(created) == len(touches)):
            # made by the run (or overwritten whole): its content is not needed, only a directory to create it in
            parent = view.resolve(paths.parent(path))
            if paths.parent(path) != "/" and parent.node is not None and parent.node.is_dir and not _hidden(parent.path):
                needs.directories.setdefault(paths.parent(path), []).extend(created)
            continue
        if resolved.node is None or _hidden(resolved.path):
            continue
        if path in _GENERATED or resolved.path in _GENERATED:
            needs.left_to_distill[path] = _GENERATED.get(path) or _GENERATED[resolved.path]
            continue
        if resolved.node.is_dir:
            if path != "/" and any(t.how in ("listed", "expected") for t in touches):
                needs.directories.setdefault(path, []).extend(touches)
            continue
        if not resolved.node.is_file:
            continue
        executed = any(t.how == "executed" for t in touches)
        if executed:
            needs.binaries[path] = touches
        elif _is_elf(view, resolved.path):
            opened_elf.append(path)
        else:
            needs.files[path] = touches
    in_closure: set[str] = set()
    for root in [*needs.binaries, *opened_elf]:
        try:
            closure = loader.closure(root)
        except (ElfError, SourceError):
            continue
        if root in needs.binaries or view.resolve(root).path not in in_closure:
            in_closure.update(view.resolve(o).path for o in closure.objects[1:])
    for path in opened_elf:
        if view.resolve(path).path in in_closure:
            needs.in_closures += 1
        else:
            needs.modules[path] = by_path[path]
    needs.listed = {d for d, touches in needs.directories.items() if any(t.how == "listed" for t in touches)}
    needs.directories = {
        d: t
        for d, t in needs.directories.items()
        if not any(p.startswith(d.rstrip("/") + "/") for p in (*needs.files, *needs.modules, *needs.binaries))
    }
    _accounts(found, view, needs)
    return needs


def _is_elf(view: View, canonical: str) -> bool:
    try:
        with view.open(canonical) as stream:
            return is_elf(stream.read(4))
    except OSError:
        return False


def _accounts(found: Observations, view: View, needs: Needs) -> None:
    def table(path: str) -> str:
        try:
            return view.read_bytes(path, 1 << 20).decode("utf-8", "replace")
        except (FileNotFoundError, IsADirectoryError):
            return ""

    users = {a.uid: a.name for a in reversed(parse_passwd(table("/etc/passwd")))}
    groups = {g.gid: g.name for g in reversed(parse_group(table("/etc/group")))}
    for kind, number, by in found.ids:
        names, into, call = (users, needs.users, "setuid") if kind == "user" else (groups, needs.groups, "setgid")
        if number in names:
            into.setdefault(names[number], f"{call}({number}) by {by}")


def _describe(touches: list[Touch]) -> str:
    """`opened by /usr/bin/dot, looked up by /bin/sh`"""
    seen: dict[str, list[str]] = defaultdict(list)
    for touch in touches:
        if touch.by not in seen[touch.how]:
            seen[touch.how].append(touch.by)
    parts = []
    for how in _HOW_ORDER:
        if how in seen:
            who = [b for b in seen[how] if b]
            parts.append(f"{how} by {', '.join(who[:3])}{' ...' if len(who) > 3 else ''}" if who else how)
    return "; ".join(parts)


def _describe_directory(touches: list[Touch]) -> str:
    """`directory: listed by X` or `directory: 2 files created in it (a.log, b.log) by X`."""
    listed = [t for t in touches if t.how != "created"]
    created = sorted({t.path for t in touches if t.how == "created"})
    parts = [_describe(listed)] if listed else []
    if created:
        names = ", ".join(paths.split(c)[-1] for c in created[:3]) + (" ..." if len(created) > 3 else "")
        by = ", ".join(sorted({t.by for t in touches if t.how == "created" and t.by})[:3])
        parts.append(f"{len(created)} file{'s' if len(created) > 1 else ''} created in it ({names}) by {by}")
    return "directory: " + "; ".join(parts)


def _group(files: dict[str, list[Touch]], listed: set[str], view: View) -> dict[str, tuple[str, list[Touch]]]:
    """Collapse into `DIR/**` a directory whose every entry the run used, or that it listed and then
    used several entries of (it reads whatever is there); the rest stay as they are."""
    covered: dict[str, list[Touch]] = dict(files)
    by_dir: dict[str, set[str]] = defaultdict(set)
    for path in files:
        by_dir[paths.parent(path)].add(path.rsplit("/", 1)[1])
    collapsed: dict[str, tuple[int, list[Touch]]] = {}
    for directory in sorted(by_dir, key=lambda d: -len(paths.split(d))):
        if directory == "/":
            continue
        resolved = view.resolve(directory)
        if resolved.node is None or not resolved.node.is_dir:
            continue
        names = view.listdir(resolved.path)
        whole = len(names) >= 2 and not set(names) - by_dir[directory]
        if not whole and not (directory in listed and len(by_dir[directory]) >= 2):
            continue
        inner = [p for p in list(covered) if p.startswith(directory + "/")]
        touches = [t for p in inner for t in covered.pop(p)]
        count = sum(collapsed.pop(p, (1, []))[0] for p in inner)
        covered[directory] = touches
        collapsed[directory] = (count, touches)
        by_dir[paths.parent(directory)].add(directory.rsplit("/", 1)[1])
    out: dict[str, tuple[str, list[Touch]]] = {}
    for path, touches in covered.items():
        if path in collapsed:
            how = "listed, then" if path in listed else "all"
            out[f"{path}/**"] = (f"{how} {collapsed[path][0]} entries used: {_describe(touches)}", touches)
        else:
            out[path] = (_describe(touches), touches)
    return out


def _scalar(text: str) -> str:
    return text if _PLAIN.match(text) else json.dumps(text)


def _lines(items: list[tuple[str, str]], width: int = 64) -> list[str]:
    return [f"{text:<{width}} # {comment}" if comment else text for text, comment in items]


def render_draft(needs: Needs, view: View, *, name: str, argv: list[str], source: str, run_note: str) -> str:
    """The draft profile as YAML text, one comment per entry."""
    out = [
        f"# Drafted by `distill learn` from a traced run of: {shlex.join(argv)}",
        f"# source: {source}; {run_note}",
        "# Review every entry: a run shows what it used, not what other inputs would need.",
        f"# Left out: {needs.in_closures} libraries the loader model finds from the binaries' headers; "
        "anything under /proc, /sys, /dev or created by the run.",
    ]
    if needs.left_to_distill:
        out.append("# Written by distill itself: " + ", ".join(f"{p} ({k})" for p, k in sorted(needs.left_to_distill.items())))
    out += [
        "schema: distill/v1",
        f"name: {name}",
        f"description: {json.dumps('drafted by distill learn: ' + shlex.join(argv))}",
        "extends: [glibc]",
    ]
    binaries = [(f"  - {_scalar(p)}", _describe(t)) for p, t in sorted(needs.binaries.items(), key=lambda i: paths.sort_key(i[0]))]
    binaries += [
        (f"  - {_scalar(p)}", f"loaded at run time (no program's closure has it): {_describe(t)}")
        for p, t in sorted(needs.modules.items(), key=lambda i: paths.sort_key(i[0]))
    ]
    if binaries:
        out.append("binaries:")
        out += _lines(binaries)
    grouped = _group(needs.files, needs.listed, view)
    entries = [(f"  {_scalar(p)}: {{}}", comment) for p, (comment, _) in grouped.items()]
    entries += [(f"  {_scalar(d.rstrip('/') + '/')}: {{}}", _describe_directory(t)) for d, t in needs.directories.items()]
    if entries:
        out.append("paths:")
        out += _lines(sorted(entries, key=lambda e: paths.sort_key(e[0].strip().split(":")[0].strip('"'))))
    if needs.users or needs.groups:
        out.append("accounts:")
        for key, names in (("users", needs.users), ("groups", needs.groups)):
            if names:
                out.append(f"  {key}:")
                out += _lines([(f"    - {n if _NAME.match(n) else json.dumps(n)}", why) for n, why in names.items()])
    entrypoint = next(iter(needs.binaries), None)
    if entrypoint is not None and argv:
        full = [entrypoint, *argv[1:]] if paths.split(entrypoint)[-1] == paths.split(argv[0])[-1] else argv
        out += ["image:", f"  entrypoint: {json.dumps(full)}"]
    return "\n".join(out) + "\n"


def missing_from(needs: Needs, view: View, profile: Profile) -> list[str]:
    """What the run needed that `profile`'s plan on `view` lacks, one line each."""
    plan = make_plan(view, profile)
    output = PlanView(plan, view)
    lines = []
    for group in (needs.binaries, needs.modules, needs.files):
        for path, touches in sorted(group.items()):
            if output.resolve(path).node is None:
                lines.append(f"{path}: {_describe(touches)}; not in the profile's output")
    for path, touches in sorted(needs.directories.items()):
        node = output.resolve(path).node
        if node is None or not node.is_dir:
            lines.append(f"{path}/: directory {_describe(touches)}; not in the profile's output")
    for key, names in (("/etc/passwd", needs.users), ("/etc/group", needs.groups)):
        entry = plan.entries.get(key)
        table = entry.data.decode("utf-8", "replace") if entry is not None and entry.data is not None else ""
        present = {line.split(":")[0] for line in table.splitlines()}
        for name, why in names.items():
            if name not in present:
                lines.append(f"account {name}: {why}; not in the output's {key}")
    return lines
