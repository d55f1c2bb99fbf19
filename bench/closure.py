"""Scenario `nginx-closure`: the fat Debian 12 nginx rootfs; distill's full run (profile, closure, checks,
system files, write a rootfs) against `lddtree --copy-to-tree` (pax-utils) copying the closure of
/usr/sbin/nginx only, both on the same Python interpreter."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import RUNS, distill, tree_bytes

from fatroot import fat_rootfs

LDDTREE = shutil.which("lddtree") or "/usr/bin/lddtree"


def timed(command: Callable[[Path], list[str]], work: Path) -> tuple[float, int]:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(command(out), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    return elapsed, tree_bytes(out)


def run() -> dict[str, object]:
    fat = fat_rootfs()
    tools: dict[str, Callable[[Path], list[str]]] = {
        "distill": lambda out: distill("nginx", "--from", f"rootfs:{fat}", "--out", f"rootfs:{out}", "-q"),
        "lddtree": lambda out: [sys.executable, LDDTREE, "-R", str(fat), "--copy-to-tree", str(out), "/usr/sbin/nginx"],
    }
    times: dict[str, list[float]] = {name: [] for name in tools}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as work:
        for command in tools.values():  # warm-up: page cache, .pyc files
            timed(command, Path(work))
        for _ in range(RUNS):
            for name, command in tools.items():
                elapsed, size = timed(command, Path(work))
                times[name].append(elapsed)
                sizes[name] = size
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "scenario": "nginx-closure",
        "runs": RUNS,
        "median_seconds": medians,
        "output_bytes": sizes,
        "time_ratio_distill_over_lddtree": round(medians["distill"] / medians["lddtree"], 2),
        "size_ratio_distill_over_lddtree": round(sizes["distill"] / sizes["lddtree"], 3),
    }


def ratios(result: dict[str, object]) -> dict[str, float]:
    return {"nginx-closure": float(result["time_ratio_distill_over_lddtree"])}  # type: ignore[arg-type]
