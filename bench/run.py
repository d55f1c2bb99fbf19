#!/usr/bin/env python3
"""`make bench`: speed and size of distill against a peer, in the same run, as ratios.

Scenario `nginx-closure`: the fat Debian 12 nginx rootfs; distill's full run (profile, closure,
checks, system files, write a rootfs) against `lddtree --copy-to-tree` (pax-utils) copying the
closure of /usr/sbin/nginx only, both on the same Python interpreter.

Scenario `registry-pull`: the same rootfs as an image in a local docker-registry; distill
(`--from` the registry, `--out oci:`) with an empty cache (cold) and with its cache filled
(warm), against `skopeo copy docker://... oci:...` of the same image.

Scenario `startup`: `distill --version` against `python3 -c pass` on the same interpreter.

Each command runs once to warm up, then 5 times, alternating with its peer; medians and ratios are
printed and saved in bench/results/, with a row for the ratio history of docs/performance.md. The
run exits 1 when a ratio is more than 25% worse than the last row of that history (the guard);
`--no-guard` only reports. No timing is ever asserted in the test suite.
"""

from __future__ import annotations

import json
import os
import platform
import re
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
sys.path.insert(0, str(HERE.parent / "tests"))

from fatroot import fat_rootfs  # noqa: E402

RUNS = 5
GUARD = 1.25  # a ratio this much worse than the last recorded one fails `make bench`
HISTORY = HERE.parent / "docs" / "performance.md"
RATIOS = ("startup", "nginx-closure", "registry cold", "registry warm")
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


def registry_pull() -> dict[str, object]:
    from helpers.images import fat_layout
    from helpers.registry import Registry, skopeo_copy

    times: dict[str, list[float]] = {"distill cold": [], "distill warm": [], "skopeo copy": []}
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        with Registry(work / "registry") as registry:
            skopeo_copy(f"oci:{fat_layout()}:latest", registry.ref("library/nginx:latest"))
            source = f"{registry.host}/library/nginx:latest"
            warm_cache = work / "warm"
            subprocess.run(distill_pull(source, work / "prime"), check=True, capture_output=True, env=cache_env(warm_cache))
            subprocess.run(
                ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{source}", f"oci:{work / 'sw'}:latest"],
                check=True,
                capture_output=True,
            )
            for run in range(RUNS):
                cold_cache = work / f"cold-{run}"
                for name, command, env in (
                    ("distill cold", distill_pull(source, work / f"c{run}"), cache_env(cold_cache)),
                    ("distill warm", distill_pull(source, work / f"w{run}"), cache_env(warm_cache)),
                    (
                        "skopeo copy",
                        ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{source}", f"oci:{work / f's{run}'}:latest"],
                        None,
                    ),
                ):
                    start = time.perf_counter()
                    subprocess.run(command, check=True, capture_output=True, env=env)
                    times[name].append(time.perf_counter() - start)
                shutil.rmtree(cold_cache, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "scenario": "registry-pull",
        "runs": RUNS,
        "median_seconds": medians,
        "cold_over_skopeo": round(medians["distill cold"] / medians["skopeo copy"], 2),
        "warm_over_skopeo": round(medians["distill warm"] / medians["skopeo copy"], 2),
    }


def startup() -> dict[str, object]:
    tools = {"distill --version": [sys.executable, "-m", "distill", "--version"], "python -c pass": [sys.executable, "-c", "pass"]}
    times: dict[str, list[float]] = {name: [] for name in tools}
    for command in tools.values():
        subprocess.run(command, check=True, capture_output=True)
    for _ in range(RUNS * 2):
        for name, command in tools.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "scenario": "startup",
        "runs": RUNS * 2,
        "median_seconds": medians,
        "time_ratio_distill_over_python": round(medians["distill --version"] / medians["python -c pass"], 2),
    }


def distill_pull(source: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "distill", "nginx", "--from", source, "--out", f"oci:{out}:nginx", "-q"]


def cache_env(path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(path)}


def _print(result: dict[str, object], unit: str = "s") -> None:
    medians = result["median_seconds"]
    assert isinstance(medians, dict)
    print(f"\n{result['scenario']}: median of {RUNS}")
    for name, value in medians.items():
        print(f"  {name:14} {value:.3f} {unit}")
    for key, value in result.items():
        if "ratio" in key or "_over_" in key:
            print(f"  {key}: {value}")


def ratios(results: dict[str, dict[str, object]]) -> dict[str, float]:
    pull = results["registry-pull"]
    return {
        "startup": float(results["startup"]["time_ratio_distill_over_python"]),  # type: ignore[arg-type]
        "nginx-closure": float(results["nginx-closure"]["time_ratio_distill_over_lddtree"]),  # type: ignore[arg-type]
        "registry cold": float(pull["cold_over_skopeo"]),  # type: ignore[arg-type]
        "registry warm": float(pull["warm_over_skopeo"]),  # type: ignore[arg-type]
    }


def last_recorded() -> dict[str, float] | None:
    """The last row of the ratio history in docs/performance.md: | date | commit | machine | startup | ... |."""
    text = HISTORY.read_text()
    if "## Ratio history" not in text:
        return None
    section = text.split("## Ratio history", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d{4}-\d\d-\d\d", line)]
    if not rows:
        return None
    cells = [cell.strip() for cell in rows[-1].strip("|").split("|")]
    return {name: float(cell.rstrip("x")) for name, cell in zip(RATIOS, cells[3:], strict=True)}


def main() -> None:
    guard = "--no-guard" not in sys.argv[1:]
    fat = fat_rootfs()
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    machine = f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    results: dict[str, dict[str, object]] = {}
    for scenario in (startup, lambda: nginx_closure(fat), registry_pull):
        result = scenario()
        result["machine"] = machine
        results[str(result["scenario"])] = result
        (results_dir / f"{result['scenario']}.json").write_text(json.dumps(result, indent=2) + "\n")
        _print(result)
    now = ratios(results)
    commit = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    row = f"| {time.strftime('%Y-%m-%d')} | {commit or '?'} | {machine} | " + " | ".join(f"{now[name]:.2f}x" for name in RATIOS) + " |"
    print(f"\nratio history row for docs/performance.md:\n{row}")
    before = last_recorded()
    worse = [
        f"{name}: {now[name]:.2f}x, recorded {before[name]:.2f}x"
        for name in RATIOS
        if before is not None and now[name] > before[name] * GUARD
    ]
    if worse:
        print(f"bench: more than {GUARD - 1:.0%} worse than the last recorded row: " + "; ".join(worse), file=sys.stderr)
        if guard:
            sys.exit(1)


if __name__ == "__main__":
    main()
