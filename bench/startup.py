"""Scenario `startup`: `distill --version` against `python3 -c pass` on the same interpreter."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from common import RUNS, distill


def run() -> dict[str, object]:
    tools = {"distill --version": distill("--version"), "python -c pass": [sys.executable, "-c", "pass"]}
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


def ratios(result: dict[str, object]) -> dict[str, float]:
    return {"startup": float(result["time_ratio_distill_over_python"])}  # type: ignore[arg-type]
