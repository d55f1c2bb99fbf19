"""Trees of real ELF files compiled by the tests, and the comparison with glibc's own loader."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

HOST_LDSO = Path(os.path.realpath("/lib64/ld-linux-x86-64.so.2"))
HOST_LIBC = Path(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6"))
TRIPLET = "x86_64-linux-gnu"


class Tree:
    """A root filesystem under construction, with helpers that compile real ELF files into it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def mkdir(self, path: str, mode: int = 0o755) -> Path:
        target = self.host(path)
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(mode)
        return target

    def write(self, path: str, data: str | bytes, mode: int = 0o644) -> Path:
        target = self.host(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        target.chmod(mode)
        return target

    def symlink(self, path: str, target: str) -> None:
        link = self.host(path)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)

    def copy(self, host_file: Path, path: str) -> Path:
        target = self.host(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host_file, target)
        return target

    def glibc(self, *, merged_usr: bool = True) -> None:
        """The host's glibc laid out as Debian 12 does (merged /usr, multiarch directories)."""
        libdir = f"/usr/lib/{TRIPLET}" if merged_usr else f"/lib/{TRIPLET}"
        self.copy(HOST_LIBC, f"{libdir}/libc.so.6")
        self.copy(HOST_LDSO, f"{libdir}/ld-linux-x86-64.so.2")
        if merged_usr:
            self.symlink("/lib", "usr/lib")
            self.symlink("/lib64", "usr/lib64")
            self.symlink("/bin", "usr/bin")
            self.symlink("/usr/lib64/ld-linux-x86-64.so.2", f"/lib/{TRIPLET}/ld-linux-x86-64.so.2")
        else:
            self.symlink("/lib64/ld-linux-x86-64.so.2", f"/lib/{TRIPLET}/ld-linux-x86-64.so.2")

    def app(self) -> Tree:
        """The smallest useful source: glibc, one program (/usr/bin/app) and a root account."""
        self.glibc()
        self.prog("/usr/bin/app")
        self.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        self.write("/etc/group", "root:x:0:\n")
        return self

    def _compile(self, path: str, source: str, flags: Iterable[str], compiler: str) -> Path:
        out = self.host(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        src = out.parent / (out.name.replace(".", "_") + ".c")
        src.write_text(source)
        try:
            subprocess.run([compiler, "-o", str(out), str(src), *flags], check=True, capture_output=True, text=True)
        finally:
            src.unlink()
        return out

    def lib(
        self,
        path: str,
        soname: str | None = None,
        needs: Iterable[str] = (),
        flags: Iterable[str] = (),
        compiler: str = "gcc",
        source: str | None = None,
    ) -> Path:
        """A shared library at `path` (DT_SONAME `soname`) with DT_NEEDED on the tree's libraries `needs`."""
        ident = re.sub(r"\W", "_", path)
        deps = [str(self.host(n)) for n in needs]
        soflags = [f"-Wl,-soname,{soname}"] if soname else []
        return self._compile(
            path,
            source or f"int f{ident}(void) {{ return 1; }}\n",
            ["-shared", "-fPIC", *soflags, *flags, "-Wl,--no-as-needed", *deps],
            compiler,
        )

    def prog(
        self,
        path: str,
        needs: Iterable[str] = (),
        flags: Iterable[str] = (),
        compiler: str = "gcc",
        source: str = "int main(void) { return 0; }\n",
    ) -> Path:
        """An executable at `path` with DT_NEEDED on the tree's libraries `needs`."""
        deps = [str(self.host(n)) for n in needs]
        return self._compile(path, source, [*flags, "-Wl,--no-as-needed", *deps], compiler)

    def ldconfig(self) -> None:
        """Build a real /etc/ld.so.cache from the tree's /etc/ld.so.conf, as the image would."""
        subprocess.run(["ldconfig", "-r", str(self.root)], check=True, capture_output=True)

    def real_list(self, path: str) -> dict[str, str | None]:
        """What glibc's own loader maps for `path` inside the tree (tests only: this runs the tree's ld.so)."""
        result = subprocess.run(["chroot", str(self.root), "/lib64/ld-linux-x86-64.so.2", "--list", path], capture_output=True, text=True)
        return parse_ld_list(result.stdout, result.stderr)

    def real_exec_list(self, path: str) -> dict[str, str | None]:
        """Like `real_list`, but the kernel executes `path` (so $ORIGIN comes from /proc/self/exe)."""
        result = subprocess.run(
            ["unshare", "-m", "--", sys.executable, "-c", _EXEC_TRACED, str(self.root), path], capture_output=True, text=True
        )
        return parse_ld_list(result.stdout, result.stderr)


_EXEC_TRACED = """
import os, subprocess, sys
root, path = sys.argv[1], sys.argv[2]
os.makedirs(root + "/proc", exist_ok=True)
subprocess.run(["mount", "-t", "proc", "proc", root + "/proc"], check=True)
os.chroot(root)
os.chdir("/")
os.execve(path, [path], {"LD_TRACE_LOADED_OBJECTS": "1"})
"""


def parse_ld_list(stdout: str, stderr: str = "") -> dict[str, str | None]:
    """What `ld.so --list` printed: `name => path` lines, and bare paths for names with a slash.

    hwcaps subdirectories are folded to the baseline; the vDSO and the loader's own line are
    left out. When a library is missing, glibc prints only the failure, so the result then
    holds just the missing names.
    """
    found: dict[str, str | None] = {}
    for line in stdout.splitlines():
        line = re.sub(r" \(0x[0-9a-f]+\)$", "", line.strip())
        name, arrow, path = line.partition(" => ")
        if not arrow:
            if line.startswith("/") and not re.search(r"/ld-[^/]*\.so", line):
                found[line] = line
            continue
        found[name] = None if path == "not found" else re.sub(r"/glibc-hwcaps/[^/]+", "", path)
    for match in re.finditer(r"error while loading shared libraries: (\S+): cannot open", stderr):
        found[match.group(1)] = None
    return found


def model_list(closure) -> dict[str, str | None]:  # type: ignore[no-untyped-def]
    """The same mapping from distill's closure (the loader's own entry left out, as ld.so --list does)."""
    return {
        link.name: link.path
        for link in closure.links
        if link.rule != "PT_INTERP" and link.detail not in ("the dynamic loader", "musl libc itself")
    }


def same_answer(model: dict[str, str | None], real: dict[str, str | None]) -> bool:
    """Compare distill's answer with ld.so's; when something is missing, glibc lists only that."""
    missing = {name for name, path in model.items() if path is None}
    if missing or any(path is None for path in real.values()):
        return missing == {name for name, path in real.items() if path is None}
    return model == real
