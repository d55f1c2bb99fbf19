"""Scenario `scale`: a fat Debian 12 rootfs with many ELF objects (python3, perl, git, postgresql, gcc,
ffmpeg and vlc; built once by mmdebstrap and cached); every ELF executable and shared object in it
(ET_EXEC, ET_DYN: about 1,750) is a root of a generated profile, and distill writes the rootfs of the closure. Run at N/4, N/2 and N roots
(every 4th, every 2nd and every object in path order, so each subset has the same mix), alternating,
3 rounds after a warm-up run on all of them: median seconds, seconds per root, peak RSS (the largest of
the 3). A root that distill's checks refuse (a plugin whose optional dependencies the fat root lacks) is
dropped and named in the result. Growth is linear or better when the seconds per root
at N are no more than at N/4.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import statistics
import subprocess
import tempfile
from pathlib import Path

from common import distill, measured

from fatroot import fat_rootfs

PACKAGES = ("python3", "perl", "git", "postgresql", "gcc", "ffmpeg", "vlc")  # the list, and vlc for its 300-odd plugins
ET_EXEC, ET_DYN = 2, 3
STEPS = (4, 2, 1)  # every 4th object, every 2nd, all
ROUNDS = 3


def elf_objects(root: Path) -> list[str]:
    """Paths (inside `root`) of the regular files that are ELF executables or shared objects, sorted."""
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):  # links, and FIFOs an open would block on
                continue
            try:
                with open(path, "rb") as f:
                    head = f.read(18)
            except OSError:
                continue
            if head[:4] == b"\x7fELF" and len(head) == 18 and head[16] in (ET_EXEC, ET_DYN) and head[17] == 0:
                found.append("/" + os.path.relpath(path, root))
    return sorted(found)


def profile(paths: list[str], at: Path) -> Path:
    """A profile whose binaries are `paths` (JSON is YAML; distill reads a `.yaml` path as a profile file)."""
    at.write_text(json.dumps({"schema": "distill/v1", "name": "scale", "binaries": paths}, indent=0) + "\n")
    return at


def refused(fat: Path, objects: list[str], work: Path) -> dict[str, list[str]]:
    """Run distill on every object (also the warm-up) and drop, until it passes, each root its checks refuse
    (`X (needed by ROOT) is not in the output`: a plugin whose optional dependencies the root lacks).
    Returns each dropped root with the errors that named it; `objects` is edited in place."""
    dropped: dict[str, list[str]] = {}
    for attempt in range(5):
        done = subprocess.run(
            distill(
                str(profile(objects, work / "all.yaml")),
                "--from",
                f"rootfs:{fat}",
                "--out",
                f"rootfs:{work / f'all-{attempt}'}",
                "--json",
                "-q",
            ),
            capture_output=True,
            text=True,
        )
        shutil.rmtree(work / f"all-{attempt}", ignore_errors=True)
        if done.returncode == 0:
            return dropped
        errors = json.loads(done.stdout)["checks"]["errors"] if done.stdout.strip() else []
        named = {}
        for error in errors:
            match = re.search(r"\(needed by (/[^)]+)\)", error)
            if match and match[1] in objects:
                named.setdefault(match[1], []).append(error)
        if not named:
            raise RuntimeError(f"distill refused the scale profile for a reason the bench does not handle:\n{done.stderr[-3000:]}")
        for path, reasons in named.items():
            objects.remove(path)
            dropped[path] = reasons
    raise RuntimeError("distill still refuses the scale profile after dropping roots five times")


def run() -> dict[str, object]:
    fat = fat_rootfs(PACKAGES)
    objects = elf_objects(fat)
    found = len(objects)
    rows = []
    with tempfile.TemporaryDirectory(prefix="distill-bench-scale-") as work_dir:
        work = Path(work_dir)
        dropped = refused(fat, objects, work)

        def once(step: int, tag: str) -> tuple[float, int, dict[str, int]]:
            seconds, peak_kib, stdout = measured(
                distill(
                    str(profile(objects[::step], work / f"{tag}.yaml")),
                    "--from",
                    f"rootfs:{fat}",
                    "--out",
                    f"rootfs:{work / tag}",
                    "--json",
                    "-q",
                )
            )
            shutil.rmtree(work / tag)
            return seconds, peak_kib, json.loads(stdout)["summary"]

        runs: dict[int, list[tuple[float, int, dict[str, int]]]] = {step: [] for step in STEPS}
        for round_ in range(ROUNDS):  # alternating, so the machine's load falls on every size alike
            for step in STEPS:
                runs[step].append(once(step, f"n{step}-{round_}"))
    for step in STEPS:
        seconds = statistics.median(s for s, _, _ in runs[step])
        roots = len(objects[::step])
        summary = runs[step][0][2]
        rows.append(
            {
                "roots": roots,
                "seconds": round(seconds, 2),
                "ms_per_root": round(1000 * seconds / roots, 2),
                "peak_rss_mib": round(max(k for _, k, _ in runs[step]) / 1024),
                "output_files": summary["output_files"],
                "output_mb": round(summary["output_bytes"] / 1e6, 1),
            }
        )
    growth = rows[-1]["ms_per_root"] / rows[0]["ms_per_root"]  # type: ignore[operator]
    # what one more root costs, fixed costs (start-up, reading the source) left out
    marginal = 1000 * (rows[-1]["seconds"] - rows[0]["seconds"]) / (rows[-1]["roots"] - rows[0]["roots"])  # type: ignore[operator]
    return {
        "scenario": "scale",
        "fat_root": str(fat),
        "packages": list(PACKAGES),
        "elf_objects": found,
        "dropped_roots": dropped,
        "rows": rows,
        "per_root_growth_n_over_quarter": round(growth, 2),
        "marginal_ms_per_root": round(marginal, 2),
        "linear_or_better": growth <= 1.0,
    }


def ratios(result: dict[str, object]) -> dict[str, float]:
    return {}


def show(result: dict[str, object]) -> None:
    print(f"\nscale: every ELF object of a fat root as a root ({result['elf_objects']} objects; {', '.join(result['packages'])})")  # type: ignore[arg-type]
    for path, errors in result["dropped_roots"].items():  # type: ignore[attr-defined]
        print(f"  dropped {path}: {'; '.join(e.split(';')[0] for e in errors)}")
    print(f"  {'roots':>6} {'seconds':>8} {'ms/root':>8} {'peak RSS MiB':>12} {'files out':>9} {'MB out':>7}")
    for row in result["rows"]:  # type: ignore[attr-defined]
        print(
            f"  {row['roots']:6} {row['seconds']:8.2f} {row['ms_per_root']:8.2f} {row['peak_rss_mib']:12} "
            f"{row['output_files']:9} {row['output_mb']:7.1f}"
        )
    verdict = "linear or better" if result["linear_or_better"] else "worse than linear"
    print(f"  seconds per root at N / at N/4: {result['per_root_growth_n_over_quarter']}x ({verdict}); ", end="")
    print(f"from N/4 to N, {result['marginal_ms_per_root']} ms per added root")
