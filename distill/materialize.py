"""An image's merged filesystem written out as a directory, for the two commands that must run it.

`learn` and `verify --run` need a real directory to chroot into or to hand to runc; every other
command reads layers in place. The copy goes through the rootfs transport's writer (a plan holding every object
of the view), so owners, modes, links and times are what the image says.
"""

from __future__ import annotations

from pathlib import Path

from distill.plan import Entry, EntryKind, Plan, entry_of
from distill.refs import Ref
from distill.transports.rootfs import write_plan
from distill.view import View

__all__ = ["materialize"]


def materialize(view: View, dest: Path) -> Path:
    """Write every file, directory and symlink of `view` into the new directory `dest` (devices are left out)."""
    root = view.lstat("/")
    plan = Plan(source=view.name, profile="materialize")
    plan.entries["/"] = Entry("/", EntryKind.DIR, root.mode if root else 0o755, mtime=root.mtime if root else 0)
    for node in view.walk("/"):
        entry = entry_of(node)
        if entry is not None:
            plan.entries[node.path] = entry
    write_plan(plan, view, Ref("rootfs", str(dest)))
    return dest
