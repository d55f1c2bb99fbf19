"""Keep the output visible to vulnerability scanners: the package records of what ships.

For every dpkg package that contributed at least one shipped file, distroless's layout:
`/var/lib/dpkg/status.d/<pkg>` (its stanza from the source's status file) and
`/var/lib/dpkg/status.d/<pkg>.md5sums` (its md5sums, filtered to the files that ship), plus its
`/usr/share/doc/<pkg>/copyright`. For apk sources, `/lib/apk/db/installed` holds the contributing
packages' records. Trivy, Grype and Syft read both. `/etc/os-release` comes from `system.os-release`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distill.packages import PackageDb
from distill.plan import Entry, EntryKind, Reason

if TYPE_CHECKING:
    from distill.planner import Planner

__all__ = ["add_package_metadata", "contributions"]

STATUS_D = "/var/lib/dpkg/status.d"


def contributions(db: PackageDb, entries: dict[str, Entry]) -> dict[str, list[str]]:
    """Package -> shipped paths it owns (files and links that come from the source)."""
    candidates = {entry.path for entry in entries.values()
                  if entry.kind in (EntryKind.FILE, EntryKind.HARDLINK, EntryKind.SYMLINK) and entry.data is None}
    out: dict[str, list[str]] = {}
    for path, owner in db.owners(candidates).items():
        out.setdefault(owner, []).append(path)
    return {name: sorted(found) for name, found in sorted(out.items())}


def add_package_metadata(planner: Planner) -> None:
    """Write the records of every contributing package (`system.package-metadata`)."""
    mode = planner.profile.system.package_metadata
    if mode == "no":
        return
    db = planner.package_db()
    if db is None:
        if mode == "yes":
            planner.issues.append("system.package-metadata: the source has no dpkg or apk database")
        return
    shipped = contributions(db, planner.plan.entries)
    planner.plan.packages = {name: tuple(found) for name, found in shipped.items()}
    if not shipped:
        return
    reason = Reason("system", "system.package-metadata: scanners read it")
    if db.kind == "apk":
        records = "\n\n".join(db.packages[name].record for name in shipped) + "\n\n"
        _generated(planner, "/lib/apk/db/installed", records.encode(), reason)
        return
    for name, found in shipped.items():
        package = db.packages[name]
        _generated(planner, f"{STATUS_D}/{name}", (package.record + "\n").encode(), reason)
        kept = set(found)
        lines = [f"{digest}  {path.lstrip('/')}\n" for digest, path in db.md5sums(name) if db.canonical(path) in kept]
        if lines:
            _generated(planner, f"{STATUS_D}/{name}.md5sums", "".join(lines).encode(), reason)
        copyright_file = f"/usr/share/doc/{name}/copyright"
        if planner.view.stat(copyright_file) is not None:
            planner.ship(copyright_file, Reason("system", f"system.package-metadata: licence of {name}"))


def _generated(planner: Planner, path: str, data: bytes, reason: Reason) -> None:
    target = planner.rebase(path, follow=False)
    planner.add(Entry(target, EntryKind.FILE, 0o644, size=len(data), data=data), reason)
