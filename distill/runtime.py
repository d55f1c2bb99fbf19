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
- dlopen-notes: libraries listed in `.note.dlopen` ELF notes, at or above a priority.
Every library shipped here gets its own closure afterwards, like any other shipped ELF.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from distill import paths
from distill.elf import ElfInfo, undefined_symbols
from distill.errors import ElfError
from distill.plan import EntryKind, Reason
from distill.system import NSSWITCH

if TYPE_CHECKING:
    from distill.planner import Planner

__all__ = ["add_runtime_files"]

_BUILTIN_NSS = ("files", "dns")  # inside libc.so.6 since glibc 2.34
_NSS_DATABASES = ("passwd", "group", "shadow", "gshadow", "hosts", "networks", "protocols", "services", "ethers", "rpc",
                  "netgroup", "aliases", "publickey")
_PRIORITIES = ("required", "recommended", "suggested")
_THREAD_EXITS = frozenset({"pthread_cancel", "pthread_exit"})
_OPENSSL_DIRS = re.compile(rb'(OPENSSLDIR|MODULESDIR|ENGINESDIR): "([^"\0]{1,200})"')


def _reason(detail: str) -> Reason:
    return Reason("runtime", detail)


def add_runtime_files(planner: Planner) -> None:
    """Collect what the profile's `runtime:` settings ask for."""
    config = planner.profile.runtime
    if config.openssl:
        _openssl(planner)
    if config.gconv:
        _gconv(planner, config.gconv)
    if config.locales:
        _locales(planner, config.locales)
    if config.tzdata:
        _tzdata(planner, config.tzdata)
    if config.nss != "no":
        _nss(planner)
    if config.libgcc_s != "no":
        _libgcc(planner, forced=config.libgcc_s == "yes")
    if config.dlopen_notes != "no":
        _dlopen(planner, config.dlopen_notes)


def _glibc_root(planner: Planner) -> str | None:
    return next((c.root for c in planner.plan.closures if c.flavor == "glibc"), None)


def _ship_library(planner: Planner, name: str, detail: str, *, required: bool) -> bool:
    """Find `name` as the first glibc program would dlopen it, and ship it."""
    root = _glibc_root(planner) or next((c.root for c in planner.plan.closures if c.flavor), None)
    link = planner.loader.locate(name, root) if root else None
    if link is None or link.path is None:
        message = f"{detail}: {name} is not in {planner.view.name}"
        (planner.issues if required else planner.plan.warnings).append(message + ("; install it in the source" if required else ""))
        return False
    planner.ship(link.path, _reason(f"{detail}: {name} ({link.describe()})"))
    return True


def _shipped_elves(planner: Planner) -> list[tuple[str, ElfInfo]]:
    """Shipped ELF files, with what the loader model already parsed of them (every one is a closure member)."""
    parsed = planner.loader.parsed()
    return [(path, parsed[path]) for path, entry in sorted(planner.plan.entries.items())
            if entry.kind is EntryKind.FILE and entry.source == path and path in parsed]


def _shipped(planner: Planner, basename: re.Pattern[str]) -> list[str]:
    return [e.path for e in planner.plan.entries.values()
            if e.kind is EntryKind.FILE and e.source and basename.match(e.path.rsplit("/", 1)[-1])]


# -- OpenSSL ----------------------------------------------------------------------------------------


def _openssl(planner: Planner) -> None:
    libraries = _shipped(planner, re.compile(r"libcrypto\.so"))
    if not libraries:
        planner.plan.warnings.append("runtime.openssl: no libcrypto ships, so there are no OpenSSL modules to add")
        return
    with planner.view.open(libraries[0]) as stream:
        found = {kind.decode(): value.decode() for kind, value in _OPENSSL_DIRS.findall(stream.read())}
    if "OPENSSLDIR" in found:
        planner.ship(paths.join(found["OPENSSLDIR"], "openssl.cnf"), _reason("runtime.openssl: openssl.cnf in OPENSSLDIR"))
    for key in ("MODULESDIR", "ENGINESDIR"):
        directory = found.get(key)
        if directory and (node := planner.view.stat(directory)) is not None and node.is_dir:
            for match in planner.view.glob(paths.join(directory, "**")):
                planner.ship(match, _reason(f"runtime.openssl: {key} of {libraries[0]}"), follow=False)


# -- gconv ------------------------------------------------------------------------------------------


def _gconv_dir(planner: Planner) -> str | None:
    closure = next((c for c in planner.plan.closures if c.flavor == "glibc" and c.config), None)
    triplet = closure.config.arch.triplet if closure and closure.config else "x86_64-linux-gnu"
    for candidate in (f"/usr/lib/{triplet}/gconv", "/usr/lib64/gconv", "/usr/lib/gconv"):
        node = planner.view.stat(candidate)
        if node is not None and node.is_dir:
            return candidate
    return None


def _gconv(planner: Planner, charsets: tuple[str, ...]) -> None:
    directory = _gconv_dir(planner)
    if directory is None:
        planner.issues.append("runtime.gconv: the source has no gconv directory; install glibc's gconv modules in it")
        return
    if "*" in charsets:
        for match in planner.view.glob(paths.join(directory, "**")):
            planner.ship(match, _reason("runtime.gconv: all"), follow=False)
        return
    configs = ["gconv-modules", "gconv-modules.cache", *[m.removeprefix(directory + "/")
                                                        for m in planner.view.glob(paths.join(directory, "gconv-modules.d/*.conf"))]]
    text = ""
    for name in configs:
        path = paths.join(directory, name)
        if planner.view.stat(path) is not None:
            planner.ship(path, _reason("runtime.gconv: configuration"))
            if not name.endswith(".cache"):
                text += planner.view.read_bytes(path, 1 << 20).decode("utf-8", "replace") + "\n"
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
            planner.issues.append(f"runtime.gconv: no gconv module converts {charset} in {planner.view.name}")
        for file in files:
            planner.ship(paths.join(directory, f"{file}.so"), _reason(f"runtime.gconv: {charset}"))


# -- locales and time zones -------------------------------------------------------------------------


def _normalized_codeset(name: str) -> str:
    """glibc's rule for locale directory names: `en_US.UTF-8` is looked up as `en_US.utf8`."""
    base, dot, codeset = name.partition(".")
    codeset, at, modifier = codeset.partition("@")
    return base + (dot + re.sub(r"[^0-9a-z]", "", codeset.lower()) if dot else "") + (at + modifier if at else "")


def _locales(planner: Planner, names: tuple[str, ...]) -> None:
    for name in names:
        candidates = [f"/usr/lib/locale/{_normalized_codeset(name)}", f"/usr/lib/locale/{name}"]
        found = next((c for c in candidates if (n := planner.view.stat(c)) is not None and n.is_dir), None)
        if found:
            for match in planner.view.glob(paths.join(found, "**")):
                planner.ship(match, _reason(f"runtime.locales: {name}"), follow=False)
        elif planner.view.stat("/usr/lib/locale/locale-archive") is not None:
            planner.ship("/usr/lib/locale/locale-archive", _reason(f"runtime.locales: {name} (in the locale archive)"))
        else:
            planner.issues.append(f"runtime.locales: locale {name!r} is not compiled in the source; generate it there "
                                  "(locale-gen) or drop it")


def _tzdata(planner: Planner, zones: tuple[str, ...]) -> None:
    root = "/usr/share/zoneinfo"
    if "*" in zones:
        if planner.view.stat(root) is None:
            planner.issues.append("runtime.tzdata: the source has no /usr/share/zoneinfo; install tzdata in it")
            return
        for match in planner.view.glob(f"{root}/**"):
            planner.ship(match, _reason("runtime.tzdata: all zones"), follow=False)
        return
    for zone in zones:
        if planner.ship(f"{root}/{zone}", _reason(f"runtime.tzdata: {zone}")) is None:
            planner.issues.append(f"runtime.tzdata: zone {zone!r} is not in the source's {root}")


# -- NSS, libgcc_s, .note.dlopen --------------------------------------------------------------------


def _glibc_version(planner: Planner) -> tuple[int, int] | None:
    for path in _shipped(planner, re.compile(r"libc\.so\.6$")):
        versions = planner.loader.elf(path).verdef
        numbers = [tuple(int(p) for p in v[6:].split(".")[:2]) for v in versions if re.fullmatch(r"GLIBC_2\.\d+(\.\d+)?", v)]
        if numbers:
            return max(numbers)  # type: ignore[return-value]
    return None


def _nss(planner: Planner) -> None:
    if planner.profile.system.nsswitch:
        text = NSSWITCH  # the output gets distill's nsswitch.conf
    else:
        try:
            text = planner.view.read_bytes("/etc/nsswitch.conf", 1 << 20).decode("utf-8", "replace")
        except FileNotFoundError:
            return
    services: set[str] = set()
    for line in text.splitlines():
        database, colon, rest = line.split("#", 1)[0].partition(":")
        if colon and database.strip() in _NSS_DATABASES:
            services.update(word for word in rest.split() if not word.startswith("["))
    version = _glibc_version(planner)
    builtin = _BUILTIN_NSS if version is not None and version >= (2, 34) else ()
    for service in sorted(services - set(builtin)):
        _ship_library(planner, f"libnss_{service}.so.2", f"runtime.nss: `{service}` in nsswitch.conf", required=False)


def _libgcc(planner: Planner, *, forced: bool) -> None:
    callers = []
    if not forced:
        for path, info in _shipped_elves(planner):
            if not info.dynamic:
                continue
            with planner.view.open(path) as stream:
                try:
                    if undefined_symbols(stream, path, _THREAD_EXITS):
                        callers.append(path)
                except ElfError:
                    continue
    if forced or callers:
        detail = f"runtime.libgcc-s: {callers[0]} cancels or exits threads" if callers else "runtime.libgcc-s: yes"
        _ship_library(planner, "libgcc_s.so.1", detail, required=forced)


def _dlopen(planner: Planner, threshold: str) -> None:
    accepted = _PRIORITIES[: _PRIORITIES.index(threshold) + 1]
    for path, info in _shipped_elves(planner):
        for note in info.dlopen:
            if note.priority in accepted:
                for soname in note.sonames:
                    _ship_library(planner, soname, f"runtime.dlopen-notes: {path} ({note.feature or 'feature'}, {note.priority})",
                                  required=note.priority == "required")
