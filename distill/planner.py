"""Apply a profile and the loader model to a source view; produce the plan. Writes nothing.

The steps run in the order `Planner.steps` lists them: accounts the profile names, binaries
(roots), whole packages, `paths` rules, the closures of the roots and of every other shipped
ELF, runtime-loaded files (and their closures), system files, package records, parent
directories, passwd/group (which depend on the owners of everything else), hard links, and
times. Every entry goes in through a `PlanBuilder`; problems with what the profile asks of this
source are collected and raised together as one ProfileError.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import replace

from distill import hints, paths, pkgmeta, runtime, system
from distill.accounts import AccountDb, parse_group, parse_passwd
from distill.builder import PlanBuilder, PlanContext, entry_from_node
from distill.elf import is_elf
from distill.errors import ElfError, SourceError
from distill.links import close_links
from distill.loader import Loader, LoaderEnv, Rule
from distill.packages import PackageDb
from distill.plan import Entry, EntryKind, Plan, Reason, ReasonKind
from distill.profile import Profile, from_command_line
from distill.schema import SHADOW_FILES
from distill.specs import HintMode, PathKind, PathSpec, Setuid
from distill.view import View

__all__ = ["Planner", "make_plan", "DEFAULT_PATH", "PACKAGE_EXCLUDES"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# what `packages:` leaves out: documentation a running program does not read (copyright files ship with
# the package records, see pkgmeta)
PACKAGE_EXCLUDES = ("/usr/share/doc/**", "/usr/share/man/**", "/usr/share/info/**", "/usr/share/lintian/**")
_SHEBANG_LIMIT = 256  # the kernel reads at most this much of a #! line
_MAX_SHEBANG_DEPTH = 4


def make_plan(view: View, profile: Profile, env: LoaderEnv | None = None, *, epoch: int | None = None) -> Plan:
    """The plan for `profile` on `view`; `env` the process environment the loader sees; `epoch` SOURCE_DATE_EPOCH."""
    return Planner(view, profile, env, epoch).run()


class Planner:
    """One planning run: the profile's own rules and the closures; collectors add the rest."""

    def __init__(self, view: View, profile: Profile, env: LoaderEnv | None = None, epoch: int | None = None) -> None:
        self.view = view
        self.profile = profile
        self.epoch = epoch
        self.loader = Loader(view, env or LoaderEnv(cwd=profile.image.workdir or "/"))
        self.builder = PlanBuilder(
            view, Plan(source=view.name, profile=profile.name), profile.exclude, keep_setuid=profile.system.setuid is Setuid.KEEP
        )
        self.plan = self.builder.plan
        self.context = PlanContext(
            view, profile, self.loader, AccountDb(parse_passwd(_text(view, "/etc/passwd")), parse_group(_text(view, "/etc/group")))
        )
        self._covered: set[str] = set()  # canonical paths loaded as part of some closure
        self._not_elf: set[str] = set()  # shipped files already found not to be ELF
        self._roots: list[tuple[str, str]] = []
        self._optional: dict[tuple[str, str], list[str]] = {}  # (profile file, key) -> optional entries that matched nothing
        self._matched: set[tuple[str, str]] = set()  # (profile file, key) with an entry that matched or made something

    def steps(self) -> tuple[Callable[[], None], ...]:
        """The planning steps, in the order they run."""
        builder, context = self.builder, self.context
        return (
            self._profile_accounts,
            self._binaries,
            self._plugins,
            self._packages,
            self._paths,
            self._report_unmatched,
            builder.raise_issues,
            self._root_closures,
            self._close_links,  # and the closures of every other shipped ELF, link targets included
            self._package_depends,
            lambda: runtime.add_runtime_files(builder, context),
            self._close_links,
            self._hints,
            self._close_links,
            lambda: system.add_system_files(builder, context),
            self._close_links,
            lambda: pkgmeta.add_package_metadata(builder, context),
            builder.raise_issues,
            self._parents,
            lambda: system.add_account_files(builder, context),
            self._parents,
            self._hardlinks,
            self._times,
            self._setuid_report,
        )

    def run(self) -> Plan:
        for step in self.steps():
            step()
        self.plan.dangling = self.profile.dangling
        return self.plan

    def _close_links(self) -> None:
        """Ship the targets of the symlinks shipped so far, then the closures of any ELF among them."""
        close_links(self.builder, self.context)
        self._shipped_elves()

    def _setuid_report(self) -> None:
        """Say which shipped files lost their setuid/setgid bits, and which keep them."""
        stripped: list[str] = []
        kept: list[str] = []
        for entry in self.plan.ordered():
            if entry.kind is EntryKind.FILE and entry.source is not None:
                node = self.view.lstat(entry.source)
                if node is not None and node.mode & 0o6000:
                    (kept if entry.mode & 0o6000 else stripped).append(entry.path)
        for found, what in (
            (stripped, "setuid/setgid bits stripped (system.setuid: keep, or a `mode`, keeps them)"),
            (kept, "shipped with setuid/setgid bits"),
        ):
            if found:
                shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
                self.builder.warn(f"{what}: {shown}")

    # -- profile rules ---------------------------------------------------------------------

    def _profile_accounts(self) -> None:
        accounts = self.context.accounts
        users, groups = {"root"}, {"root"}
        for spec, origin in self.profile.groups:
            if spec.gid is not None:
                accounts.add_group(spec.name, spec.gid, spec.members)
            elif accounts.group(spec.name) is None:
                if not spec.optional:
                    self.builder.issue(
                        f"{origin}: group {spec.name!r} is not in the source's /etc/group; "
                        f"give {{name, gid}} to create it, or mark it optional"
                    )
                continue
            groups.add(spec.name)
        for user, origin in self.profile.users:
            if user.uid is not None and user.gid is not None:
                if accounts.group(user.gid) is None:
                    accounts.add_group(user.name, user.gid, ())
                accounts.add_user(user.name, user.uid, user.gid, user.home, user.shell)
            elif accounts.user(user.name) is None:
                if not user.optional:
                    self.builder.issue(
                        f"{origin}: user {user.name!r} is not in the source's /etc/passwd; "
                        f"give {{name, uid, gid, home, shell}} to create it, or mark it optional"
                    )
                continue
            users.add(user.name)
        self.context.users, self.context.groups = frozenset(users), frozenset(groups)

    def _note_match(self, origin: str, what: str, matched: bool, optional: bool) -> None:
        """Remember whether an entry matched, per profile file and key (binaries, packages, paths); a required
        entry that matched nothing is an issue of its own already."""
        file, _, key = origin.rpartition(": ")
        group = (file, key.split("[", 1)[0].split(".", 1)[0])
        if matched:
            self._matched.add(group)
        elif optional:
            self._optional.setdefault(group, []).append(what)

    def _report_unmatched(self) -> None:
        """No silent empty match: a profile file whose optional entries of one key all matched nothing says
        so (an error for binaries, which leave nothing to distill). Alternatives of which one matched, or beside an
        entry that makes a directory, link or file of its own, stay quiet, and so do fragments (the ones a profile
        extends, and one run on its own): their optional entries are taken when present (glibc's /etc/gai.conf)."""
        fragment = self.profile.description.startswith("fragment")  # an ad-hoc run starts from glibc's
        leaf = self.profile.files[-1] if self.profile.files and not fragment else None
        for (file, key), missed in self._optional.items():
            if (file, key) in self._matched or file != leaf:
                continue
            listed = ", ".join(missed)
            if key == "binaries":
                self.builder.issue(
                    f"{file}: binaries: none of {listed} is in {self.view.name}; check the paths, or name the app's program with --binary"
                )
            else:
                self.builder.warn(
                    f"{file}: {key}: nothing matched in {self.view.name} for {listed}; "
                    "the output lacks what they name (check the names against the source)"
                )

    def _owner(self, spec: PathSpec, origin: str) -> tuple[int, int] | None:
        if spec.owner is None:
            return None
        owner = self.context.accounts.owner(spec.owner)
        if owner is None:
            name = spec.owner.split(":", 1)[0]
            if not any(user.name == name and not user.optional for user, _ in self.profile.users):  # else said already
                self.builder.issue(f"{origin}.owner: {system.account_hint(self.profile, name, origin)}")
        return owner

    @staticmethod
    def _missing_fix(origin: str) -> str:
        return "check the path" if from_command_line(origin) else "check the path or mark it optional"

    def _binaries(self) -> None:
        for spec, origin in self.profile.binaries:
            matches = self.view.glob(spec.path)
            if not matches and not spec.optional:
                self.builder.issue(f"{origin}: {spec.path} not found in {self.view.name}; {self._missing_fix(origin)}")
            self._note_match(origin, spec.path, bool(matches), spec.optional)
            for match in matches:
                found = self.view.resolve(match)
                if found.error:
                    raise SourceError(f"{self.view.name}: {match}: {found.error}")
                node = found.node
                if node is None or not node.is_file:
                    if not spec.optional:
                        self.builder.issue(f"{origin}: {match} is not a regular file (or a link to one)")
                    continue
                if self.builder.ship(match, Reason(ReasonKind.ROOT, origin), explicit=True, mode=spec.mode):
                    self._roots.append((match, origin))

    def _plugins(self) -> None:
        """`runtime.plugins`: ship each host as a root and its plugins, and remember which process loads them."""
        for spec in self.profile.runtime.plugins:
            origin = f"runtime.plugins: {spec.host}"
            hosts = [m for m in self.view.glob(spec.host) if (n := self.view.stat(m)) is not None and n.is_file]
            if not hosts:
                if not spec.optional:
                    self.builder.issue(f"{origin}: no such program in {self.view.name}; check the host path or mark it optional")
                continue
            host = hosts[0]
            if self.builder.ship(host, Reason(ReasonKind.ROOT, f"{origin} (the host of plugins)"), explicit=True):
                self._roots.append((host, origin))
            plugins: list[str] = []
            for pattern in spec.paths:
                matches = [m for m in self.view.glob(pattern) if (n := self.view.stat(m)) is not None and n.is_file]
                if not matches and not spec.optional:
                    self.builder.issue(f"{origin}: plugins {pattern} not found in {self.view.name}; check the path or mark it optional")
                for match in matches:
                    if self.builder.ship(match, Reason(ReasonKind.RUNTIME, f"{origin}: a plugin {host} loads")) is not None:
                        plugins.append(self.view.resolve(match).path)
            for plugin in plugins:
                self.plan.hosts[plugin] = (host, tuple(plugins))

    def _packages(self) -> None:
        if not self.profile.packages:
            return
        db = self.context.package_db()
        if db is None:
            self.builder.issue(f"packages: {self.view.name} has no dpkg or apk database to take packages from")
            return
        for spec, origin in self.profile.packages:
            names = db.match(spec.name)
            self._note_match(origin, f"package {spec.name}", bool(names), spec.optional)
            if not names and not spec.optional:
                missing = "matches no package installed" if paths.is_glob(spec.name) else "is not installed"
                self.builder.issue(f"{origin}: package {spec.name!r} {missing} in {self.view.name}; check the name or mark it optional")
            for name in names:
                matched = f" (matches {spec.name})" if name != spec.name else ""
                self._ship_package(db, name, Reason(ReasonKind.PACKAGE, f"{origin}: {name}{matched}"))

    def _ship_package(self, db: PackageDb, name: str, reason: Reason) -> None:
        listed_files = db.files(name)
        directories = {paths.parent(p) for p in listed_files}  # a directory of the package, even where it is a link (/lib)
        for listed in listed_files:
            if listed in directories or any(paths.glob_match(pattern, listed) for pattern in PACKAGE_EXCLUDES):
                continue
            node = self.view.resolve(listed, follow=False).node
            if node is None or node.is_dir:
                continue  # directories ship as parents of what they hold
            self.builder.ship(listed, reason, follow=False)  # a linked directory's other files belong to other packages

    def _package_depends(self) -> None:
        """`depends: true`: follow Pre-Depends and Depends, breadth first, shipping each package reached whole,
        except essential packages and those the ELF closures already load from (a library package: the closure
        takes what loads). The dependencies of such a library are followed only when it comes from the same
        source package as the package that needs it (the app split into a library, like nodejs and libnode108)."""
        db = self.context.package_db()
        wanted = [(spec.name, origin) for spec, origin in self.profile.packages if spec.depends]
        if db is None or not wanted:
            return
        seen = {name for spec, _ in self.profile.packages for name in db.match(spec.name)}
        queue = [(package, origin) for pattern, origin in wanted for name in db.match(pattern) if (package := db.get(name)) is not None]
        while queue:
            needer, origin = queue.pop(0)
            for relation, package in db.depends(needer.name):
                if package is None:
                    self.builder.warn(f"{origin}: {needer.name} depends on {relation}, which {self.view.name} does not have")
                    continue
                if package.name in seen or db.essential(package.name):
                    continue
                seen.add(package.name)
                if any(db.canonical(listed) in self._covered for listed in db.files(package.name)):
                    if (package.source or package.name) == (needer.source or needer.name):
                        queue.append((package, origin))
                    continue
                detail = f"{origin}: {package.name}, which {needer.name} depends on ({relation})"
                self._ship_package(db, package.name, Reason(ReasonKind.PACKAGE, detail))
                self._shipped_elves()
                queue.append((package, origin))

    def _paths(self) -> None:
        for spec, origin in self.profile.paths:
            owner = self._owner(spec, origin)
            if spec.kind is PathKind.SOURCE:
                self._copy_rule(spec, origin, owner)
                continue
            if spec.kind is not PathKind.COPY:
                self._note_match(origin, spec.path, True, spec.optional)  # it writes something of its own
            follow = spec.kind is PathKind.MAKE
            target = self.builder.rebase(spec.path, follow=follow)
            uid, gid = owner or (0, 0)
            reason = Reason(ReasonKind.PROFILE, origin)
            if spec.kind is PathKind.MAKE:
                mode = spec.mode if spec.mode is not None else 0o755
                self.builder.add(Entry(target, EntryKind.DIR, mode, uid, gid, explicit=True), reason)
            elif spec.kind is PathKind.SYMLINK:
                self.builder.add(Entry(target, EntryKind.SYMLINK, 0o777, uid, gid, target=spec.value, explicit=True), reason)
            elif spec.kind is PathKind.TEXT:
                data = (spec.value or "").encode()
                mode = spec.mode if spec.mode is not None else 0o644
                self.builder.add(Entry(target, EntryKind.FILE, mode, uid, gid, size=len(data), data=data, explicit=True), reason)
            else:
                self._copy_from(spec, origin, target, owner)

    def _copy_rule(self, spec: PathSpec, origin: str, owner: tuple[int, int] | None) -> None:
        matches = self.view.glob(spec.path)
        if not matches and not spec.optional:
            self.builder.issue(f"{origin}: {spec.path} not found in {self.view.name}; {self._missing_fix(origin)}")
        whole = "**" in paths.split(spec.path)  # the rule takes whole trees, so a linked directory brings its tree
        named = None if paths.is_glob(spec.path) else origin  # a link the rule names itself is worth a warning
        self._note_match(origin, spec.path, bool(matches), spec.optional)
        for match in matches:
            self.builder.ship(
                match,
                Reason(ReasonKind.PROFILE, origin),
                follow=False,
                explicit=True,
                mode=spec.mode,
                owner=owner,
                whole=whole,
                named=named,
            )

    def _copy_from(self, spec: PathSpec, origin: str, target: str, owner: tuple[int, int] | None) -> None:
        found = self.view.resolve(spec.value or "")
        self._note_match(origin, f"{spec.path} (copy of {spec.value})", found.node is not None and found.node.is_file, spec.optional)
        if found.node is None or not found.node.is_file:
            if not spec.optional:
                self.builder.issue(f"{origin}.copy: {spec.value} is not a file in {self.view.name}")
            return
        if found.path in SHADOW_FILES:
            self.builder.issue(
                f"{origin}.copy: {found.path} holds password hashes and never ships; set `system.shadow: yes` "
                "for one with the shipped accounts, locked"
            )
            return
        mode = spec.mode if spec.mode is not None or not self.builder.keep_setuid else found.node.mode
        entry = replace(entry_from_node(found.node, explicit=True, mode=mode, owner=owner), path=target)
        self.builder.add(entry, Reason(ReasonKind.PROFILE, f"{origin} (copy of {spec.value})"))

    # -- closures ----------------------------------------------------------------------------

    def _root_closures(self) -> None:
        for path, origin in self._roots:
            self._root(path, origin, explicit=True)

    def _root(self, path: str, origin: str, *, explicit: bool, depth: int = 0) -> None:
        found = self.view.resolve(path)
        if found.node is None or not found.node.is_file:
            self.builder.issue(f"{origin}: {path} is not a regular file in {self.view.name}")
            return
        with self.view.open(found.path) as stream:
            head = stream.read(_SHEBANG_LIMIT)
        if is_elf(head):
            self._elf_root(path, found.path, origin, explicit=explicit)
        elif head.startswith(b"#!") and depth < _MAX_SHEBANG_DEPTH:
            self._script_root(path, head, origin, depth)
        elif explicit:
            fix = "pass it with --path instead" if from_command_line(origin) else "list it under paths instead"
            self.builder.issue(f"{origin}: {path} is neither an ELF file nor a #! script; {fix}")

    def _elf_root(self, path: str, canonical: str, origin: str, *, explicit: bool) -> None:
        host, companions = self.plan.hosts.get(canonical, (None, ()))
        try:
            closure = self.loader.closure(path, host=host, companions=companions)
        except ElfError as exc:
            if explicit:
                raise
            self.builder.warn(f"{exc.message}; shipped as data, without a closure")
            return
        self.plan.roots.append(path)
        self.plan.closures.append(closure)
        self._covered.add(canonical)
        for link in closure.links:
            if link.path is None:
                continue
            self._covered.add(self.view.resolve(link.path).path)
            if link.rule is Rule.ALREADY_LOADED and self.plan.entry_for(link.path) is not None:
                continue
            self.builder.ship(link.path, Reason(ReasonKind.NEEDED, link.name, via=link.requester, rule=link.describe()))

    def _script_root(self, path: str, head: bytes, origin: str, depth: int) -> None:
        line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        interpreter, _, argument = line.partition(" ")
        if not interpreter.startswith("/"):
            self.builder.issue(f"{origin}: {path}: #! line names no absolute interpreter")
            return
        reason = Reason(ReasonKind.SHEBANG, f"#! interpreter of {path}", via=path)
        if self.builder.ship(interpreter, reason) is None:
            self.builder.issue(f"{origin}: {path}: interpreter {interpreter} not found in {self.view.name}")
            return
        self._root(interpreter, origin, explicit=True, depth=depth + 1)
        if paths.split(interpreter)[-1] == "env" and argument:
            words = [w for w in shlex.split(argument.removeprefix("-S").strip(), posix=True) if not w.startswith("-") and "=" not in w]
            if words and "/" not in words[0]:
                program = self._which(words[0])
                if program is None:
                    self.builder.issue(f"{origin}: {path}: `env {words[0]}` finds no {words[0]} on PATH in {self.view.name}")
                elif self.builder.ship(program, Reason(ReasonKind.SHEBANG, f"`env {words[0]}` of {path} (PATH)", via=path)):
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
            if entry.kind is EntryKind.FILE and entry.source and entry.source not in self._covered and entry.source not in self._not_elf:
                with self.view.open(entry.source) as stream:
                    if not is_elf(stream.read(4)):
                        self._not_elf.add(entry.source)
                        continue
                reason = entry.reasons[0].describe() if entry.reasons else entry.path
                self._elf_root(entry.path, entry.source, reason, explicit=False)

    def _hints(self, rounds: int = 3) -> None:
        """Executables and libraries that shipped programs name in their strings (distill.hints): reported,
        or shipped with their closures under `hints: include` (then the new files' strings are read too)."""
        if self.profile.hints is HintMode.NO:
            return
        scanned: set[str] = set()
        for _ in range(rounds):
            shipped = [
                path for path in sorted(self.loader.parsed()) if (entry := self.plan.entries.get(path)) is not None and entry.source == path
            ]
            elves = [path for path in shipped if path not in scanned]
            scanned.update(elves)
            found = hints.find_hints(self.view, elves, shipped, lambda path: self.plan.entry_for(path) is not None)
            if self.profile.hints is not HintMode.INCLUDE:
                self.plan.hints.extend(found)
                return
            for hint in found:
                origin = f"hints: include: {hint.path}, {hint.describe()}"
                if (
                    self.builder.ship(hint.path, Reason(ReasonKind.HINT, origin, via=hint.named_by)) is not None
                    and hint.kind == "executable"
                ):
                    self._root(hint.path, origin, explicit=False)
                self.plan.hints.append(hint)
            self._shipped_elves()
            if not found:
                return

    # -- structure -------------------------------------------------------------------------

    def _parents(self) -> None:
        for path in list(self.plan.entries):
            missing: list[str] = []  # up to the first ancestor already planned (whose own are planned too)
            ancestor = paths.parent(path)
            while ancestor not in self.plan.entries and ancestor not in missing:
                missing.append(ancestor)
                ancestor = paths.parent(ancestor)
            for ancestor in reversed(missing):
                node = self.view.lstat(ancestor)
                if node is not None and node.is_dir:
                    entry = entry_from_node(node)
                else:
                    entry = Entry(ancestor, EntryKind.DIR, 0o755)
                self.builder.add(entry, Reason(ReasonKind.PARENT, "parent directory", via=path))

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


def _text(view: View, path: str) -> str:
    try:
        return view.read_bytes(path, 1 << 22).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
