"""Apply a profile and the loader model to a source view; produce the plan. Writes nothing.

Order: accounts the profile names, binaries (roots), whole packages, `paths` rules, the closures
of the roots and of every other shipped ELF, runtime-loaded files (and their closures), system
files, package records, parent directories, passwd/group (which depend on the owners of
everything else), hard links, and times. Problems with what the profile asks of this source are
collected and raised together as one ProfileError.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

from distill import paths
from distill.accounts import AccountDb, parse_group, parse_passwd
from distill.elf import is_elf
from distill.errors import ElfError, PlanError, ProfileError, SourceError
from distill.loader import Loader
from distill.packages import PackageDb, open_package_db
from distill.plan import Entry, EntryKind, Plan, Reason
from distill.profile import Profile
from distill.specs import PathSpec
from distill.view import Node, NodeType, View

__all__ = ["Planner", "make_plan", "DEFAULT_PATH", "PACKAGE_EXCLUDES"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# what `packages:` leaves out: documentation a running program does not read (copyright files ship with
# the package records, see pkgmeta)
PACKAGE_EXCLUDES = ("/usr/share/doc/**", "/usr/share/man/**", "/usr/share/info/**", "/usr/share/lintian/**")
_SHEBANG_LIMIT = 256  # the kernel reads at most this much of a #! line
_MAX_SHEBANG_DEPTH = 4
_RUNTIME_PROVIDED = ("/dev/", "/proc/", "/sys/")


def make_plan(view: View, profile: Profile, *, epoch: int | None = None, library_path: tuple[str, ...] = ()) -> Plan:
    """The plan for `profile` on `view`; `epoch` is SOURCE_DATE_EPOCH when set; `library_path` the image's LD_LIBRARY_PATH."""
    return Planner(view, profile, epoch, library_path).run()


class Planner:
    """One planning run. System files are added by `distill.system` through `ship`/`add`."""

    def __init__(self, view: View, profile: Profile, epoch: int | None = None, library_path: tuple[str, ...] = ()) -> None:
        self.view = view
        self.profile = profile
        self.epoch = epoch
        self.library_path = library_path
        self.loader = Loader(view, cwd=profile.image.workdir or "/", library_path=library_path)
        self.plan = Plan(source=view.name, profile=profile.name)
        self.issues: list[str] = []
        self.accounts = AccountDb(parse_passwd(self._text("/etc/passwd")), parse_group(self._text("/etc/group")))
        self.users: set[str] = {"root"}
        self.groups: set[str] = {"root"}
        self._covered: set[str] = set()  # canonical paths loaded as part of some closure
        self._not_elf: set[str] = set()  # shipped files already found not to be ELF
        self._roots: list[tuple[str, str]] = []
        self._package_db: PackageDb | None | bool = False  # False: not read yet

    def run(self) -> Plan:
        from distill import pkgmeta, runtime, system  # these add entries through the planner's helpers

        self._profile_accounts()
        self._binaries()
        self._packages()
        self._paths()
        self.raise_issues()
        for path, origin in self._roots:
            self._root(path, origin, explicit=True)
        self._shipped_elves()
        runtime.add_runtime_files(self)
        self._shipped_elves()
        system.add_system_files(self)
        pkgmeta.add_package_metadata(self)
        self.raise_issues()
        self._parents()
        system.add_account_files(self)
        self._parents()
        self._hardlinks()
        self._times()
        self.plan.parsed = self.loader.parsed()
        self.plan.library_path = self.library_path
        return self.plan

    # -- helpers ---------------------------------------------------------------------------

    def _text(self, path: str) -> str:
        try:
            return self.view.read_bytes(path, 1 << 22).decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def raise_issues(self) -> None:
        if self.issues:
            raise ProfileError(self.issues[0], issues=self.issues)

    def package_db(self) -> PackageDb | None:
        """The source's dpkg or apk database (read once, on first use)."""
        if self._package_db is False:
            self._package_db = open_package_db(self.view)
        return self._package_db  # type: ignore[return-value]

    def excluded(self, path: str) -> bool:
        return any(paths.glob_match(pattern, path) for pattern in self.profile.exclude)

    def add(self, entry: Entry, reason: Reason) -> Entry:
        """Put `entry` in the plan, merging with an entry already at its path when compatible."""
        existing = self.plan.entries.get(entry.path)
        if existing is None:
            entry.reasons.append(reason)
            self.plan.entries[entry.path] = entry
            return entry
        if existing.same_object(entry) or existing.kind is entry.kind is EntryKind.DIR:
            if entry.explicit and not existing.explicit:
                entry.reasons = existing.reasons
                self.plan.entries[entry.path] = entry
                existing = entry
            existing.reasons.append(reason)
            return existing
        if existing.explicit != entry.explicit:  # a profile rule beats a default or a dependency
            winner = existing if existing.explicit else entry
            winner.reasons = [*existing.reasons, reason] if winner is entry else winner.reasons
            self.plan.entries[entry.path] = winner
            return winner
        first = existing.reasons[0].describe() if existing.reasons else "an earlier rule"
        raise PlanError(
            f"{entry.path}: {first} ships a {existing.kind.value} but {reason.describe()} ships a different "
            f"{entry.kind.value}; exclude one or give the path one rule"
        )

    def ship(self, path: str, reason: Reason, *, follow: bool = True, explicit: bool = False, mode: int | None = None,
             owner: tuple[int, int] | None = None) -> Entry | None:
        """Ship what `path` names in the source, with every symlink on the way to it."""
        if self.excluded(path):
            self.plan.excluded.append(path)
            return None
        found = self.view.resolve(path, follow=follow)
        if found.error:
            raise SourceError(f"{self.view.name}: {path}: {found.error}")
        for link in found.links:
            self.add(self._from_node(link), Reason("link", "symlink on the way", via=path))
        if found.node is None:
            return None
        self.plan.aliases[path] = found.path
        if found.path != paths.clean(path) and self.excluded(found.path):
            self.plan.excluded.append(found.path)
            return None
        if any(part.startswith(".wh.") for part in paths.split(found.path)):
            self.plan.warnings.append(f"{path}: not shipped: a name starting with .wh. would act as a whiteout in a layer")
            return None
        if found.node.type not in (NodeType.FILE, NodeType.DIR, NodeType.SYMLINK):
            self.plan.warnings.append(f"{path}: not shipped: a {found.node.type.value} (the runtime provides device nodes)")
            return None
        entry = self._from_node(found.node, explicit=explicit, mode=mode, owner=owner)
        return self.add(entry, reason)

    def _from_node(self, node: Node, *, explicit: bool = False, mode: int | None = None, owner: tuple[int, int] | None = None) -> Entry:
        kind = {NodeType.FILE: EntryKind.FILE, NodeType.DIR: EntryKind.DIR, NodeType.SYMLINK: EntryKind.SYMLINK}[node.type]
        if mode is None:
            mode = node.mode & ~0o6000 if kind is EntryKind.FILE else node.mode  # setuid/setgid only on request
        uid, gid = owner if owner else (node.uid, node.gid)
        return Entry(node.path, kind, mode, uid, gid, node.mtime, node.size, source=node.path if kind is EntryKind.FILE else None,
                     target=node.target, explicit=explicit)

    def rebase(self, path: str, *, follow: bool) -> str:
        """Canonical location for a generated entry at `path`, shipping the source's symlinks on the way."""
        found = self.view.resolve(path, follow=follow)
        if found.error:
            raise SourceError(f"{self.view.name}: {path}: {found.error}")
        for link in found.links:
            self.add(self._from_node(link), Reason("link", "symlink on the way", via=path))
        return found.path

    # -- profile rules ---------------------------------------------------------------------

    def _profile_accounts(self) -> None:
        for spec, origin in self.profile.groups:
            if spec.gid is not None:
                self.accounts.add_group(spec.name, spec.gid, spec.members)
            elif self.accounts.group(spec.name) is None:
                if not spec.optional:
                    self.issues.append(f"{origin}: group {spec.name!r} is not in the source's /etc/group; "
                                       f"give {{name, gid}} to create it, or mark it optional")
                continue
            self.groups.add(spec.name)
        for user, origin in self.profile.users:
            if user.uid is not None and user.gid is not None:
                if self.accounts.group(user.gid) is None:
                    self.accounts.add_group(user.name, user.gid, ())
                self.accounts.add_user(user.name, user.uid, user.gid, user.home, user.shell)
            elif self.accounts.user(user.name) is None:
                if not user.optional:
                    self.issues.append(f"{origin}: user {user.name!r} is not in the source's /etc/passwd; "
                                       f"give {{name, uid, gid, home, shell}} to create it, or mark it optional")
                continue
            self.users.add(user.name)

    def _owner(self, spec: PathSpec, origin: str) -> tuple[int, int] | None:
        if spec.owner is None:
            return None
        owner = self.accounts.owner(spec.owner)
        if owner is None:
            self.issues.append(f"{origin}.owner: {spec.owner!r} is not an account of the source or the profile; add it under accounts")
        return owner

    def _binaries(self) -> None:
        for spec, origin in self.profile.binaries:
            matches = self.view.glob(spec.path)
            if not matches and not spec.optional:
                self.issues.append(f"{origin}: {spec.path} not found in {self.view.name}; check the path or mark it optional")
            for match in matches:
                found = self.view.resolve(match)
                if found.error:
                    raise SourceError(f"{self.view.name}: {match}: {found.error}")
                node = found.node
                if node is None or not node.is_file:
                    if not spec.optional:
                        self.issues.append(f"{origin}: {match} is not a regular file (or a link to one)")
                    continue
                if self.ship(match, Reason("root", origin), explicit=True, mode=spec.mode):
                    self._roots.append((match, origin))

    def _packages(self) -> None:
        if not self.profile.packages:
            return
        db = self.package_db()
        if db is None:
            self.issues.append(f"packages: {self.view.name} has no dpkg or apk database to take packages from")
            return
        for spec, origin in self.profile.packages:
            if db.get(spec.name) is None:
                if not spec.optional:
                    self.issues.append(f"{origin}: package {spec.name!r} is not installed in {self.view.name}; "
                                       "check the name or mark it optional")
                continue
            reason = Reason("package", f"{origin}: {spec.name}")
            for listed in db.files(spec.name):
                if any(paths.glob_match(pattern, listed) for pattern in PACKAGE_EXCLUDES):
                    continue
                node = self.view.resolve(listed, follow=False).node
                if node is None or node.is_dir:
                    continue  # directories ship as parents of what they hold
                entry = self.ship(listed, reason, follow=False)
                if entry is not None and entry.kind is EntryKind.SYMLINK:
                    self._link_target(listed)

    def _paths(self) -> None:
        for spec, origin in self.profile.paths:
            owner = self._owner(spec, origin)
            if spec.kind == "source":
                self._copy_rule(spec, origin, owner)
                continue
            follow = spec.kind == "make"
            target = self.rebase(spec.path, follow=follow)
            uid, gid = owner or (0, 0)
            reason = Reason("profile", origin)
            if spec.kind == "make":
                self.add(Entry(target, EntryKind.DIR, spec.mode if spec.mode is not None else 0o755, uid, gid, explicit=True), reason)
            elif spec.kind == "symlink":
                self.add(Entry(target, EntryKind.SYMLINK, 0o777, uid, gid, target=spec.value, explicit=True), reason)
            elif spec.kind == "text":
                data = (spec.value or "").encode()
                self.add(Entry(target, EntryKind.FILE, spec.mode if spec.mode is not None else 0o644, uid, gid, size=len(data),
                               data=data, explicit=True), reason)
            else:
                self._copy_from(spec, origin, target, owner)

    def _copy_rule(self, spec: PathSpec, origin: str, owner: tuple[int, int] | None) -> None:
        matches = self.view.glob(spec.path)
        if not matches and not spec.optional:
            self.issues.append(f"{origin}: {spec.path} not found in {self.view.name}; check the path or mark it optional")
        for match in matches:
            entry = self.ship(match, Reason("profile", origin), follow=False, explicit=True, mode=spec.mode, owner=owner)
            if entry is not None and entry.kind is EntryKind.SYMLINK:
                self._link_target(match)

    def _link_target(self, link: str) -> None:
        """Ship what a copied symlink points to, so it does not dangle."""
        found = self.view.resolve(link)
        if found.node is not None:
            self.ship(link, Reason("target", "target of a shipped symlink", via=link))
        elif not found.path.startswith(_RUNTIME_PROVIDED):
            self.plan.warnings.append(f"{link}: symlink points to {found.path}, which the source does not have")

    def _copy_from(self, spec: PathSpec, origin: str, target: str, owner: tuple[int, int] | None) -> None:
        found = self.view.resolve(spec.value or "")
        if found.node is None or not found.node.is_file:
            if not spec.optional:
                self.issues.append(f"{origin}.copy: {spec.value} is not a file in {self.view.name}")
            return
        entry = replace(self._from_node(found.node, explicit=True, mode=spec.mode, owner=owner), path=target)
        self.add(entry, Reason("profile", f"{origin} (copy of {spec.value})"))

    # -- closures ----------------------------------------------------------------------------

    def _root(self, path: str, origin: str, *, explicit: bool, depth: int = 0) -> None:
        found = self.view.resolve(path)
        if found.node is None or not found.node.is_file:
            self.issues.append(f"{origin}: {path} is not a regular file in {self.view.name}")
            return
        with self.view.open(found.path) as stream:
            head = stream.read(_SHEBANG_LIMIT)
        if is_elf(head):
            self._elf_root(path, found.path, origin, explicit=explicit)
        elif head.startswith(b"#!") and depth < _MAX_SHEBANG_DEPTH:
            self._script_root(path, head, origin, depth)
        elif explicit:
            self.issues.append(f"{origin}: {path} is neither an ELF file nor a #! script; list it under paths instead")

    def _elf_root(self, path: str, canonical: str, origin: str, *, explicit: bool) -> None:
        try:
            closure = self.loader.closure(path)
        except ElfError as exc:
            if explicit:
                raise
            self.plan.warnings.append(f"{exc.message}; shipped as data, without a closure")
            return
        self.plan.roots.append(path)
        self.plan.closures.append(closure)
        self._covered.add(canonical)
        for link in closure.links:
            if link.path is None:
                continue
            self._covered.add(self.view.resolve(link.path).path)
            if link.rule == "already loaded" and self.plan.entry_for(link.path) is not None:
                continue
            self.ship(link.path, Reason("needed", link.name, via=link.requester, rule=link.describe()))

    def _script_root(self, path: str, head: bytes, origin: str, depth: int) -> None:
        line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        interpreter, _, argument = line.partition(" ")
        if not interpreter.startswith("/"):
            self.issues.append(f"{origin}: {path}: #! line names no absolute interpreter")
            return
        reason = Reason("shebang", f"#! interpreter of {path}", via=path)
        if self.ship(interpreter, reason) is None:
            self.issues.append(f"{origin}: {path}: interpreter {interpreter} not found in {self.view.name}")
            return
        self._root(interpreter, origin, explicit=True, depth=depth + 1)
        if paths.split(interpreter)[-1] == "env" and argument:
            words = [w for w in shlex.split(argument.removeprefix("-S").strip(), posix=True) if not w.startswith("-") and "=" not in w]
            if words and "/" not in words[0]:
                program = self._which(words[0])
                if program is None:
                    self.issues.append(f"{origin}: {path}: `env {words[0]}` finds no {words[0]} on PATH in {self.view.name}")
                elif self.ship(program, Reason("shebang", f"`env {words[0]}` of {path} (PATH)", via=path)):
                    self._root(program, origin, explicit=True, depth=depth + 1)

    def _which(self, name: str) -> str | None:
        search = self.profile.image.env.get("PATH", DEFAULT_PATH)
        for directory in search.split(":"):
            candidate = paths.join(directory or "/", name)
            node = self.view.stat(candidate)
            if node is not None and node.is_file and node.mode & 0o111:
                return candidate
        return None

    def _shipped_elves(self) -> None:
        """Every shipped ELF that no closure covers (modules, plugins, extra tools) is a root too."""
        for entry in list(self.plan.entries.values()):
            if (entry.kind is EntryKind.FILE and entry.source and entry.source not in self._covered
                    and entry.source not in self._not_elf):
                with self.view.open(entry.source) as stream:
                    if not is_elf(stream.read(4)):
                        self._not_elf.add(entry.source)
                        continue
                reason = entry.reasons[0].describe() if entry.reasons else entry.path
                self._elf_root(entry.path, entry.source, reason, explicit=False)

    # -- structure -------------------------------------------------------------------------

    def _parents(self) -> None:
        for path in list(self.plan.entries):
            for ancestor in ["/", *paths.parents(path)]:
                if ancestor in self.plan.entries:
                    continue
                node = self.view.lstat(ancestor)
                if node is not None and node.is_dir:
                    entry = self._from_node(node)
                else:
                    entry = Entry(ancestor, EntryKind.DIR, 0o755)
                self.add(entry, Reason("parent", "parent directory", via=path))

    def _hardlinks(self) -> None:
        """Files that are one inode in the source stay one inode in the output."""
        first: dict[object, Entry] = {}
        for entry in self.plan.ordered():
            if entry.kind is not EntryKind.FILE or entry.source is None:
                continue
            node = self.view.lstat(entry.source)
            if node is None or node.file_id is None:
                continue
            leader = first.setdefault(node.file_id, entry)
            if leader is not entry and (leader.mode, leader.uid, leader.gid) == (entry.mode, entry.uid, entry.gid):
                entry.kind, entry.target, entry.size = EntryKind.HARDLINK, leader.path, 0

    def _times(self) -> None:
        """Source times (clamped to SOURCE_DATE_EPOCH); generated entries get the epoch or the newest source time."""
        known = [e.mtime for e in self.plan.entries.values() if e.mtime is not None]
        default = self.epoch if self.epoch is not None else max(known, default=0)
        for entry in self.plan.entries.values():
            if entry.mtime is None:
                entry.mtime = default
            elif self.epoch is not None:
                entry.mtime = min(entry.mtime, self.epoch)
