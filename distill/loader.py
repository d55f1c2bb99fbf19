"""A static model of the dynamic loader: which files a program loads, and by which rule.

It reads ELF files through a `View` and never runs anything. The order of events follows
glibc's `_dl_map_object_deps` (breadth first; a name already loaded, by path, SONAME or the
name it was requested by, is reused) and `_dl_map_object` (search order below), or musl's
`load_library` when the program's interpreter is musl's.

glibc, for a DT_NEEDED name without a slash, requested by object L:
  1. DT_RPATH of L, then of L's loader, and so on up to the executable, but only when L has no
     DT_RUNPATH (an object with DT_RUNPATH has no DT_RPATH at all);
  2. LD_LIBRARY_PATH, when the image's environment sets it;
  3. DT_RUNPATH of L (L's own dependencies only);
  4. the ld.so.cache, modelled by the ld.so.conf directories (skipped under DF_1_NODEFLIB of L);
  5. the default directories (also skipped under DF_1_NODEFLIB).
A candidate whose ELF class, data encoding, machine or OS ABI differs from L is skipped.
`$ORIGIN` is the directory the object was found in (symlinks not followed), except for the
executable, whose origin the kernel reports as its resolved path (/proc/self/exe).
glibc-hwcaps and legacy hwcap subdirectories are never chosen: distill ships the baseline
library, so the output does not depend on the CPU of the machine it was built on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from distill import paths
from distill.elf import ElfInfo, is_elf, read_elf
from distill.errors import ElfError, SourceError
from distill.ldconf import Flavor, LoaderConfig, SearchDir, glibc_config, musl_config
from distill.target import Platform, arch_of
from distill.view import View

__all__ = ["Rule", "Link", "Closure", "LoaderEnv", "Loader"]

# musl answers these names with itself (ldso/dynlink.c, "reserved")
_MUSL_SELF = ("c.", "pthread.", "rt.", "m.", "dl.", "util.", "xnet.")


class Rule(enum.StrEnum):
    """The loader rule that found (or failed to find) one dependency."""

    PT_INTERP = "PT_INTERP"
    NEEDED_PATH = "DT_NEEDED path"
    RPATH = "DT_RPATH"
    RUNPATH = "DT_RUNPATH"
    LD_LIBRARY_PATH = "LD_LIBRARY_PATH"
    LD_SO_CONF = "ld.so.conf"
    DEFAULT_PATH = "default path"
    MUSL_PATH = "musl path"
    ALREADY_LOADED = "already loaded"
    NOT_FOUND = "not found"


@dataclass(frozen=True)
class Link:
    """One dependency edge: `requester` asked for `name`; the loader opens `path` by `rule`."""

    requester: str
    name: str
    path: str | None  # None: not found
    rule: Rule
    detail: str = ""  # the file or value behind the rule, e.g. /etc/ld.so.conf.d/x86_64-linux-gnu.conf
    searched: tuple[str, ...] = ()  # candidates tried when not found
    notes: tuple[str, ...] = ()  # candidates skipped, and why

    def describe(self) -> str:
        """`rule: detail`, the form reports use."""
        return f"{self.rule}: {self.detail}" if self.detail else self.rule


@dataclass(frozen=True)
class Closure:
    """Everything one root loads, in load order."""

    root: str
    config: LoaderConfig | None  # None for a static root
    objects: tuple[str, ...]  # paths as the loader opens them; the root first
    links: tuple[Link, ...]

    @property
    def flavor(self) -> Flavor | None:
        """glibc, musl, or None for a static root."""
        return self.config.flavor if self.config else None

    @property
    def missing(self) -> tuple[Link, ...]:
        return tuple(link for link in self.links if link.path is None)

    def resolved(self, requester: str) -> dict[str, str]:
        """DT_NEEDED name -> path for one requester (used by the symbol-version check)."""
        return {ln.name: ln.path for ln in self.links if ln.requester == requester and ln.path is not None}


@dataclass(frozen=True)
class LoaderEnv:
    """The process the loader runs in, as the image config sets it up: the same for planning and checks."""

    cwd: str = "/"  # relative DT_NEEDED paths and RPATH entries are relative to the working directory
    library_path: tuple[str, ...] = ()  # LD_LIBRARY_PATH; an empty element means the working directory
    platform: Platform | None = None  # the platform asked for, when no ELF file or image says it


@dataclass(eq=False)
class _Object:
    path: str
    canonical: str
    info: ElfInfo
    origin: str
    loader: _Object | None = None
    names: set[str] = field(default_factory=set)


@dataclass
class _Search:
    """State of one name lookup: candidates tried, skipped, and whether the loader gave up (musl)."""

    name: str
    searched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: bool = False


class Loader:
    """Resolves closures in one view, caching parsed ELF files and loader configurations."""

    def __init__(self, view: View, env: LoaderEnv | None = None, *, parsed: Mapping[str, ElfInfo] | None = None) -> None:
        self.view = view
        self.env = env or LoaderEnv()
        self.cwd = self.env.cwd
        self.library_path = [entry.rstrip("/") or "/" if entry else self.cwd for entry in self.env.library_path]
        self._elf: dict[str, ElfInfo | ElfError] = dict(parsed or {})
        self._configs: dict[tuple[str, object, str | None], LoaderConfig] = {}

    def elf(self, canonical: str) -> ElfInfo:
        """Parsed ELF facts for the regular file at canonical `canonical` (cached)."""
        if canonical not in self._elf:
            try:
                with self.view.open(canonical) as stream:
                    self._elf[canonical] = read_elf(stream, canonical)
            except ElfError as exc:
                self._elf[canonical] = exc
        cached = self._elf[canonical]
        if isinstance(cached, ElfError):
            raise cached
        return cached

    def parsed(self) -> dict[str, ElfInfo]:
        """Every ELF file parsed so far, by canonical path (to seed another Loader on the same files)."""
        return {path: info for path, info in self._elf.items() if isinstance(info, ElfInfo)}

    def is_elf(self, canonical: str) -> bool:
        """True when the regular file at `canonical` starts with the ELF magic."""
        with self.view.open(canonical) as stream:
            return is_elf(stream.read(4))

    def config_for(self, info: ElfInfo) -> LoaderConfig | None:
        """The loader that would load `info`, or None for an architecture without a table."""
        arch = arch_of(info)
        if arch is None:
            return None
        if info.interp:
            flavor = Flavor.MUSL if paths.split(info.interp)[-1].startswith("ld-musl-") else Flavor.GLIBC
        elif self.view.stat(arch.glibc_interp) is None and self.view.stat(f"/lib/ld-musl-{arch.musl_arch}.so.1"):
            flavor = Flavor.MUSL
        else:
            flavor = Flavor.GLIBC
        interp = info.interp if info.interp and flavor is Flavor.MUSL else None
        key = (flavor, arch, interp)
        if key not in self._configs:
            self._configs[key] = musl_config(self.view, arch, interp) if flavor is Flavor.MUSL else glibc_config(self.view, arch)
        return self._configs[key]

    def closure(self, path: str, *, host: str | None = None, companions: tuple[str, ...] = ()) -> Closure:
        """What the loader maps for the ELF at `path` (a program, or a library opened by dlopen).

        With `host`, `path` is a plugin that program dlopens into its own process: a DT_NEEDED name
        an object of that process already carries (the host's closure, and the `companions` the host
        loads too, such as a JVM's libjvm.so) is reused, as glibc's dlopen does, before any search;
        the search itself follows the plugin's RPATH and the host's, LD_LIBRARY_PATH, the plugin's
        RUNPATH, the cache and the default directories.
        """
        found = self.view.resolve(path)
        if found.node is None or not found.node.is_file:
            raise SourceError(f"{self.view.name}: {path}: no such file")
        info = self.elf(found.path)
        config = self.config_for(info)
        if config is None or not (info.dynamic or info.interp):
            return Closure(path, None, (path,), ())
        if host is None:
            main, loaded, links, rtld = self._start(path, found.path, info, config)
            self._walk([main], main, loaded, links, config, rtld)
            used = {link.path for link in links if link.path is not None}
            return Closure(path, config, tuple(obj.path for obj in loaded if obj is main or obj.path in used), tuple(links))
        process, loaded, _, rtld = self._host_process(host, tuple(c for c in companions if c != path), config)
        plugin = _Object(path, found.path, info, paths.parent(path), process, {path, *([info.soname] if info.soname else [])})
        before = len(loaded)
        loaded.append(plugin)
        links = []
        self._walk([plugin], process, loaded, links, config, rtld)
        used = {link.path for link in links if link.path is not None and link.rule is not Rule.ALREADY_LOADED}
        return Closure(path, config, (path, *[obj.path for obj in loaded[before + 1 :] if obj.path in used]), tuple(links))

    def _start(
        self, path: str, canonical: str, info: ElfInfo, config: LoaderConfig
    ) -> tuple[_Object, list[_Object], list[Link], _Object | None]:
        """A new process for the program (or library) at `path`: the object itself and the dynamic loader."""
        # the kernel reports a program's resolved path; a dlopen'ed library keeps the name it was opened by
        origin = paths.parent(canonical if info.interp else path)
        main = _Object(path, canonical, info, origin, names={path, *([info.soname] if info.soname else [])})
        loaded = [main]
        links: list[Link] = []
        rtld = self._rtld(info, config, loaded, links, path)
        return main, loaded, links, rtld

    def _walk(
        self, queue: list[_Object], main: _Object, loaded: list[_Object], links: list[Link], config: LoaderConfig, rtld: _Object | None
    ) -> None:
        """Map the DT_NEEDED names of `queue` breadth first, as `_dl_map_object_deps` does."""
        while queue:
            obj = queue.pop(0)
            for name in obj.info.needed:
                link, new = self._map(name, obj, main, loaded, config, rtld)
                links.append(link)
                if new is not None:
                    loaded.append(new)
                    queue.append(new)

    def _host_process(
        self, host: str, companions: tuple[str, ...], config: LoaderConfig
    ) -> tuple[_Object, list[_Object], list[Link], _Object | None]:
        """The objects of `host`'s process once it runs: its closure, then each companion it loads by path."""
        found = self.view.resolve(host)
        if found.node is None or not found.node.is_file:
            raise SourceError(f"{self.view.name}: {host}: no such file (the host of a plugin)")
        info = self.elf(found.path)
        main, loaded, links, rtld = self._start(host, found.path, info, self.config_for(info) or config)
        self._walk([main], main, loaded, links, config, rtld)
        for companion in companions:
            resolved = self.view.resolve(companion)
            if resolved.node is None or not resolved.node.is_file or any(o.canonical == resolved.path for o in loaded):
                continue
            try:
                extra = self.elf(resolved.path)
            except ElfError:
                continue
            loaded.append(
                _Object(
                    companion, resolved.path, extra, paths.parent(companion), main, {companion, *([extra.soname] if extra.soname else [])}
                )
            )
        return main, loaded, links, rtld

    def locate(self, name: str, requester: str) -> Link:
        """Where `requester` would find `name` if it asked for it (as dlopen(name) does): its own search
        paths, then the system's. Nothing is treated as loaded but the dynamic loader."""
        found = self.view.resolve(requester)
        if found.node is None or not found.node.is_file:
            raise SourceError(f"{self.view.name}: {requester}: no such file")
        info = self.elf(found.path)
        config = self.config_for(info)
        if config is None:
            return Link(requester, name, None, Rule.NOT_FOUND)
        origin = paths.parent(found.path if info.interp else requester)
        main = _Object(requester, found.path, info, origin, names={requester})
        loaded = [main]
        rtld = self._rtld(info, config, loaded, [], requester)
        return self._map(name, main, main, loaded, config, rtld)[0]

    def _rtld(self, info: ElfInfo, config: LoaderConfig, loaded: list[_Object], links: list[Link], root: str) -> _Object | None:
        """The dynamic loader itself, which is always mapped (by PT_INTERP, or already present)."""
        interp = info.interp or config.interp
        found = self.view.resolve(interp)
        if info.interp:
            ok = found.node is not None and found.node.is_file
            links.append(Link(root, interp, interp if ok else None, Rule.PT_INTERP, searched=(interp,)))
            if not ok:
                return None
        elif found.node is None or not found.node.is_file:
            return None
        try:
            rtld_info = self.elf(found.path)
        except ElfError:
            return None
        names = {interp, *([rtld_info.soname] if rtld_info.soname else [])}
        rtld = _Object(interp, found.path, rtld_info, paths.parent(interp), names=names)
        loaded.append(rtld)
        return rtld

    def _map(
        self,
        name: str,
        requester: _Object,
        main: _Object,
        loaded: list[_Object],
        config: LoaderConfig,
        rtld: _Object | None,
    ) -> tuple[Link, _Object | None]:
        """`_dl_map_object` (glibc) or `load_library` (musl) for one DT_NEEDED name."""
        musl = config.flavor is Flavor.MUSL
        if "/" in name:
            path = name if name.startswith("/") else paths.join(self.cwd, name)
            for obj in loaded:
                if name in obj.names or obj.path == path:
                    return Link(requester.path, name, obj.path, Rule.ALREADY_LOADED), None
            search = _Search(name)
            hit = self._candidate(path, requester, search, stop_at_first=musl)
            if hit is None:
                return self._missing(requester, name, search), None
            return self._found(name, requester, hit, path, Rule.NEEDED_PATH, name, loaded)
        if musl and rtld is not None and name.startswith("lib") and name[3:].startswith(_MUSL_SELF):
            return Link(requester.path, name, rtld.path, Rule.ALREADY_LOADED, "musl libc itself"), None
        for obj in loaded:
            if name in obj.names:
                return Link(requester.path, name, obj.path, Rule.ALREADY_LOADED, "the dynamic loader" if obj is rtld else ""), None
        search = _Search(name)
        for dirs, rule, detail in self._search_lists(requester, main, config):
            for directory in dirs:
                candidate = paths.join(directory, name)
                hit = self._candidate(candidate, requester, search, stop_at_first=musl)
                if hit is not None:
                    return self._found(name, requester, hit, candidate, rule, detail or directory, loaded)
                if search.stopped:
                    return self._missing(requester, name, search), None
        return self._missing(requester, name, search), None

    def _search_lists(self, requester: _Object, main: _Object, config: LoaderConfig) -> list[tuple[list[str], Rule, str]]:
        """(directories, rule, detail) groups in the order the target loader tries them."""
        lists: list[tuple[list[str], Rule, str]] = []
        environment = [(self.library_path, Rule.LD_LIBRARY_PATH, "")] if self.library_path else []
        chain: _Object | None
        if config.flavor is Flavor.MUSL:
            lists.extend(environment)
            chain = requester
            while chain is not None:
                value = chain.info.runpath if chain.info.runpath is not None else chain.info.rpath
                if value:
                    lists.append((self._expand(value, chain, config), Rule.RUNPATH if chain.info.runpath else Rule.RPATH, chain.path))
                chain = chain.loader
            for entry in config.system_dirs:
                lists.append(([entry.path], Rule.MUSL_PATH, entry.origin))
            return lists
        if requester.info.runpath is None:
            chain = requester
            did_main = False
            while chain is not None:
                if chain.info.rpath:
                    lists.append((self._expand(chain.info.rpath, chain, config), Rule.RPATH, chain.path))
                did_main |= chain is main
                chain = chain.loader
            if not did_main and main.info.rpath:
                lists.append((self._expand(main.info.rpath, main, config), Rule.RPATH, main.path))
        lists.extend(environment)
        if requester.info.runpath:
            lists.append((self._expand(requester.info.runpath, requester, config), Rule.RUNPATH, requester.path))
        if not requester.info.nodeflib:
            lists.extend(_by_origin(config.system_dirs, Rule.LD_SO_CONF))
            lists.extend(_by_origin(config.default_dirs, Rule.DEFAULT_PATH))
        return lists

    def _expand(self, value: str, obj: _Object, config: LoaderConfig) -> list[str]:
        """Split an RPATH/RUNPATH and expand $ORIGIN, $LIB and $PLATFORM for the target."""
        tokens = {"ORIGIN": obj.origin}
        if config.flavor is Flavor.GLIBC:
            tokens["LIB"] = config.lib
            if config.arch.platform:
                tokens["PLATFORM"] = config.arch.platform
        out = []
        for element in value.split(":"):
            expanded = _substitute(element, tokens)
            if not expanded:
                continue
            if not expanded.startswith("/"):
                expanded = paths.join(self.cwd, expanded)
            # kept as the loader spells it: `..` after a symlink is resolved by the view, not lexically
            out.append(expanded.rstrip("/") or "/")
        return out

    def _candidate(self, path: str, requester: _Object, search: _Search, *, stop_at_first: bool) -> tuple[str, ElfInfo] | None:
        """(canonical, info) when `path` is a usable library, else None (musl stops at the first file it opens)."""
        search.searched.append(path)
        found = self.view.resolve(path)
        if found.node is None or not found.node.is_file:
            return None
        try:
            info = self.elf(found.path)
        except ElfError as exc:
            search.notes.append(f"{path}: {exc.message.split(': ', 1)[-1]}")
            search.stopped = stop_at_first
            return None
        if not info.compatible_with(requester.info):
            search.notes.append(f"{path}: skipped, ELF class/machine/ABI differs from {requester.path}")
            search.stopped = stop_at_first
            return None
        return found.path, info

    def _found(
        self, name: str, requester: _Object, hit: tuple[str, ElfInfo], path: str, rule: Rule, detail: str, loaded: list[_Object]
    ) -> tuple[Link, _Object | None]:
        canonical, info = hit
        for obj in loaded:  # the same file under another name is not loaded twice
            if obj.canonical == canonical:
                obj.names.add(name)
                return Link(requester.path, name, obj.path, Rule.ALREADY_LOADED, "same file"), None
        names = {name, *([info.soname] if info.soname else [])}
        new = _Object(path, canonical, info, paths.parent(path), requester, names)
        return Link(requester.path, name, path, rule, detail), new

    @staticmethod
    def _missing(requester: _Object, name: str, search: _Search) -> Link:
        return Link(requester.path, name, None, Rule.NOT_FOUND, searched=tuple(search.searched), notes=tuple(search.notes))


def _by_origin(dirs: tuple[SearchDir, ...], rule: Rule) -> list[tuple[list[str], Rule, str]]:
    return [([entry.path], rule, entry.origin if entry.origin != "default" else "") for entry in dirs]


def _substitute(element: str, tokens: dict[str, str]) -> str | None:
    """Expand `$NAME` and `${NAME}`; an unknown-but-recognised token drops the element (glibc)."""
    out = []
    i = 0
    while i < len(element):
        char = element[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        for token in ("ORIGIN", "LIB", "PLATFORM"):
            for form in (token, "{" + token + "}"):
                if element.startswith(form, i + 1):
                    end = i + 1 + len(form)
                    # a bare token must end at a non-identifier character
                    if form == token and end < len(element) and (element[end].isalnum() or element[end] == "_"):
                        continue
                    if token not in tokens:
                        return None
                    out.append(tokens[token])
                    i = end
                    break
            else:
                continue
            break
        else:
            out.append(char)
            i += 1
    return "".join(out)
