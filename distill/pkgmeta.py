"""Keep the output visible to vulnerability scanners: the package records of what ships.

For every dpkg package that contributed at least one shipped file, distroless's layout:
`/var/lib/dpkg/status.d/<pkg>` (its stanza from the source's status file) and
`/var/lib/dpkg/status.d/<pkg>.md5sums` (its md5sums, filtered to the files that ship), plus its
`/usr/share/doc/<pkg>/copyright`. For apk sources, `/lib/apk/db/installed` holds the contributing
packages' records. Trivy, Grype and Syft read both. `/etc/os-release` comes from `system.os-release`.
"""

from __future__ import annotations

from distill.builder import PlanBuilder, PlanContext
from distill.packages import DbKind, PackageDb
from distill.plan import Entry, EntryKind, Reason, ReasonKind
from distill.specs import Switch

__all__ = ["add_package_metadata", "contributions"]

STATUS_D = "/var/lib/dpkg/status.d"


def contributions(db: PackageDb, entries: dict[str, Entry]) -> dict[str, list[str]]:
    """Package -> shipped paths it owns (files and links that come from the source)."""
    candidates = {
        entry.path
        for entry in entries.values()
        if entry.kind in (EntryKind.FILE, EntryKind.HARDLINK, EntryKind.SYMLINK) and entry.data is None
    }
    out: dict[str, list[str]] = {}
    for path, owner in db.owners(candidates).items():
        out.setdefault(owner, []).append(path)
    return {name: sorted(found) for name, found in sorted(out.items())}


def add_package_metadata(builder: PlanBuilder, context: PlanContext) -> None:
    """Write the records of every contributing package (`system.package-metadata`)."""
    mode = context.profile.system.package_metadata
    if mode is Switch.NO:
        return
    db = context.package_db()
    if db is None:
        if mode is Switch.YES:
            builder.issue("system.package-metadata: the source has no dpkg or apk database")
        return
    shipped = contributions(db, builder.plan.entries)
    builder.plan.packages = {name: tuple(found) for name, found in shipped.items()}
    if not shipped:
        return
    reason = Reason(ReasonKind.SYSTEM, "system.package-metadata: scanners read it")
    if db.kind is DbKind.APK:
        records = "\n\n".join(db.packages[name].record for name in shipped) + "\n\n"
        builder.generate("/lib/apk/db/installed", records.encode(), reason)
        return
    parents: dict[str, str] = {}  # canonical directories, shared by every package's lookups
    for name, found in shipped.items():
        package = db.packages[name]
        builder.generate(f"{STATUS_D}/{name}", (package.record + "\n").encode(), reason)
        kept = set(found)
        names = {path.rsplit("/", 1)[-1] for path in found}  # resolve only the lines that can match
        lines = [
            f"{digest}  {path.lstrip('/')}\n"
            for digest, path in db.md5sums(name)
            if path.rsplit("/", 1)[-1] in names and db.canonical(path, parents) in kept
        ]
        if lines:
            builder.generate(f"{STATUS_D}/{name}.md5sums", "".join(lines).encode(), reason)
        copyright_file = f"/usr/share/doc/{name}/copyright"
        if context.view.stat(copyright_file) is not None:
            builder.ship(copyright_file, Reason(ReasonKind.SYSTEM, f"system.package-metadata: licence of {name}"))
