"""Read `strace -ff -y` output into what a run touched: paths inside the root, who touched them, how.

Each traced process has its own file (`-ff`), so lines never interleave. A process counts only after
it (or the parent it was forked from) entered the root with `chroot`: what the host-side launcher did
before that is not the app's. `-y` annotates every descriptor with its path, so a path relative to a
directory descriptor or to the working directory is made absolute without replaying `chdir`; those
annotations are host paths under the root's mount point, which is stripped.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path

from distill import paths

__all__ = ["Touch", "Observations", "parse_traces"]

# syscall(args) = result ...
_LINE = re.compile(r"^(?P<call>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|0x[0-9a-f]+|\?)(?P<rest>.*)$")
_STRING = r'"((?:[^"\\]|\\.)*)"'
_DIRFD = re.compile(r"^(?:AT_FDCWD|-?\d+)<(?P<dir>(?:[^>\\]|\\.)*)>,\s*" + _STRING)
_FIRST_STRING = re.compile(r"^" + _STRING)
_CHILD_CALLS = ("clone", "clone3", "fork", "vfork")
_STAT_CALLS = (
    "stat",
    "lstat",
    "newfstatat",
    "statx",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "statfs",
    "chdir",
    "getxattr",
    "lgetxattr",
)
_OPEN_CALLS = ("open", "openat", "openat2", "creat")
_UID_CALLS = {
    "setuid": "user",
    "setresuid": "user",
    "setreuid": "user",
    "setfsuid": "user",
    "setgid": "group",
    "setresgid": "group",
    "setregid": "group",
    "setfsgid": "group",
}


@dataclass(frozen=True)
class Touch:
    """One path the app used: `how` is executed, opened, written, created (with O_CREAT or mkdir: it need
    not exist beforehand), expected (a directory mkdir found already there), listed or looked up; `by` the program."""

    path: str
    how: str
    by: str


@dataclass
class Observations:
    touches: list[Touch] = field(default_factory=list)
    ids: list[tuple[str, int, str]] = field(default_factory=list)  # ("user" | "group", id, by)
    processes: int = 0


@dataclass
class _Process:
    entered: bool
    exe: str


def _unescape(text: str) -> str:
    return codecs.escape_decode(text.encode("latin-1", "backslashreplace"))[0].decode("utf-8", "surrogateescape")


class _Parser:
    def __init__(self, root_mount: str) -> None:
        self.mount = root_mount.rstrip("/")
        self.found = Observations()

    def inside(self, host_path: str) -> str | None:
        """A `-y` annotation (a host path) as a path inside the root, or None when it is outside."""
        if host_path == self.mount:
            return "/"
        if host_path.startswith(self.mount + "/"):
            return host_path[len(self.mount) :]
        return None

    def path_of(self, args: str) -> str | None:
        match = _DIRFD.match(args)
        if match:
            name = _unescape(match.group(2))
            if name.startswith("/"):
                return paths.clean(name)
            if not name:
                return None  # an fstat through AT_EMPTY_PATH: the file was already counted when opened
            base = self.inside(_unescape(match.group("dir")))
            return None if base is None else paths.clean(paths.join(base, name))
        match = _FIRST_STRING.match(args)
        if match:
            name = _unescape(match.group(1))
            return paths.clean(name) if name.startswith("/") else None
        return None

    def line(self, proc: _Process, call: str, args: str, ret: str, rest: str = "") -> str | None:
        """Record one finished call; return a child pid when the call created a process."""
        ok = ret != "?" and not ret.startswith("-")
        if call in _CHILD_CALLS:
            return ret if ok and ret.isdigit() else None
        if call == "chroot" and ok:
            proc.entered = True
            return None
        if not proc.entered:
            return None
        if call in ("mkdir", "mkdirat") and (ok or "EEXIST" in ret + rest):
            path = self.path_of(args)
            if path:  # a directory it makes needs its parent; one that was already there, itself
                self.found.touches.append(Touch(path, "created" if ok else "expected", proc.exe))
            return None
        if not ok:
            return None
        if call in ("execve", "execveat"):
            path = self.path_of(args)
            if path:
                self.found.touches.append(Touch(path, "executed", proc.exe))  # by the program that ran it
                proc.exe = path
        elif call in _OPEN_CALLS:
            path = self.path_of(args)
            if path:
                how = (
                    "listed"
                    if "O_DIRECTORY" in args
                    else "created"
                    if "O_CREAT" in args or call == "creat"
                    else "written"
                    if re.search(r"O_WRONLY|O_RDWR", args)
                    else "opened"
                )
                self.found.touches.append(Touch(path, how, proc.exe))
        elif call in _STAT_CALLS:
            path = self.path_of(args)
            if path:
                self.found.touches.append(Touch(path, "looked up", proc.exe))
        elif call in _UID_CALLS:
            first = args.split(",", maxsplit=1)[0].strip()
            if first.isdigit() and int(first) != 0:
                self.found.ids.append((_UID_CALLS[call], int(first), proc.exe))
        return None


def parse_traces(trace_dir: Path, root_mount: str) -> Observations:
    """Every process's trace under `trace_dir` (files `t.PID`), parents before the children they forked."""
    lines: dict[str, list[str]] = {}
    for file in trace_dir.glob("t.*"):
        lines[file.name.split(".", 1)[1]] = file.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    parser = _Parser(root_mount)
    children: set[str] = set()
    for text in lines.values():
        for line in text:
            match = _LINE.match(line)
            if match and match.group("call") in _CHILD_CALLS and match.group("ret").isdigit():
                children.add(match.group("ret"))
    pending = [(pid, _Process(False, "")) for pid in sorted(lines, key=int) if pid not in children]
    while pending:
        pid, proc = pending.pop()
        parser.found.processes += 1
        for line in lines.get(pid, []):
            match = _LINE.match(line)
            if not match:
                continue
            child = parser.line(proc, match.group("call"), match.group("args"), match.group("ret"), match.group("rest"))
            if child is not None:
                pending.append((child, _Process(proc.entered, proc.exe)))
    return parser.found
