"""Scenario `memory`: distill's peak resident set (wait4's ru_maxrss, the process and what it waited for)
and wall time when the source is an image, with an empty cache each time.

- the fat nginx image of `registry-pull` (umoci, one 70 MB gzip layer, 190 MB uncompressed) from a local
  docker-registry; target (issue 13): under 200 MB;
- a 2 GB image: the same root plus a second layer of 1.8 GB of incompressible files (9 x 200 MB, seeded
  pseudo-random bytes, so every machine builds the same image), packed by umoci and cached under
  ~/.cache/distill-test/layouts; read from the OCI layout and from the registry. Target: bounded, i.e.
  about the same peak as the small image (layers streamed), not growing with the layer.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import tempfile
from pathlib import Path

from common import distill, measured
from pull import cache_env

BIG_FILES = 9
BIG_FILE_BYTES = 200 * 2**20
TARGET_MIB = 200
COLD_RUNS = 3  # the small image; the big one runs once per source


def big_layout() -> Path:
    """The fat nginx rootfs plus a layer of BIG_FILES incompressible files, as an OCI layout (ref `latest`)."""
    from helpers import fat_rootfs
    from helpers.images import _cached
    from helpers.registry import build_image_layout

    root = fat_rootfs()

    def blobs(tree: Path) -> None:
        target = tree / "srv" / "bench"
        target.mkdir(parents=True)
        generator = random.Random(13)
        for number in range(BIG_FILES):
            (target / f"blob-{number}.bin").write_bytes(generator.randbytes(BIG_FILE_BYTES))

    key = hashlib.sha256(f"{root}|{BIG_FILES}x{BIG_FILE_BYTES}".encode()).hexdigest()[:16]
    return _cached("layouts", f"big-{key}", lambda work: build_image_layout(root, work / "layout", "latest", extra_layer=blobs)) / "layout"


def _cold(source: str, work: Path, tag: str) -> tuple[float, int]:
    """One distill run from `source` with an empty cache: seconds and peak RSS in MiB."""
    cache = Path(tempfile.mkdtemp(prefix=f"cache-{tag}-", dir=work))
    seconds, peak_kib, _ = measured(distill("nginx", "--from", source, "--out", f"oci:{work / tag}:nginx", "-q"), env=cache_env(cache))
    return seconds, round(peak_kib / 1024)


def _layout_bytes(layout: Path) -> int:
    return sum(p.stat().st_size for p in (layout / "blobs").rglob("*") if p.is_file())


def _row(image: str, layout: Path, runs: int, seconds: float, peak_mib: int) -> dict[str, object]:
    return {
        "image": image,
        "compressed_bytes": _layout_bytes(layout),
        "runs": runs,
        "median_seconds": round(seconds, 2),
        "peak_rss_mib": peak_mib,
    }


def run() -> dict[str, object]:
    from helpers.images import fat_layout
    from helpers.registry import Registry, skopeo_copy

    small, big = fat_layout(), big_layout()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="distill-bench-memory-") as work_dir:
        work = Path(work_dir)
        with Registry(work / "registry") as registry:
            skopeo_copy(f"oci:{small}:latest", registry.ref("library/nginx:latest"))
            source = f"{registry.host}/library/nginx:latest"
            _cold(source, work, "warm-up")  # page cache and .pyc files, not distill's cache
            runs = [_cold(source, work, f"small-{n}") for n in range(COLD_RUNS)]
            rows.append(
                _row("fat nginx (190 MB), registry", small, COLD_RUNS, statistics.median(s for s, _ in runs), max(m for _, m in runs))
            )
            seconds, peak = _cold(f"oci:{big}:latest", work, "big-layout")
            rows.append(_row("2 GB, OCI layout", big, 1, seconds, peak))
            skopeo_copy(f"oci:{big}:latest", registry.ref("bench/big:latest"), timeout=1800)
            seconds, peak = _cold(f"{registry.host}/bench/big:latest", work, "big-registry")
            rows.append(_row("2 GB, registry", big, 1, seconds, peak))
    return {"scenario": "memory", "target": f"peak RSS < {TARGET_MIB} MiB on the 190 MB image; bounded on 2 GB", "rows": rows}


def ratios(result: dict[str, object]) -> dict[str, float]:
    return {}


def show(result: dict[str, object]) -> None:
    print(f"\nmemory: distill nginx from an image, empty cache ({result['target']})")
    print(f"  {'image':30} {'compressed MB':>13} {'runs':>4} {'seconds':>8} {'peak RSS MiB':>12}")
    for row in result["rows"]:  # type: ignore[attr-defined]
        megabytes = row["compressed_bytes"] / 1e6
        print(f"  {row['image']:30} {megabytes:13.1f} {row['runs']:4} {row['median_seconds']:8.2f} {row['peak_rss_mib']:12}")
