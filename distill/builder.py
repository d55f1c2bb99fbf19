"""The one way entries get into a plan, and the read-only facts every collector plans from.

The planner and the collectors (`runtime`, `system`, `pkgmeta`) never touch a `Plan` directly:
they call `PlanBuilder.ship` (an object of the source, with the symlinks on the way to it),
`PlanBuilder.generate` (a file distill writes) or `PlanBuilder.add`, and report what the profile
asks of this source and cannot have through `PlanBuilder.issue`. Collectors read the source only
through a `PlanContext`, so each one can be tested with a builder and a context of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill import paths
from distill.accounts import AccountDb
from distill.errors import PlanError, ProfileError, SourceError
from distill.loader import Loader
from distill.packages import PackageDb, open_package_db
from distill.plan import Entry, EntryKind, Plan, Reason, ReasonKind, entry_of
from distill.profile import Profile
from distill.schema import SHADOW_FILES
from distill.view import Node, NodeType, View

__all__ = ["PlanContext", "PlanBuilder", "RUNTIME_PROVIDED"]

RUNTIME_PROVIDED = ("/dev/", "/proc/", "/sys/")  # a container runtime mounts these; links into them do not dangle


@dataclass
class PlanContext:
    """What collectors plan from: the source, the profile, the loader model and the accounts in use."""

    view: View
    profile: Profile
    loader: Loader
    accounts: AccountDb
    users: frozenset[str] = frozenset({"root"})  # accounts the profile asked for
    groups: frozenset[str] = frozenset({"root"})
    _package_db: PackageDb | None = field(default=None, init=False, repr=False)
    _package_db_read: bool = field(default=False, init=False, repr=False)

    def package_db(self) -> PackageDb | None:
        """The source's dpkg or apk database (read once, on first use)."""
        if not self._package_db_read:
            self._package_db = open_package_db(self.view)
            self._package_db_read = True
        return self._package_db


class PlanBuilder:
    """Adds entries to one plan, merging entries for the same path and refusing real conflicts."""

    def __init__(self, view: View, plan: Plan, exclude: tuple[str, ...] = (), *, keep_setuid: bool = False) -> None:
        self.view = view
        self.plan = plan
        self.exclude = exclude
        self.keep_setuid = keep_setuid  # system.setuid: keep
        self.issues: list[str] = []
        # symlinks shipped as themselves whose targets are not shipped yet -> (whole trees?, the rule naming the link)
        self.pending_links: dict[str, tuple[bool, str | None]] = {}
        self._links: dict[str, bool] = {}  # every symlink shipped as itself -> whether its target's tree was asked for
        self._reasons: set[tuple[str, Reason]] = set()  # (path, reason) already given: a directory can have thousands

    # -- problems -------------------------------------------------------------------------------

    def issue(self, message: str) -> None:
        """Something the profile asks of this source that it cannot have (raised together, later)."""
        self.issues.append(message)

    def warn(self, message: str) -> None:
        self.plan.warnings.append(message)

    def raise_issues(self) -> None:
        if self.issues:
            raise ProfileError(self.issues[0], issues=self.issues)

    # -- entries --------------------------------------------------------------------------------

    def excluded(self, path: str) -> bool:
        return any(paths.glob_match(pattern, path) for pattern in self.exclude)

    def add(self, entry: Entry, reason: Reason) -> Entry:
        """Put `entry` in the plan, merging with an entry already at its path when compatible."""
        entries = self.plan.entries
        existing = entries.get(entry.path)
        given = (entry.path, reason)
        if existing is None:
            entry.reasons.append(reason)
            self._reasons.update((entry.path, given_before) for given_before in entry.reasons)
            entries[entry.path] = entry
            return entry
        if existing.same_object(entry) or existing.kind is entry.kind is EntryKind.DIR:
            if entry.explicit and not existing.explicit:
                entry.reasons = existing.reasons
                entries[entry.path] = entry
                existing = entry
            if given not in self._reasons:
                self._reasons.add(given)
                existing.reasons.append(reason)
            return existing
        if existing.explicit != entry.explicit:  # a profile rule beats a default or a dependency
            winner = existing if existing.explicit else entry
            if winner is entry:
                winner.reasons = [*existing.reasons, reason]
                self._reasons.add(given)
            entries[entry.path] = winner
            return winner
        first = existing.reasons[0].describe() if existing.reasons else "an earlier rule"
        raise PlanError(
            f"{entry.path}: {first} ships a {existing.kind.value} but {reason.describe()} ships a different "
            f"{entry.kind.value}; exclude one or give the path one rule"
        )

    def ship(
        self,
        path: str,
        reason: Reason,
        *,
        follow: bool = True,
        explicit: bool = False,
        mode: int | None = None,
        owner: tuple[int, int] | None = None,
        whole: bool = False,
        named: str | None = None,
    ) -> Entry | None:
        """Ship what `path` names in the source, with every symlink on the way to it. A symlink shipped as
        itself (`follow=False`) gets its target too, later (`links.close_links`): a linked directory's whole
        tree when the rule takes whole trees (`whole`). `named`: the origin of a rule that names the link
        itself, which hears about a link that dangles in the source already (nobody else does)."""
        if self.excluded(path):
            self.plan.excluded.append(path)
            return None
        found = self.view.resolve(path, follow=follow)
        if found.error:
            raise SourceError(f"{self.view.name}: {path}: {found.error}")
        for link in found.links:
            self.add(entry_from_node(link), Reason(ReasonKind.LINK, "symlink on the way", via=path))
        if found.node is None:
            return None
        self.plan.aliases[path] = found.path
        if found.path != paths.clean(path) and self.excluded(found.path):
            self.plan.excluded.append(found.path)
            return None
        if any(part.startswith(".wh.") for part in paths.split(found.path)):
            self.warn(f"{path}: not shipped: a name starting with .wh. would act as a whiteout in a layer")
            return None
        if found.path in SHADOW_FILES and found.node.type is NodeType.FILE:
            self.warn(
                f"{path}: not shipped: the source's {found.path} holds password hashes "
                "(system.shadow writes a locked one for the shipped accounts)"
            )
            return None
        if found.node.type not in (NodeType.FILE, NodeType.DIR, NodeType.SYMLINK):
            self.warn(f"{path}: not shipped: a {found.node.type.value} (the runtime provides device nodes)")
            return None
        if mode is None and self.keep_setuid:
            mode = found.node.mode
        entry = self.add(entry_from_node(found.node, explicit=explicit, mode=mode, owner=owner), reason)
        if entry.kind is EntryKind.SYMLINK and self._links.get(entry.path) in (None, False) and self._links.get(entry.path) != whole:
            self._links[entry.path] = whole
            self.pending_links[entry.path] = (whole, named)
        return entry

    def rebase(self, path: str, *, follow: bool) -> str:
        """Canonical location for a generated entry at `path`, shipping the source's symlinks on the way."""
        found = self.view.resolve(path, follow=follow)
        if found.error:
            raise SourceError(f"{self.view.name}: {path}: {found.error}")
        for link in found.links:
            self.add(entry_from_node(link), Reason(ReasonKind.LINK, "symlink on the way", via=path))
        return found.path

    def generate(self, path: str, data: bytes, reason: Reason, *, mode: int = 0o644) -> Entry:
        """A file distill writes itself, at `path` as the source's symlinks place it."""
        target = self.rebase(path, follow=False)
        return self.add(Entry(target, EntryKind.FILE, mode, size=len(data), data=data), reason)


def entry_from_node(node: Node, *, explicit: bool = False, mode: int | None = None, owner: tuple[int, int] | None = None) -> Entry:
    """The entry that ships a source object as it is (setuid/setgid bits only on request)."""
    entry = entry_of(node)
    if entry is None:
        raise ValueError(f"{node.path}: a {node.type.value} cannot be shipped")  # callers ship files, directories and links
    if mode is None:
        mode = node.mode & ~0o6000 if entry.kind is EntryKind.FILE else node.mode
    entry.mode, (entry.uid, entry.gid), entry.explicit = mode, owner or (node.uid, node.gid), explicit
    return entry
