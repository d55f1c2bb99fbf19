#!/usr/bin/env python3
"""`make bench`: speed and size of distill against a peer, in the same run, as ratios.

Scenario `nginx-closure`: the fat Debian 12 nginx rootfs; distill's full run (profile, closure,
checks, system files, write a rootfs) against `lddtree --copy-to-tree` (pax-utils) copying the
closure of /usr/sbin/nginx only. Both run on the same Python interpreter, 5 times each,
alternating; the median wall time of each and their ratio are printed and saved in
bench/results/. No timing is ever asserted in the test suite.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))

from fatroot import fat_rootfs  # noqa: E402

RUNS = 5
LDDTREE = shutil.which("lddtree") or "/usr/bin/lddtree"


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def timed(command: Callable[[Path], list[str]], work: Path) -> tuple[float, int]:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(command(out), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    return elapsed, tree_bytes(out)


def nginx_closure(fat: Path) -> dict[str, object]:
    tools: dict[str, Callable[[Path], list[str]]] = {
        "distill": lambda out: [sys.executable, "-m", "distill", "nginx", "--from", f"rootfs:{fat}", "--out", f"rootfs:{out}", "-q"],
        "lddtree": lambda out: [sys.executable, LDDTREE, "-R", str(fat), "--copy-to-tree", str(out), "/usr/sbin/nginx"],
    }
    times: dict[str, list[float]] = {name: [] for name in tools}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as work:
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


def main() -> None:
    fat = fat_rootfs()
    result = nginx_closure(fat)
    result["machine"] = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "nginx-closure.json").write_text(json.dumps(result, indent=2) + "\n")
    medians = result["median_seconds"]
    sizes = result["output_bytes"]
    assert isinstance(medians, dict) and isinstance(sizes, dict)
    print("| tool | median of 5 (s) | output (MB) |")
    print("|---|---:|---:|")
    for name in medians:
        print(f"| {name} | {medians[name]:.3f} | {sizes[name] / 1e6:.2f} |")
    print(f"\ntime ratio distill/lddtree: {result['time_ratio_distill_over_lddtree']}x; "
          f"size ratio: {result['size_ratio_distill_over_lddtree']}x")


if __name__ == "__main__":
    main()
