"""What the scenarios of `make bench` share: paths, the interpreter, whole-process timing and peak memory."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (REPO / "examples", REPO / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

RUNS = 5


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_implementation()} {platform.python_version()}"


def commit() -> str:
    found = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return found or "?"


def distill(*args: str) -> list[str]:
    """The command line of distill on this interpreter (the worktree's editable install)."""
    return [sys.executable, "-m", "distill", *args]


def tree_bytes(root: Path) -> int:
    """Bytes in the regular files under `root` (symlinks not followed)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                total += os.lstat(path).st_size
    return total


def measured(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run `command` to the end: wall seconds, the peak resident set in KiB of it and the descendants it
    waited for (wait4's ru_maxrss, this child alone, not the harness's other children), and its stdout.
    A non-zero exit raises CalledProcessError carrying the tail of stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, command, stdout, err.read().decode("utf-8", "replace")[-3000:])
    return elapsed, usage.ru_maxrss, stdout


def show_medians(result: dict[str, object]) -> None:
    """Print a timed scenario's medians and its ratios."""
    medians = result["median_seconds"]
    assert isinstance(medians, dict)
    print(f"\n{result['scenario']}: median of {result['runs']}")
    for name, value in medians.items():
        print(f"  {name:18} {value:.3f} s")
    for key, value in result.items():
        if "ratio" in key or "_over_" in key:
            print(f"  {key}: {value}")
