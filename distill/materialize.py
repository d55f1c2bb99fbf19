"""An image's merged filesystem written out as a directory, for the two commands that must run it.

`learn` and `verify --run` need a real directory to chroot into or to hand to runc; every other
command reads layers in place. The copy goes through the rootfs transport's writer (a plan holding every object
of the view), so owners, modes, links and times are what the image says.
"""

from __future__ import annotations

from pathlib import Path

from distill.plan import Entry, EntryKind, Plan
from distill.refs import Ref
from distill.transports.rootfs import write_plan
from distill.view import NodeType, View

__all__ = ["materialize"]

_KINDS = {NodeType.FILE: EntryKind.FILE, NodeType.DIR: EntryKind.DIR, NodeType.SYMLINK: EntryKind.SYMLINK}


def materialize(view: View, dest: Path) -> Path:
    """Write every file, directory and symlink of `view` into the new directory `dest` (devices are left out)."""
    root = view.lstat("/")
    plan = Plan(source=view.name, profile="materialize")
    plan.entries["/"] = Entry("/", EntryKind.DIR, root.mode if root else 0o755, mtime=root.mtime if root else 0)
    for node in view.walk("/"):
        kind = _KINDS.get(node.type)
        if kind is None:
            continue
        plan.entries[node.path] = Entry(
            node.path,
            kind,
            node.mode,
            node.uid,
            node.gid,
            node.mtime,
            node.size,
            source=node.path if kind is EntryKind.FILE else None,
            target=node.target,
        )
    write_plan(plan, view, Ref("rootfs", str(dest)))
    return dest
