"""Files programs load at run time that no ELF header names, each collected on a profile's request.

`runtime:` in a profile (usually through a built-in fragment) names what to collect:

- nss: the NSS modules the output's nsswitch.conf names (none for `files` and `dns` on glibc >= 2.34,
  which has them built in);
- gconv: glibc's charset converters for iconv (`all`, or charset names), with their configuration;
- openssl: OpenSSL's configuration and its provider and engine modules, at the directories the
  shipped libcrypto was built with (read from its bytes, not by running it);
- libgcc-s: libgcc_s.so.1 when a shipped program calls pthread_cancel or pthread_exit (glibc loads it
  to unwind the thread);
- locales: compiled locales (`C.UTF-8`, `en_US.UTF-8`);
- tzdata: the time-zone database (`all`, or zone names);
- dlopen-notes: libraries listed in `.note.dlopen` ELF notes, at or above a priority;
- python: the standard library of every shipped Python interpreter, found as the interpreter finds it
  (distill.interpreters); `auto` (the default) for each one that ships, `yes` also demands one;
- perl, ruby: the standard library of every shipped Perl or Ruby, at the directories compiled into
  the interpreter (distill.scriptlibs); `auto`, `yes` and `no` as for python;
- node: the built-in modules a distribution's Node keeps outside its binary, at the paths compiled into it.
Every library shipped here gets its own closure afterwards, like any other shipped ELF.
"""

from __future__ import annotations

import re

from distill import interpreters, paths, scriptlibs
from distill.builder import PlanBuilder, PlanContext
from distill.elf import ElfInfo, undefined_symbols
from distill.errors import ElfError
from distill.hints import rodata_paths
from distill.ldconf import Flavor
from distill.plan import EntryKind, Reason, ReasonKind
from distill.specs import DlopenPriority, Switch
from distill.system import NSSWITCH

__all__ = ["add_runtime_files"]

_BUILTIN_NSS = ("files", "dns")  # inside libc.so.6 since glibc 2.34
_NSS_DATABASES = (
    "passwd",
    "group",
    "shadow",
    "gshadow",
    "hosts",
    "networks",
    "protocols",
    "services",
    "ethers",
    "rpc",
    "netgroup",
    "aliases",
    "publickey",
)
# what glibc does without an nsswitch.conf: files for everything, and dns for hosts
_NSS_DEFAULTS = "passwd: files\ngroup: files\nhosts: dns files\n"
_THREAD_EXITS = frozenset({"pthread_cancel", "pthread_exit"})
_OPENSSL_DIRS = re.compile(rb'(OPENSSLDIR|MODULESDIR|ENGINESDIR): "([^"\0]{1,200})"')


def _reason(detail: str) -> Reason:
    return Reason(ReasonKind.RUNTIME, detail)


def add_runtime_files(builder: PlanBuilder, context: PlanContext) -> None:
    """Collect what the profile's `runtime:` settings ask for."""
    config = context.profile.runtime
    if config.python is not Switch.NO:
        _python(builder, context, required=config.python is Switch.YES)
    if config.perl is not Switch.NO:
        _script_library(builder, context, "perl", required=config.perl is Switch.YES)
    if config.ruby is not Switch.NO:
        _script_library(builder, context, "ruby", required=config.ruby is Switch.YES)
    if config.node is not Switch.NO:
        _node(builder, context)
    if config.openssl:
        _openssl(builder, context)
    if config.gconv:
        _gconv(builder, context, config.gconv)
    if config.locales:
        _locales(builder, context, config.locales)
    if config.tzdata:
        _tzdata(builder, context, config.tzdata)
    if config.nss is not Switch.NO:
        _nss(builder, context)
    if config.libgcc_s is not Switch.NO:
        _libgcc(builder, context, forced=config.libgcc_s is Switch.YES)
    if config.dlopen_notes is not DlopenPriority.NO:
        _dlopen(builder, context, config.dlopen_notes)


def _glibc_root(builder: PlanBuilder, context: PlanContext) -> str | None:
    return next((c.root for c in builder.plan.closures if c.flavor is Flavor.GLIBC), None)


def _ship_library(builder: PlanBuilder, context: PlanContext, name: str, detail: str, *, required: bool) -> bool:
    """Find `name` as the first glibc program would dlopen it, and ship it."""
    root = _glibc_root(builder, context) or next((c.root for c in builder.plan.closures if c.flavor), None)
    link = context.loader.locate(name, root) if root else None
    if link is None or link.path is None:
        message = f"{detail}: {name} is not in {context.view.name}"
        (builder.issue if required else builder.warn)(message + ("; install it in the source" if required else ""))
        return False
    builder.ship(link.path, _reason(f"{detail}: {name} ({link.describe()})"))
    return True


def _shipped_elves(builder: PlanBuilder, context: PlanContext) -> list[tuple[str, ElfInfo]]:
    """Shipped ELF files, with what the loader model already parsed of them (every one is a closure member)."""
    parsed = context.loader.parsed()
    return [
        (path, parsed[path])
        for path, entry in sorted(builder.plan.entries.items())
        if entry.kind is EntryKind.FILE and entry.source == path and path in parsed
    ]


def _shipped(builder: PlanBuilder, context: PlanContext, basename: re.Pattern[str]) -> list[str]:
    return [
        e.path for e in builder.plan.entries.values() if e.kind is EntryKind.FILE and e.source and basename.match(e.path.rsplit("/", 1)[-1])
    ]


# -- OpenSSL ----------------------------------------------------------------------------------------


def _openssl(builder: PlanBuilder, context: PlanContext) -> None:
    libraries = _shipped(builder, context, re.compile(r"libcrypto\.so"))
    if not libraries:
        builder.warn("runtime.openssl: no libcrypto ships, so there are no OpenSSL modules to add")
        return
    with context.view.open(libraries[0]) as stream:
        found = {kind.decode(): value.decode() for kind, value in _OPENSSL_DIRS.findall(stream.read())}
    if "OPENSSLDIR" in found:
        builder.ship(paths.join(found["OPENSSLDIR"], "openssl.cnf"), _reason("runtime.openssl: openssl.cnf in OPENSSLDIR"))
    for key in ("MODULESDIR", "ENGINESDIR"):
        directory = found.get(key)
        if directory and (node := context.view.stat(directory)) is not None and node.is_dir:
            for match in context.view.glob(paths.join(directory, "**")):
                builder.ship(match, _reason(f"runtime.openssl: {key} of {libraries[0]}"), follow=False, whole=True)


# -- gconv ------------------------------------------------------------------------------------------


def _gconv_dir(builder: PlanBuilder, context: PlanContext) -> str | None:
    closure = next((c for c in builder.plan.closures if c.flavor is Flavor.GLIBC and c.config), None)
    triplet = closure.config.arch.triplet if closure and closure.config else "x86_64-linux-gnu"
    for candidate in (f"/usr/lib/{triplet}/gconv", "/usr/lib64/gconv", "/usr/lib/gconv"):
        node = context.view.stat(candidate)
        if node is not None and node.is_dir:
            return candidate
    return None


def _gconv(builder: PlanBuilder, context: PlanContext, charsets: tuple[str, ...]) -> None:
    directory = _gconv_dir(builder, context)
    if directory is None:
        builder.issue("runtime.gconv: the source has no gconv directory; install glibc's gconv modules in it")
        return
    if "*" in charsets:
        for match in context.view.glob(paths.join(directory, "**")):
            builder.ship(match, _reason("runtime.gconv: all"), follow=False, whole=True)
        return
    configs = [
        "gconv-modules",
        "gconv-modules.cache",
        *[m.removeprefix(directory + "/") for m in context.view.glob(paths.join(directory, "gconv-modules.d/*.conf"))],
    ]
    text = ""
    for name in configs:
        path = paths.join(directory, name)
        if context.view.stat(path) is not None:
            builder.ship(path, _reason("runtime.gconv: configuration"))
            if not name.endswith(".cache"):
                text += context.view.read_bytes(path, 1 << 20).decode("utf-8", "replace") + "\n"
    aliases: dict[str, str] = {}
    modules: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[0] == "alias":
            aliases[words[1].upper()] = words[2].upper()
        elif len(words) >= 4 and words[0] == "module":
            modules.append((words[1].upper(), words[2].upper(), words[3]))
    for charset in charsets:
        wanted = charset.upper().rstrip("/") + "//"
        wanted = aliases.get(wanted, wanted)
        files = sorted({file for source, target, file in modules if wanted in (source, target)})
        if not files:
            builder.issue(f"runtime.gconv: no gconv module converts {charset} in {context.view.name}")
        for file in files:
            builder.ship(paths.join(directory, f"{file}.so"), _reason(f"runtime.gconv: {charset}"))


# -- locales and time zones -------------------------------------------------------------------------


def _normalized_codeset(name: str) -> str:
    """glibc's rule for locale directory names: `en_US.UTF-8` is looked up as `en_US.utf8`."""
    base, dot, codeset = name.partition(".")
    codeset, at, modifier = codeset.partition("@")
    return base + (dot + re.sub(r"[^0-9a-z]", "", codeset.lower()) if dot else "") + (at + modifier if at else "")


def _locales(builder: PlanBuilder, context: PlanContext, names: tuple[str, ...]) -> None:
    for name in names:
        candidates = [f"/usr/lib/locale/{_normalized_codeset(name)}", f"/usr/lib/locale/{name}"]
        found = next((c for c in candidates if (n := context.view.stat(c)) is not None and n.is_dir), None)
        if found:
            for match in context.view.glob(paths.join(found, "**")):
                builder.ship(match, _reason(f"runtime.locales: {name}"), follow=False, whole=True)
        elif context.view.stat("/usr/lib/locale/locale-archive") is not None:
            builder.ship("/usr/lib/locale/locale-archive", _reason(f"runtime.locales: {name} (in the locale archive)"))
        else:
            builder.issue(f"runtime.locales: locale {name!r} is not compiled in the source; generate it there (locale-gen) or drop it")


def _tzdata(builder: PlanBuilder, context: PlanContext, zones: tuple[str, ...]) -> None:
    root = "/usr/share/zoneinfo"
    if "*" in zones:
        if context.view.stat(root) is None:  # the output keeps the source's behaviour, and says so
            builder.warn(
                "runtime.tzdata: the source has no time-zone database (/usr/share/zoneinfo, the "
                "tzdata package), so none ships: programs know only UTC and Python's zoneinfo "
                "has no zones; install tzdata in the source, or set `runtime.tzdata: null`"
            )
            return
        for match in context.view.glob(f"{root}/**"):
            node = context.view.lstat(match)
            target = (node.target or "") if node is not None and node.is_symlink else None
            if target is not None and not paths.clean(
                target if target.startswith("/") else paths.join(paths.parent(match), target)
            ).startswith(root + "/"):
                continue  # Debian's zoneinfo/localtime -> /etc/localtime: the system's zone, which system.timezone writes
            builder.ship(match, _reason("runtime.tzdata: all zones"), follow=False, whole=True)
        return
    for zone in zones:
        if builder.ship(f"{root}/{zone}", _reason(f"runtime.tzdata: {zone}")) is None:
            builder.issue(f"runtime.tzdata: zone {zone!r} is not in the source's {root}")


# -- NSS, libgcc_s, .note.dlopen --------------------------------------------------------------------


def _glibc_version(builder: PlanBuilder, context: PlanContext) -> tuple[int, int] | None:
    for path in _shipped(builder, context, re.compile(r"libc\.so\.6$")):
        versions = context.loader.elf(path).verdef
        numbers = [tuple(int(p) for p in v[6:].split(".")[:2]) for v in versions if re.fullmatch(r"GLIBC_2\.\d+(\.\d+)?", v)]
        if numbers:
            return max(numbers)  # type: ignore[return-value]
    return None


def _output_nsswitch(builder: PlanBuilder, context: PlanContext) -> str:
    """The nsswitch.conf the output will have: a `paths` entry's, else distill's, else none (glibc's defaults)."""
    entry = builder.plan.entry_for("/etc/nsswitch.conf")
    if entry is not None and entry.kind is EntryKind.FILE:
        if entry.data is not None:
            return entry.data.decode("utf-8", "replace")
        if entry.source:
            return context.view.read_bytes(entry.source, 1 << 20).decode("utf-8", "replace")
    if context.profile.system.nsswitch:
        return NSSWITCH
    return _NSS_DEFAULTS


def _nss(builder: PlanBuilder, context: PlanContext) -> None:
    text = _output_nsswitch(builder, context)
    services: set[str] = set()
    for line in text.splitlines():
        database, colon, rest = line.split("#", 1)[0].partition(":")
        if colon and database.strip() in _NSS_DATABASES:
            services.update(word for word in rest.split() if not word.startswith("["))
    version = _glibc_version(builder, context)
    builtin = _BUILTIN_NSS if version is not None and version >= (2, 34) else ()
    for service in sorted(services - set(builtin)):
        _ship_library(builder, context, f"libnss_{service}.so.2", f"runtime.nss: `{service}` in nsswitch.conf", required=False)


def _libgcc(builder: PlanBuilder, context: PlanContext, *, forced: bool) -> None:
    callers = []
    if not forced:
        for path, info in _shipped_elves(builder, context):
            if not info.dynamic:
                continue
            with context.view.open(path) as stream:
                try:
                    if undefined_symbols(stream, path, _THREAD_EXITS):
                        callers.append(path)
                except ElfError:
                    continue
    if forced or callers:
        detail = f"runtime.libgcc-s: {callers[0]} cancels or exits threads" if callers else "runtime.libgcc-s: yes"
        _ship_library(builder, context, "libgcc_s.so.1", detail, required=forced)


def _dlopen(builder: PlanBuilder, context: PlanContext, threshold: DlopenPriority) -> None:
    ranked = list(DlopenPriority)
    accepted = ranked[: ranked.index(threshold) + 1]
    for path, info in _shipped_elves(builder, context):
        for note in info.dlopen:
            if note.priority in accepted:
                for soname in note.sonames:
                    _ship_library(
                        builder,
                        context,
                        soname,
                        f"runtime.dlopen-notes: {path} ({note.feature or 'feature'}, {note.priority})",
                        required=note.priority == DlopenPriority.REQUIRED,
                    )


# -- interpreters -----------------------------------------------------------------------------------


def _python(builder: PlanBuilder, context: PlanContext, *, required: bool) -> None:
    """Each shipped Python program's standard library, minus STDLIB_SKIPPED."""
    parsed = context.loader.parsed()
    done: set[str] = set()
    for root in builder.plan.roots:
        canonical = context.view.resolve(root).path
        info = parsed.get(canonical)
        version = interpreters.python_version(canonical, info) if info is not None and info.interp else None
        if version is None or root in done:
            continue
        done.add(root)
        home = interpreters.find_python(context.view, root, version)
        if isinstance(home, str):
            builder.issue(
                f"runtime.python: {root} (Python {version}) could not start: {home} in {context.view.name}; "
                "install its standard library there, or set runtime.python: no"
            )
            continue
        for pattern, why in interpreters.python_files(home):
            reason = _reason(f"runtime.python: {why}")
            for match in context.view.glob(pattern):
                if interpreters.skipped(home, match):
                    continue
                builder.ship(match, reason, follow=False)  # a link's target follows with the links' closing
    if required and not done:
        builder.issue(
            "runtime.python: yes, but no shipped program is a Python interpreter; add one under binaries or set runtime.python: auto"
        )


_SCRIPT_LIBRARIES = {
    "perl": (scriptlibs.is_perl, re.compile(r"libperl\.so"), scriptlibs.perl_library, "Perl"),
    "ruby": (scriptlibs.is_ruby, re.compile(r"libruby(-[0-9.]+)?\.so"), scriptlibs.ruby_library, "Ruby"),
}


def _script_library(builder: PlanBuilder, context: PlanContext, key: str, *, required: bool) -> None:
    """Each shipped Perl's or Ruby's standard library, at the directories compiled into it or its library."""
    recognise, library_name, find, language = _SCRIPT_LIBRARIES[key]
    parsed = context.loader.parsed()
    shared = _shipped(builder, context, library_name)
    done: set[str] = set()
    for root in builder.plan.roots:
        canonical = context.view.resolve(root).path
        info = parsed.get(canonical)
        if info is None or not info.interp or not recognise(canonical, info) or canonical in done:
            continue
        done.add(canonical)
        strings: list[str] = []
        for path in (canonical, *shared):
            with context.view.open(context.view.resolve(path).path) as stream:
                strings.extend(rodata_paths(stream))
        library = find(context.view, strings)
        if isinstance(library, str):
            builder.issue(
                f"runtime.{key}: {root} ({language}) could not start: {library} in {context.view.name}; "
                f"install its standard library there, or set runtime.{key}: no"
            )
            continue
        for directory in library.directories:
            reason = _reason(f"runtime.{key}: the standard library of {root} ({library.how})")
            for match in context.view.glob(paths.join(directory, "**")):
                if not scriptlibs.skipped(library, match):
                    builder.ship(match, reason, follow=False)
    if required and not done:
        builder.issue(
            f"runtime.{key}: yes, but no shipped program is a {language} interpreter; add one under binaries or set runtime.{key}: auto"
        )


def _node(builder: PlanBuilder, context: PlanContext) -> None:
    for path, _ in _shipped_elves(builder, context):
        if interpreters.is_node(path):
            for module in interpreters.node_builtins(context.view, path):
                builder.ship(module, _reason(f"runtime.node: a built-in module {path} loads from outside itself"))
