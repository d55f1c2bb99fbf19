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
TIME = "/usr/bin/time"  # GNU time (Debian package `time`): peak RSS of one command


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
    """Run `command` to the end: wall seconds, its peak resident set in KiB, and its stdout. A non-zero exit
    raises CalledProcessError carrying the tail of stderr.

    The peak comes from GNU time (`%M`, wait4's ru_maxrss), not from this process's own wait4: a child
    forked from the harness has the harness's pages mapped until it execs, and the kernel keeps that
    high-water mark in the child's maxrss (exec_mmap), so the harness's size would leak into the figure.
    `time` is small, so what it forks starts small."""
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as scratch:
        report = Path(scratch) / "maxrss"
        start = time.perf_counter()
        done = subprocess.run([TIME, "-f", "%M", "-o", str(report), "--", *command], capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - start
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr[-3000:])
        peak_kib = int(report.read_text().split()[-1])
    return elapsed, peak_kib, done.stdout


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
