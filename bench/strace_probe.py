"""Run one of the tests' app probes (tests/helpers/probes.py) on a FAT root under `strace -f`, and list the
files of that root the app opened or executed: the denominator of the `size` scenario.

The probe runs as the tests run it, in private network and mount namespaces (`unshare --net --mount`:
only the namespace's own 127.0.0.1 exists), but on an overlay whose lower layer is the fat root, so the
cached root is never written (the probes write certificates, configuration and data into the root they
are given). Only processes that entered that root with `chroot` count, and their children: the probe's
own Python, the host's `psql`, and the curl probe's nginx server (chrooted into a second overlay) do not.

strace's `-y` annotates each descriptor an `open` returns with the path the kernel resolved it to
(symlinks followed), a host path under the overlay's mount point; `execve` paths are resolved inside the
root here. An executed ELF file also maps its PT_INTERP and a `#!` script runs its interpreter, both
opened by the kernel, where strace does not see them: they are added.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBES = HERE.parent / "tests" / "helpers" / "probes.py"
SYSCALLS = "%file,%process"

_LINE = re.compile(r"^(?P<call>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|\?)(?:<(?P<fd>(?:[^>\\]|\\.)*)>)?")
_FIRST_STRING = re.compile(r'^"((?:[^"\\]|\\.)*)"')
_CHILD_CALLS = ("clone", "clone3", "fork", "vfork")
_OPEN_CALLS = ("open", "openat", "openat2", "creat")
_EXEC_CALLS = ("execve",)


@dataclass
class Traced:
    """What one traced probe run gave: the probe's JSON result and the root's regular files the app used."""

    result: dict[str, object]
    files: set[str]  # paths inside the root, symlinks resolved
    processes: int  # processes that ran inside the root


def traced_probe(name: str, fat: Path, args: list[str], run_dirs: dict[str, str] | None = None) -> Traced:
    """Run probe `name` on an overlay of `fat`. In `args`, `@root` is the overlay's mount point, `@root2` a
    second overlay of the same root (the curl probe's server), `@scratch` a fresh directory (certificates).
    `run_dirs` (path -> owning user) are made in the overlay first, as systemd-tmpfiles would at boot
    (a fat root built by mmdebstrap has an empty /run; the distilled one gets them from its profile)."""
    with tempfile.TemporaryDirectory(prefix="distill-bench-size-") as scratch_dir:
        scratch = Path(scratch_dir)
        spec = {"name": name, "fat": str(fat), "args": args, "scratch": str(scratch), "run_dirs": run_dirs or {}}
        done = subprocess.run(
            ["unshare", "--net", "--mount", "--propagation", "private", "--", sys.executable, __file__, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"traced probe {name} failed:\n{done.stderr[-3000:]}")
        result = json.loads((scratch / "result.json").read_text())
        files, processes = parse(scratch / "trace", str(scratch / "o1" / "merged"))
    return Traced(result, expand(fat, files), processes)


# -- inside the namespaces --------------------------------------------------------------------------


def _overlay(lower: str, at: Path) -> str:
    for part in ("upper", "work", "merged"):
        (at / part).mkdir(parents=True)
    options = f"lowerdir={lower},upperdir={at / 'upper'},workdir={at / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(at / "merged")], check=True)
    return str(at / "merged")


def _inside(spec: dict[str, object]) -> None:
    scratch = Path(str(spec["scratch"]))
    fat = str(spec["fat"])
    root = _overlay(fat, scratch / "o1")  # the parent knows this mount point: it reads the traces
    accounts = {line.split(":")[0]: line.split(":") for line in Path(root, "etc/passwd").read_text().splitlines() if line.count(":") >= 3}
    for path, user in spec["run_dirs"].items():  # type: ignore[attr-defined]
        made = Path(root, path.lstrip("/"))
        made.mkdir(parents=True, exist_ok=True)
        os.chown(made, int(accounts[user][2]), int(accounts[user][3]))
    mapping = {"@root": root, "@scratch": str(scratch / "tls")}
    if "@root2" in spec["args"]:  # type: ignore[operator]
        mapping["@root2"] = _overlay(fat, scratch / "o2")
    args = [mapping.get(arg, arg) for arg in spec["args"]]  # type: ignore[attr-defined]
    (scratch / "trace").mkdir()
    command = ["strace", "-ff", "-qq", "-y", "-e", f"trace={SYSCALLS}", "-e", "signal=none", "-o", str(scratch / "trace" / "t")]
    command += ["--", sys.executable, str(PROBES), str(spec["name"]), *args]
    probe = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if probe.returncode != 0:
        sys.exit(f"probe {spec['name']} exited {probe.returncode}: {probe.stderr[-2000:]}")
    (scratch / "result.json").write_text(probe.stdout)


# -- reading the traces -----------------------------------------------------------------------------


def _unescape(text: str) -> str:
    import codecs

    return codecs.escape_decode(text.encode("latin-1", "backslashreplace"))[0].decode("utf-8", "surrogateescape")


def parse(trace_dir: Path, mount: str) -> tuple[set[str], int]:
    """The in-root paths opened (successfully, not as directories) or executed by processes inside the root
    mounted at `mount` (executed ones marked with a leading `!`), and how many processes ran inside it."""
    lines = {f.name.split(".", 1)[1]: f.read_text(errors="surrogateescape").splitlines() for f in trace_dir.glob("t.*")}
    children = set()
    for text in lines.values():
        for line in text:
            match = _LINE.match(line)
            if match and match["call"] in _CHILD_CALLS and match["ret"].isdigit():
                children.add(match["ret"])
    used: set[str] = set()
    inside = 0
    pending = [(pid, False) for pid in lines if pid not in children]
    while pending:
        pid, entered = pending.pop()
        inside += entered
        for line in lines.get(pid, []):
            match = _LINE.match(line)
            if not match or match["ret"] == "?" or match["ret"].startswith("-"):
                continue
            call = match["call"]
            if call in _CHILD_CALLS:
                pending.append((match["ret"], entered))
            elif call == "chroot":
                named = _FIRST_STRING.match(match["args"])
                if named and os.path.normpath(_unescape(named[1])) == mount and not entered:
                    entered = True
                    inside += 1  # counted here, since it did not enter at its start
            elif not entered:
                continue
            elif call in _OPEN_CALLS and match["fd"] and "O_DIRECTORY" not in match["args"]:
                host = _unescape(match["fd"])
                if host.startswith(mount + "/"):
                    used.add(host[len(mount) :])
            elif call in _EXEC_CALLS:
                named = _FIRST_STRING.match(match["args"])
                if named and named[1].startswith("/"):
                    used.add("!" + _unescape(named[1]))  # resolved in the root later
    return used, inside


def resolve_in(root: Path, path: str) -> str | None:
    """`path` inside `root` with every symlink followed the way a chrooted process would, or None (a loop)."""
    parts = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    hops = 40
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            hops -= 1
            if hops < 0:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
        else:
            done.append(part)
    return "/" + "/".join(done)


def _interpreter(root: Path, path: str) -> str | None:
    """The program the kernel loads to run the executable `path`: its PT_INTERP, or its `#!` interpreter."""
    try:
        with open(root / path.lstrip("/"), "rb") as f:
            head = f.read(256)
            if head.startswith(b"#!"):
                words = head[2:].split(b"\n", 1)[0].split()
                return words[0].decode("utf-8", "surrogateescape") if words else None
            if head.startswith(b"\x7fELF"):
                from elftools.elf.elffile import ELFFile

                f.seek(0)
                for segment in ELFFile(f).iter_segments():
                    if segment.header.p_type == "PT_INTERP":
                        return str(segment.get_interp_name())
    except OSError:
        return None
    return None


def expand(fat: Path, used: set[str]) -> set[str]:
    """Resolve executed paths in `fat`, add what the kernel loaded to run them, keep the regular files."""
    files: set[str] = set()
    executed = [p[1:] for p in used if p.startswith("!")]
    files.update(p for p in used if not p.startswith("!"))
    while executed:
        resolved = resolve_in(fat, executed.pop())
        if resolved is None or resolved in files:
            continue
        files.add(resolved)
        loader = _interpreter(fat, resolved)
        if loader:
            executed.append(loader)
    regular = set()
    for path in files:
        try:
            if stat.S_ISREG(os.lstat(fat / path.lstrip("/")).st_mode):
                regular.add(path)
        except OSError:
            continue  # made by the probe in the overlay, not part of the fat root
    return regular


if __name__ == "__main__":
    _inside(json.loads(sys.argv[1]))
