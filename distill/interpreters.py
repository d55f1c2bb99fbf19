"""Interpreters whose standard library no ELF header names, found the way the interpreter finds it.

A Python interpreter loads `lib/pythonX.Y/` at start-up; no DT_NEEDED says so, and Debian splits it
over versioned packages whose names change every release. So the library is located statically, as
CPython's own start-up code (Modules/getpath.py) locates it, without running anything:

- the version comes from the program's name (`python3.13`), else from the libpython it links
  (`libpython3.13.so.1.0`), else from its own SONAME;
- a `pyvenv.cfg` next to the program or one directory up makes it a virtual environment: its `home`
  is the base interpreter's directory, and the environment's site-packages belongs to the app;
- the prefix is the first directory, walking up from the real program's directory (symlinks
  resolved), that holds `lib/pythonX.Y/os.py` (or `.pyc`); the platform part (`lib-dynload`) is
  found the same way. That covers Debian's /usr, a /usr/local build and a relocated tree alike.

Node keeps its built-in modules inside its binary, except where a distribution builds it with some of them
"externalized" (Debian: cjs-module-lexer, undici, acorn, minimatch under /usr/share/nodejs): their paths
are compiled into node or libnode as strings, and node aborts at start-up without them. `node_builtins`
reads those strings.

This module only reads the source; the runtime collectors ship what it returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from distill import paths
from distill.elf import ElfInfo
from distill.hints import rodata_paths
from distill.view import View

__all__ = ["STDLIB_SKIPPED", "PythonHome", "find_python", "is_node", "node_builtins", "python_files", "python_version", "skipped"]

_NAME = re.compile(r"python(3)\.(\d+)(t?)\Z")
_LIBPYTHON = re.compile(r"libpython(3)\.(\d+)(t?)\.so(\.[0-9.]+)?\Z")
_NODE = re.compile(r"(node|nodejs|libnode\.so(\.[0-9.]+)?)\Z")
_SCRIPT = re.compile(r"\.(js|mjs|cjs|json|wasm)\Z")
_PLATLIBDIRS = ("lib", "lib64")  # CPython's PLATLIBDIR: lib upstream and on Debian, lib64 on Fedora
# What a running program does not import from the standard library: the regression tests, byte code
# caches (rebuilt in memory when absent), third-party packages (the app's own business), and the
# build-time configuration directory.
STDLIB_SKIPPED = ("test/**", "**/__pycache__/**", "site-packages/**", "dist-packages/**", "config-*/**")


@dataclass(frozen=True)
class PythonHome:
    """Where one shipped Python interpreter finds its standard library."""

    interpreter: str  # the path as the program is started (a profile binary, a #! line)
    version: str  # "3.13", "3.13t" for a free-threaded build
    stdlib: str  # prefix/lib/python3.13
    platstdlib: str  # exec_prefix/lib/python3.13 (holds lib-dynload)
    how: str  # one line saying how it was found
    venv: str | None = None  # the virtual environment's directory, when pyvenv.cfg made one
    site: tuple[str, ...] = field(default=())  # the venv's site-packages directories


def python_version(canonical: str, info: ElfInfo) -> str | None:
    """`3.13` for a CPython interpreter (by name, linked libpython, or SONAME), else None."""
    for candidate in (paths.split(canonical)[-1] if canonical != "/" else "", *info.needed, info.soname or ""):
        match = _NAME.match(candidate) or _LIBPYTHON.match(candidate)
        if match:
            return f"{match.group(1)}.{match.group(2)}{match.group(3)}"
    return None


def _is_file(view: View, path: str) -> bool:
    node = view.stat(path)
    return node is not None and node.is_file


def _is_dir(view: View, path: str) -> bool:
    node = view.stat(path)
    return node is not None and node.is_dir


def _search_up(view: View, start: str, landmarks: tuple[str, ...], *, directory: bool = False) -> str | None:
    """The first of `start` and its ancestors holding one of `landmarks` (getpath.py's search_up)."""
    current = start
    while True:
        for landmark in landmarks:
            if (_is_dir if directory else _is_file)(view, paths.join(current, landmark)):
                return current
        if current == "/":
            return None
        current = paths.parent(current)


def _venv(view: View, interpreter: str) -> tuple[str, str] | None:
    """(venv directory, home) when pyvenv.cfg is one level above the program's directory or beside it."""
    program_dir = paths.parent(interpreter)
    for venv in (paths.parent(program_dir), program_dir):
        config = paths.join(venv, "pyvenv.cfg")
        if not _is_file(view, config):
            continue
        for line in view.read_bytes(config, 1 << 16).decode("utf-8", "replace").splitlines():
            key, equals, value = line.partition("=")
            if equals and key.strip().lower() == "home" and value.strip().startswith("/"):
                return venv, paths.clean(value.strip())
        return None
    return None


def find_python(view: View, interpreter: str, version: str) -> PythonHome | str:
    """Where `interpreter` (Python `version`) finds its standard library, or a sentence saying why not."""
    subdirs = tuple(f"{lib}/python{version}" for lib in _PLATLIBDIRS)
    landmarks = tuple(f"{sub}/{name}" for sub in subdirs for name in ("os.py", "os.pyc"))
    venv = _venv(view, interpreter)
    start = venv[1] if venv else paths.parent(view.resolve(interpreter).path)
    prefix = _search_up(view, start, landmarks)
    if prefix is None:
        return f"no {subdirs[0]}/os.py in {start} or any directory above it" + (f" (home of {venv[0]}/pyvenv.cfg)" if venv else "")
    stdlib = next(paths.join(prefix, sub) for sub in subdirs if _is_dir(view, paths.join(prefix, sub)))
    dynload = tuple(f"{sub}/lib-dynload" for sub in subdirs)
    exec_prefix = _search_up(view, start, dynload, directory=True)
    platstdlib = next(
        (paths.join(exec_prefix, sub) for sub in subdirs if exec_prefix and _is_dir(view, paths.join(exec_prefix, f"{sub}/lib-dynload"))),
        stdlib,
    )
    how = f"{stdlib}/os.py found walking up from {start}" + (f", the home in {venv[0]}/pyvenv.cfg" if venv else "")
    site: tuple[str, ...] = ()
    if venv:
        site = tuple(d for sub in subdirs if _is_dir(view, d := paths.join(venv[0], f"{sub}/site-packages")))
    return PythonHome(interpreter, version, stdlib, platstdlib, how, venv[0] if venv else None, site)


def python_files(home: PythonHome) -> list[tuple[str, str]]:
    """(pattern, why) pairs to ship for `home`: the standard library, lib-dynload, the venv's own files."""
    wanted = [(paths.join(home.stdlib, "**"), f"the standard library of Python {home.version} ({home.how})")]
    if home.platstdlib != home.stdlib:
        wanted.append((paths.join(home.platstdlib, "lib-dynload/**"), f"the extension modules of Python {home.version}"))
    if home.venv:
        wanted.append((paths.join(home.venv, "pyvenv.cfg"), f"the virtual environment {home.venv}"))
        wanted.extend((paths.join(site, "**"), f"the packages of the virtual environment {home.venv}") for site in home.site)
    return wanted


def skipped(home: PythonHome, path: str) -> bool:
    """Whether a path under the standard library is one a running program does not import."""
    for base in {home.stdlib, home.platstdlib}:
        if path.startswith(base + "/"):
            relative = path[len(base) + 1 :]
            return any(paths.glob_match("/" + pattern, "/" + relative) for pattern in STDLIB_SKIPPED)
    return False


def is_node(canonical: str) -> bool:
    """Whether a shipped ELF file is Node's program or its library, by name."""
    return bool(_NODE.match(paths.split(canonical)[-1])) if canonical != "/" else False


def node_builtins(view: View, canonical: str) -> list[str]:
    """The externalized built-in modules whose paths node or libnode carries in its strings and the source has."""
    with view.open(canonical) as stream:
        named = rodata_paths(stream)
    return [path for path in named if _SCRIPT.search(path) and _is_file(view, path)]
