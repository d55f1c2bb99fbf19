"""The search lists a target's loader uses beyond the object's own RPATH/RUNPATH.

glibc: `/etc/ld.so.conf` (with `include` globs, sorted, relative to the including file) is what
`ldconfig` turns into `/etc/ld.so.cache`, and ld.so only consults the cache. So the conf
directories apply only when the view has an `/etc/ld.so.cache`; then the architecture's
default directories follow (Debian puts the multiarch `lib/<triplet>` first).
musl: `/etc/ld-musl-<arch>.path` (entries split on `:` and newlines; the file sits in `../etc`
relative to musl's own directory) replaces the default
`/lib:/usr/local/lib:/usr/lib`; an empty file means no system path at all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from distill import paths
from distill.target import Arch
from distill.view import View

__all__ = ["Flavor", "SearchDir", "LoaderConfig", "glibc_config", "musl_config", "read_ld_so_conf"]

_MAX_INCLUDE_DEPTH = 16
_CONF_LIMIT = 1 << 20


class Flavor(enum.StrEnum):
    """Which dynamic loader's rules apply: glibc's ld.so or musl's."""

    GLIBC = "glibc"
    MUSL = "musl"


@dataclass(frozen=True)
class SearchDir:
    """A directory in a system search list, and the file (or rule) that put it there."""

    path: str
    origin: str


@dataclass(frozen=True)
class LoaderConfig:
    """How one target loader searches, beyond per-object paths."""

    flavor: Flavor
    arch: Arch
    interp: str  # the loader's own path, as programs name it in PT_INTERP
    lib: str  # what `$LIB` expands to
    system_dirs: tuple[SearchDir, ...]  # glibc: from ld.so.conf (via the cache); musl: its path file or defaults
    default_dirs: tuple[SearchDir, ...]  # glibc only: the built-in trusted directories


def _read_text(view: View, path: str) -> str | None:
    found = view.resolve(path)
    if found.node is None or not found.node.is_file:
        return None
    with view.open(found.path) as stream:
        return stream.read(_CONF_LIMIT).decode("utf-8", "replace")


def read_ld_so_conf(view: View, path: str = "/etc/ld.so.conf") -> list[SearchDir]:
    """Directories listed by `path` and its includes, in the order ldconfig reads them."""
    out: list[SearchDir] = []
    _parse_conf(view, path, out, set(), 0)
    return out


def _parse_conf(view: View, path: str, out: list[SearchDir], seen: set[str], depth: int) -> None:
    canonical = view.resolve(path).path
    text = _read_text(view, path)
    if text is None or depth > _MAX_INCLUDE_DEPTH or canonical in seen:
        return
    seen.add(canonical)
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include" and len(words) > 1:
            for pattern in words[1:]:
                if not pattern.startswith("/"):
                    pattern = paths.join(paths.parent(path), pattern)
                for included in view.glob(paths.clean(pattern)):
                    _parse_conf(view, included, out, seen, depth + 1)
        elif words[0].lower() == "hwcap":
            continue  # obsolete; ldconfig ignores it
        else:
            directory = line.split("=", 1)[0].strip().rstrip("/") or "/"
            if directory.startswith("/"):
                out.append(SearchDir(directory, path))


def _has_dir(view: View, path: str) -> bool:
    node = view.stat(path)
    return node is not None and node.is_dir


def glibc_config(view: View, arch: Arch) -> LoaderConfig:
    """The glibc loader's system search lists for `arch` in this view."""
    multiarch = [f"/lib/{arch.triplet}", f"/usr/lib/{arch.triplet}"]
    if any(_has_dir(view, d) for d in multiarch):
        lib, defaults = f"lib/{arch.triplet}", [*multiarch, "/lib", "/usr/lib"]
    elif arch.glibc_interp.startswith("/lib64/") and _real_dir(view, ("/lib64", "/usr/lib64")):
        lib, defaults = "lib64", ["/lib64", "/usr/lib64"]
    else:
        lib, defaults = "lib", ["/lib", "/usr/lib"]
    has_cache = view.stat("/etc/ld.so.cache") is not None
    system = read_ld_so_conf(view) if has_cache else []
    return LoaderConfig(
        flavor=Flavor.GLIBC,
        arch=arch,
        interp=arch.glibc_interp,
        lib=lib,
        system_dirs=tuple(system),
        default_dirs=tuple(SearchDir(d, "default") for d in defaults),
    )


def _real_dir(view: View, candidates: tuple[str, ...]) -> bool:
    """True when one of `candidates` is a directory holding libc (not a link to the multiarch tree)."""
    return any(view.stat(paths.join(d, "libc.so.6")) is not None for d in candidates)


def musl_config(view: View, arch: Arch, interp: str | None = None) -> LoaderConfig:
    """The musl loader's search list for `arch` in this view.

    musl reads `<prefix>/etc/ld-musl-<arch>.path`, where the prefix is its own path minus the last
    two components: `/lib/ld-musl-x86_64.so.1` reads `/etc/ld-musl-x86_64.path`.
    """
    interp = interp or f"/lib/ld-musl-{arch.musl_arch}.so.1"
    prefix = interp.rsplit("/", 2)[0] if interp.count("/") >= 2 else ""
    path_file = f"{prefix}/etc/ld-musl-{arch.musl_arch}.path"
    text = _read_text(view, path_file)
    if text is None:
        system = [SearchDir(d, "musl default") for d in ("/lib", "/usr/local/lib", "/usr/lib")]
    else:
        entries = text.replace("\n", ":").split(":")
        system = [SearchDir(e.rstrip("/") or "/", path_file) for e in entries if e.startswith("/")]
    return LoaderConfig(
        flavor=Flavor.MUSL,
        arch=arch,
        interp=interp,
        lib="lib",
        system_dirs=tuple(system),
        default_dirs=(),
    )
