"""Pure helpers for paths inside an image (always absolute, POSIX, never a host path).

Globs follow one small, documented grammar: `*` and `?` match within one path component
(dot files included), `[...]` is a character class, and a component that is exactly `**`
matches zero or more components.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = [
    "is_glob",
    "join",
    "parent",
    "parents",
    "split",
    "clean",
    "compile_glob",
    "glob_match",
    "sort_key",
]

_GLOB_CHARS = re.compile(r"[*?\[]")


def is_glob(path: str) -> bool:
    """True when `path` holds a glob metacharacter."""
    return bool(_GLOB_CHARS.search(path))


def split(path: str) -> list[str]:
    """Components of a path, dropping empty and `.` components (`..` is kept for the resolver)."""
    return [part for part in path.split("/") if part not in ("", ".")]


def join(base: str, name: str) -> str:
    """Join an absolute directory and one relative name."""
    return "/" + name if base == "/" else f"{base}/{name}"


def parent(path: str) -> str:
    """The parent of a clean absolute path (`/` is its own parent)."""
    if path == "/":
        return "/"
    head = path.rsplit("/", 1)[0]
    return head or "/"


def parents(path: str) -> list[str]:
    """Every ancestor of a clean absolute path, outermost first, excluding `/` and the path."""
    parts = split(path)
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def clean(path: str) -> str:
    """Lexically clean an absolute path: collapse `//` and `.`, resolve `..` without going above `/`."""
    out: list[str] = []
    for part in split(path):
        if part == "..":
            if out:
                out.pop()
        else:
            out.append(part)
    return "/" + "/".join(out)


def sort_key(path: str) -> tuple[bytes, ...]:
    """Order paths component-wise by bytes, so a directory always precedes its contents."""
    return tuple(part.encode("utf-8", "surrogateescape") for part in split(path))


def _component_regex(component: str) -> str:
    out = []
    i = 0
    while i < len(component):
        char = component[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = component.find("]", i + 2 if component[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = component[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile an absolute glob pattern to a regex over clean absolute paths."""
    parts = split(pattern)
    regex = ""
    for part in parts:
        if part == "**":
            # zero or more whole components, so `/etc/nginx/**` also matches `/etc/nginx`
            regex += "(?:/[^/]+)*"
        else:
            regex += "/" + _component_regex(part)
    return re.compile((regex or "/") + r"\Z")


def glob_match(pattern: str, path: str) -> bool:
    """True when the clean absolute `path` matches `pattern`."""
    return compile_glob(pattern).match(path) is not None
