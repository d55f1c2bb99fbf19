#!/usr/bin/env python3
"""`make bench`: speed, size and memory of distill, against a peer in the same run where one exists.

Scenarios (one module each, beside this file):

- `startup` (startup.py): `distill --version` against `python3 -c pass`;
- `nginx-closure` (closure.py): distill's full run on the fat nginx rootfs against `lddtree --copy-to-tree`;
- `registry-pull` (pull.py): distill from a local docker-registry, cold and warm cache, against `skopeo copy`;
- `size` (size.py): for each app profile with a probe, shipped bytes over the bytes the app opened or
  executed during its probe on the fat root (strace);
- `scale` (scale.py): every ELF object of a fat root with thousands of them as roots, at N/4, N/2 and N:
  seconds per object and peak RSS;
- `memory` (memory.py): distill's peak RSS pulling the 190 MB nginx image (cold) and a 2 GB image.

Timed pairs run once to warm up, then 5 times, alternating with their peer; medians and ratios are
printed and saved in bench/results/<scenario>.json, with a row for the ratio history of
docs/performance.md. The run exits 1 when a ratio is more than 25% worse than the last row of that
history, column by column (the guard; a column the history lacks is not compared); `--no-guard` only
reports. `--only NAME[,NAME]` runs some scenarios (`--only size` for one). No timing is ever asserted
in the test suite.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable

import closure
import memory
import pull
import scale
import size
import startup
from common import HERE, REPO, commit, machine, show_medians

GUARD = 1.25  # a ratio this much worse than the last recorded one fails `make bench`
HISTORY = REPO / "docs" / "performance.md"

Scenario = tuple[Callable[[], dict[str, object]], Callable[[dict[str, object]], dict[str, float]], Callable[[dict[str, object]], None]]
SCENARIOS: dict[str, Scenario] = {
    "startup": (startup.run, startup.ratios, show_medians),
    "nginx-closure": (closure.run, closure.ratios, show_medians),
    "registry-pull": (pull.run, pull.ratios, show_medians),
    "size": (size.run, size.ratios, size.show),
    "scale": (scale.run, scale.ratios, scale.show),
    "memory": (memory.run, memory.ratios, memory.show),
}
# the ratio history's columns, in order (a row printed for docs/performance.md has them all)
RATIOS = ("startup", "nginx-closure", "registry cold", "registry warm", "size nginx", "size redis")


def last_recorded() -> dict[str, float]:
    """The last row of the ratio history in docs/performance.md, by column header (`| date | commit |
    machine | startup | ... |`); a cell that is not a ratio (`-`) is left out."""
    text = HISTORY.read_text()
    if "## Ratio history" not in text:
        return {}
    section = text.split("## Ratio history", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows = [line for line in lines if re.match(r"\| \d{4}-\d\d-\d\d", line)]
    if not lines or not rows:
        return {}
    header = [cell.strip() for cell in lines[0].strip().strip("|").split("|")]
    cells = [cell.strip() for cell in rows[-1].strip().strip("|").split("|")]
    recorded = {}
    for name, cell in zip(header, cells, strict=False):
        if name in RATIOS and re.fullmatch(r"[\d.]+x?", cell):
            recorded[name] = float(cell.rstrip("x"))
    return recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--no-guard", action="store_true", help="report ratios worse than the history, do not fail")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios, of: {', '.join(SCENARIOS)}")
    options = parser.parse_args()
    chosen = [name.strip() for name in options.only.split(",") if name.strip()] or list(SCENARIOS)
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    # measure distill as installed: a wheel install compiles its .pyc, an editable one under
    # PYTHONDONTWRITEBYTECODE (CI, containers) never does, and compiling cost ~40 ms of every run
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "distill")], check=True)
    now: dict[str, float] = {}
    for name in chosen:
        run, ratios, show = SCENARIOS[name]
        result = run()
        result.update(machine=machine(), commit=commit(), date=time.strftime("%Y-%m-%d"))
        (results_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        show(result)
        now.update(ratios(result))
    cells = " | ".join(f"{now[name]:.2f}x" if name in now else "-" for name in RATIOS)
    print(f"\nratio history row for docs/performance.md ({' | '.join(RATIOS)}):")
    print(f"| {time.strftime('%Y-%m-%d')} | {commit()} | {machine()} | {cells} |")
    before = last_recorded()
    worse = [
        f"{name}: {value:.2f}x, recorded {before[name]:.2f}x"
        for name, value in now.items()
        if name in before and value > before[name] * GUARD
    ]
    if worse:
        print(f"bench: more than {GUARD - 1:.0%} worse than the last recorded row: " + "; ".join(worse), file=sys.stderr)
        if not options.no_guard:
            sys.exit(1)


if __name__ == "__main__":
    main()
