"""Golden output: the code at GOLDEN_COMMIT and the code of this tree write byte-identical images.

The planner refactor (issue 8) promised unchanged behaviour; this test holds every later change to
the same promise. It extracts distill at GOLDEN_COMMIT from this repository's history, runs it and
the current tree on the same fat rootfs with the same SOURCE_DATE_EPOCH, and compares the layer
(the uncompressed tar, as `layer:` writes it and as the OCI layout's gzip blob holds it) and the
config (which names the layer by its diff_id). The compressed bytes are left out: the gzip level
was changed on purpose (6 -> 4, issue 13, measured in docs/performance.md), which changes the
blob's and so the manifest's digest, not the content. A change that means to alter the content
moves GOLDEN_COMMIT to its own parent commit in the same change, and says why in its message.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.rootfs

GOLDEN_COMMIT = "c9d99c7d19231c4001a56b0719ec36c1c71530c6"  # main before the planner refactor
EPOCH = "1700000000"


def _checkout(commit: str, into: Path) -> Path:
    """distill's package and profiles as they were at `commit` (the full history is part of a clone)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "distill", "profiles"], capture_output=True)
    assert archive.returncode == 0, (
        f"git archive {commit} failed ({archive.stderr.decode().strip()}); the golden test needs the repository's history: "
        "clone without --depth"
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def _distill(code: Path, fat_root: Path, out: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(code), "SOURCE_DATE_EPOCH": EPOCH}
    out.mkdir()  # distill creates no directory it was not given
    command = [
        sys.executable,
        "-m",
        "distill",
        "nginx",
        "--from",
        f"rootfs:{fat_root}",
        "--out",
        f"layer:{out / 'layer.tar'}",
        "--out",
        f"oci:{out / 'oci'}:nginx",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=code)
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "oci" / "index.json").read_text())
    manifest = json.loads(_blob(out, index["manifests"][0]["digest"]))
    (layer,) = manifest["layers"]
    return {
        "config": manifest["config"]["digest"],
        "layer": hashlib.sha256((out / "layer.tar").read_bytes()).hexdigest(),
        "oci layer, uncompressed": hashlib.sha256(gzip.decompress(_blob(out, layer["digest"]))).hexdigest(),
    }


def _blob(out: Path, digest: str) -> bytes:
    return (out / "oci" / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def test_the_output_is_byte_identical_to_the_golden_commits(fat_root: Path, tmp_path: Path) -> None:
    old = _checkout(GOLDEN_COMMIT, tmp_path / "golden")
    golden = _distill(old, fat_root, tmp_path / "golden-out")
    current = _distill(REPO, fat_root, tmp_path / "current-out")
    assert current == golden
