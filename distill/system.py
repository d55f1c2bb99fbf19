"""System files every app expects, each switchable under the profile's `system:` key.

/tmp (1777), /run and the source's /var/run link, /etc/nsswitch.conf for glibc programs,
/etc/localtime with the one zone file it names, the source's CA bundle when TLS libraries
ship, /etc/os-release, and /etc/passwd and /etc/group reduced to the accounts in use.
/etc/shadow and /etc/gshadow are generated (never copied: the source's hold password hashes) for
the same accounts, locked, when `system.shadow` asks for them (`auto`: when PAM's pam_unix ships).
"""

from __future__ import annotations

import re

from distill import paths
from distill.builder import PlanBuilder, PlanContext
from distill.elf import ElfInfo
from distill.errors import ElfError
from distill.ldcache import build_ld_cache, cache_flags
from distill.ldconf import Flavor
from distill.loader import Rule
from distill.plan import Entry, EntryKind, Reason, ReasonKind
from distill.profile import Profile, from_command_line
from distill.specs import Switch

__all__ = ["add_system_files", "add_account_files", "NSSWITCH", "CA_BUNDLES"]

NSSWITCH = """\
# written by distill: look accounts and hosts up in local files first
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
ethers:         files
rpc:            files
"""

# where distributions keep the CA bundle, first match wins
CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # Alpine's OpenSSL default, BSDs
)
# OpenSSL's compiled-in defaults point here; the distribution links them to the bundle
_OPENSSL_LINKS = ("/usr/lib/ssl/cert.pem", "/usr/lib/ssl/certs", "/etc/pki/tls/cert.pem", "/etc/ssl/cert.pem")
_SHADOW_READERS = ("pam_unix.so", "unix_chkpwd")  # PAM's account check needs an entry per user
_TLS_LIBRARY = re.compile(r"lib(ssl|crypto|gnutls|mbedtls|wolfssl|nss3)[.-].*so")


def _system(detail: str) -> Reason:
    return Reason(ReasonKind.SYSTEM, detail)


def add_system_files(builder: PlanBuilder, context: PlanContext) -> None:
    """Add the system files the profile's `system:` settings ask for."""
    config = context.profile.system
    if config.tmp:
        target = builder.rebase("/tmp", follow=True)
        builder.add(Entry(target, EntryKind.DIR, 0o1777), _system("system.tmp: world-writable /tmp"))
    if config.run:
        _run_dirs(builder, context)
    if config.nsswitch and any(c.flavor is Flavor.GLIBC for c in builder.plan.closures):
        builder.generate("/etc/nsswitch.conf", NSSWITCH.encode(), _system("system.nsswitch: glibc reads it"))
    if config.timezone:
        _timezone(builder, context, config.timezone)
    if config.ca_certificates is Switch.YES or (config.ca_certificates is Switch.AUTO and _ships_tls(builder, context)):
        _ca_bundle(builder, context, required=config.ca_certificates is Switch.YES)
    if config.os_release:
        builder.ship("/etc/os-release", _system("system.os-release: tells scanners the distribution"))
    _loader_cache(builder, context)
    _musl_path_file(builder)


def _musl_path_file(builder: PlanBuilder) -> None:
    """Ship musl's `/etc/ld-musl-<arch>.path` when a library was found through it.

    Where the file exists musl searches only the directories it lists; without it, only its
    defaults (/lib, /usr/local/lib, /usr/lib), so a library in a listed directory would not load.
    """
    for closure in builder.plan.closures:
        if closure.flavor is not Flavor.MUSL:
            continue
        files = sorted({link.detail for link in closure.links if link.rule is Rule.MUSL_PATH and link.detail.startswith("/")})
        for path in files:
            builder.ship(path, _system(f"musl path file: {closure.root} loads libraries from the directories it lists"))


def _loader_cache(builder: PlanBuilder, context: PlanContext) -> None:
    """Write an /etc/ld.so.cache when a library was found only through an ld.so.conf directory.

    glibc consults ld.so.conf directories only through the cache, so without one such a library
    would not load. The cache distill writes lists only the shipped libraries of the conf and
    default directories (no stale entries, no hwcaps variants); the conf files ship too, so the
    checks model the output's loader from the same files. Where distill has no cache flags for the
    architecture, the source's own cache ships instead.
    """
    view = context.view
    needing: set[str] = set()
    closure = None
    for candidate in builder.plan.closures:
        if candidate.config is None or candidate.flavor is not Flavor.GLIBC:
            continue
        defaults = {view.resolve(d.path).path for d in candidate.config.default_dirs}
        for link in candidate.links:
            if link.rule is Rule.LD_SO_CONF and link.path and view.resolve(paths.parent(link.path)).path not in defaults:
                needing.add(f"{link.name} ({link.detail})")
                closure = closure or candidate
    if closure is None or closure.config is None:
        return
    config = closure.config
    reason = _system(f"ld.so.cache: {', '.join(sorted(needing))} found only through ld.so.conf")
    for path in ("/etc/ld.so.conf", *sorted({d.origin for d in config.system_dirs})):
        builder.ship(path, reason)
    root = context.loader.elf(view.resolve(closure.root).path)
    flags = cache_flags(root.machine, root.elf_class)
    if flags is None:
        builder.ship("/etc/ld.so.cache", reason)
        return
    entries = []
    for directory in [d.path for d in (*config.system_dirs, *config.default_dirs)]:
        canonical = view.resolve(directory).path
        for path in sorted(builder.plan.entries):
            name = path.rsplit("/", 1)[-1]
            if paths.parent(path) == canonical and _CACHED_NAME.match(name) and _loadable(builder, context, path, root):
                entries.append((name, paths.join(directory, name)))
    builder.generate("/etc/ld.so.cache", build_ld_cache(entries, flags), reason)


_CACHED_NAME = re.compile(r"(lib|ld-).*\.so")


def _loadable(builder: PlanBuilder, context: PlanContext, path: str, like: ElfInfo) -> bool:
    """Whether `path` (shipped) is an ELF shared object the loader would accept for `like`."""
    found = context.view.resolve(path)
    if found.node is None or not found.node.is_file:
        return False
    try:
        return context.loader.elf(found.path).compatible_with(like)
    except ElfError:
        return False


def _run_dirs(builder: PlanBuilder, context: PlanContext) -> None:
    target = builder.rebase("/run", follow=True)
    builder.add(Entry(target, EntryKind.DIR, 0o755), _system("system.run: runtime state (pid files, sockets)"))
    var_run = context.view.resolve("/var/run", follow=False).node
    if var_run is not None and var_run.is_symlink:
        builder.ship("/var/run", _system("system.run: the source's /var/run link"), follow=False)
    elif var_run is not None and var_run.is_dir:
        builder.add(Entry("/var/run", EntryKind.DIR, 0o755), _system("system.run: the source's /var/run"))


def _timezone(builder: PlanBuilder, context: PlanContext, zone: str) -> None:
    zone_path = f"/usr/share/zoneinfo/{zone}"
    found = context.view.resolve(zone_path)
    if found.node is None or not found.node.is_file:
        # Without /etc/localtime glibc and musl keep UTC: asked for UTC, the output already is, so nothing to say.
        if zone != "UTC":
            origin = context.profile.origin("system.timezone")
            fix = (
                "name a zone the source has, or pass --tz none"
                if from_command_line(origin)
                else "install tzdata in the source or set `timezone: none`"
            )
            builder.issue(f"{origin}: zone {zone!r} is not in the source ({zone_path}); {fix}")
        return
    builder.ship(zone_path, _system(f"system.timezone: {zone}"))
    target = builder.rebase("/etc/localtime", follow=False)
    builder.add(Entry(target, EntryKind.SYMLINK, 0o777, target=zone_path), _system(f"system.timezone: {zone}"))


def _ships_tls(builder: PlanBuilder, context: PlanContext) -> bool:
    return any(_TLS_LIBRARY.match(path.rsplit("/", 1)[-1]) for path in builder.plan.entries)


def _ca_bundle(builder: PlanBuilder, context: PlanContext, *, required: bool) -> None:
    reason = _system("system.ca-certificates: TLS libraries ship")
    for bundle in CA_BUNDLES:
        node = context.view.stat(bundle)
        if node is not None and node.is_file:
            builder.ship(bundle, reason)
            break
    else:
        if required:
            builder.issue(
                "system.ca-certificates: no CA bundle in the source (looked for "
                f"{', '.join(CA_BUNDLES)}); install ca-certificates in the source or set it to no"
            )
        return
    for link in _OPENSSL_LINKS:
        node = context.view.resolve(link, follow=False).node
        if node is not None and node.is_symlink and context.view.stat(link) is not None:
            builder.ship(link, reason, follow=False)
            builder.ship(link, reason)


def account_hint(profile: Profile, name: str, origin: str) -> str:
    """Why `name` is no account, and the fix in the words the user used (flag, or profile key)."""
    if from_command_line(origin):
        return f"{name!r} is not in the source's /etc/passwd; name a user it has, or a numeric uid"
    if any(spec.name == name for spec, _ in profile.users):  # under accounts already: the profile must create it
        return (
            f"{name!r} is listed under accounts but the source's /etc/passwd lacks it; "
            "give it {name, uid, gid, home, shell} there to create it"
        )
    return f"{name!r} is not an account of the source or the profile; add it under accounts"


def add_account_files(builder: PlanBuilder, context: PlanContext) -> None:
    """/etc/passwd and /etc/group: root, the profile's accounts, and the owners of shipped files."""
    if not context.profile.system.passwd:
        return
    db = context.accounts
    if db.user("root") is None:
        db.add_user("root", 0, 0, "/root", "/usr/sbin/nologin")
    if db.group("root") is None:
        db.add_group("root", 0, ())
    users, groups = set(context.users), set(context.groups)
    run_as = context.profile.image.user
    if run_as:
        name = run_as.split(":", 1)[0]
        if not name.isdigit():
            if db.user(name) is None:
                origin = context.profile.origin("image.user")
                builder.issue(f"{origin}: {account_hint(context.profile, name, origin)}")
            users.add(name)
    for entry in builder.plan.entries.values():
        if (account := db.user(entry.uid)) is not None:
            users.add(account.name)
        if (group := db.group(entry.gid)) is not None:
            groups.add(group.name)
    for name in list(users):
        account = db.user(name)
        if account is not None and (group := db.group(account.gid)) is not None:
            groups.add(group.name)
    shadow = _shadow_wanted(builder, context)
    shadow_group = db.group("shadow") if shadow else None
    if shadow_group is not None:
        groups.add(shadow_group.name)  # Debian's: unix_chkpwd is setgid shadow to read /etc/shadow
    builder.raise_issues()
    passwd, group_text = db.render(users, groups)
    for path, text, what in (("/etc/passwd", passwd, "users"), ("/etc/group", group_text, "groups")):
        names = ", ".join(sorted(users if what == "users" else groups))
        builder.generate(path, text.encode(), _system(f"system.passwd: {what} {names}"))
    if shadow:
        gid = shadow_group.gid if shadow_group is not None else 0
        for path, text in zip(("/etc/shadow", "/etc/gshadow"), db.render_shadow(users, groups), strict=True):
            data = text.encode()
            target = builder.rebase(path, follow=False)
            builder.add(
                Entry(target, EntryKind.FILE, 0o640, 0, gid, size=len(data), data=data),
                _system(f"system.shadow: {shadow}, every account locked"),
            )


def _shadow_wanted(builder: PlanBuilder, context: PlanContext) -> str | None:
    """Why shadow files are written (`yes`, or what reads them for `auto`), or None."""
    setting = context.profile.system.shadow
    if setting is Switch.YES:
        return "yes"
    if setting is Switch.AUTO:
        readers = sorted(p for p in builder.plan.entries if p.rsplit("/", 1)[-1] in _SHADOW_READERS)
        if readers:
            return f"auto ({readers[0]} reads it)"
    return None
