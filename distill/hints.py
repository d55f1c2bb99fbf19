"""Static hints for helpers a program executes or loads by path: absolute paths in its read-only strings.

No ELF header says that sshd execs /usr/lib/openssh/sshd-session, or that libc's system() runs /bin/sh,
but the path sits in the program's `.rodata` as a NUL-terminated string. Each such string that names, in
the source, an executable file or an ELF library that the plan does not ship is a candidate: reported by
`explain` and the run's summary, and shipped (each with its reason) when the profile says `hints: include`.
A candidate is a hint, not a proof: the string may be a default that configuration overrides. One
string every glibc program carries is filtered: libc's /bin/sh counts only when a shipped file imports
system, popen or wordexp, the calls that run it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from distill import paths
from distill.elf import is_elf, section_bytes, sections, undefined_symbols
from distill.errors import ElfError
from distill.view import View

__all__ = ["Hint", "find_hints", "rodata_paths"]

# a whole string: NUL before and after, a slash first, path characters only (one C-speed scan per section;
# the leading NUL is a literal, not a look-behind, so the scan jumps between NULs: 13x faster on libc)
_STRING = re.compile(rb"\0(/[A-Za-z0-9_+.@/-]{1,254})(?=\0)")
_PATH = re.compile(r"(?:/[A-Za-z0-9_+.@-]+)+")
_MAX_RODATA = 64 << 20
_SHT_PROGBITS = 1
_SHELL_CALLS = frozenset({"system", "popen", "wordexp"})  # what makes libc run its /bin/sh
_LIBRARY = re.compile(r"\.so(\.[0-9.]+)?\Z")
_LIBC = re.compile(r"libc\.so(\.[0-9]+)?\Z")
_RUNTIME_PROVIDED = ("/proc/", "/sys/", "/dev/", "/run/", "/tmp/", "/var/run/")


@dataclass(frozen=True)
class Hint:
    """A path named in a shipped file's strings that is an executable or a library in the source."""

    path: str  # as the string spells it
    named_by: str  # the shipped file whose .rodata holds it
    kind: str  # "executable" or "library"

    def describe(self) -> str:
        return f"{self.kind} named in the .rodata strings of {self.named_by}"


def rodata_paths(stream: BinaryIO) -> list[str]:
    """Absolute paths that are whole NUL-terminated strings in the file's .rodata sections (may be empty)."""
    try:
        blobs = [
            section_bytes(stream, "", section)
            for section in sections(stream, "")
            if section.name.startswith(".rodata") and section.type == _SHT_PROGBITS and section.size <= _MAX_RODATA
        ]
    except ElfError:
        return []
    found = {m.group(1).decode("ascii") for blob in blobs for m in _STRING.finditer(b"\0" + blob)}
    return sorted(path for path in found if _PATH.fullmatch(path))


def _kind(view: View, path: str) -> str | None:
    """ "executable" or "library" when `path` names one in the source, else None."""
    if path.startswith(_RUNTIME_PROVIDED) or path == "/":
        return None
    found = view.resolve(path)
    node = found.node
    if found.error or node is None or not node.is_file or node.size < 4:
        return None
    with view.open(found.path) as stream:
        head = stream.read(4)
    if is_elf(head) and _LIBRARY.search(paths.split(found.path)[-1]):
        return "library"  # named like one: shared objects are often mode 0755 too
    if node.mode & 0o111 and (is_elf(head) or head.startswith(b"#!")):
        return "executable"
    return None


def _calls_shell(view: View, elves: Iterable[str]) -> bool:
    for elf in elves:
        with view.open(elf) as stream:
            try:
                if undefined_symbols(stream, elf, _SHELL_CALLS):
                    return True
            except ElfError:
                continue
    return False


def find_hints(view: View, scan: Iterable[str], shipped_elves: Iterable[str], is_shipped: Callable[[str], bool]) -> list[Hint]:
    """Candidates from the strings of `scan` (canonical paths of shipped ELF files) that `is_shipped` says are
    not in the plan; `shipped_elves`, all of them, decide whether libc's shell counts."""
    hints: dict[str, Hint] = {}
    shell: bool | None = None
    for elf in scan:
        with view.open(elf) as stream:
            strings = rodata_paths(stream)
        libc = bool(_LIBC.search(elf))
        for path in strings:
            if path in hints or is_shipped(path):
                continue
            if libc:
                shell = _calls_shell(view, shipped_elves) if shell is None else shell
                if not shell:
                    continue
            kind = _kind(view, path)
            if kind is not None and not is_shipped(view.resolve(path).path):
                hints[path] = Hint(path, elf, kind)
    return sorted(hints.values(), key=lambda h: h.path)
