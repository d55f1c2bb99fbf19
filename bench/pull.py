"""Scenario `registry-pull`: the fat nginx rootfs as an image (umoci, one 70 MB gzip layer) in a local
docker-registry; distill (`--from` the registry, `--out oci:`) with an empty cache (cold) and with its
cache filled (warm), against `skopeo copy docker://... oci:...` of the same image."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import RUNS, distill


def distill_pull(source: str, out: Path) -> list[str]:
    return distill("nginx", "--from", source, "--out", f"oci:{out}:nginx", "-q")


def cache_env(path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(path)}


def run() -> dict[str, object]:
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


def ratios(result: dict[str, object]) -> dict[str, float]:
    return {
        "registry cold": float(result["cold_over_skopeo"]),  # type: ignore[arg-type]
        "registry warm": float(result["warm_over_skopeo"]),  # type: ignore[arg-type]
    }
