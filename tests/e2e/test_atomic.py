"""Outputs are atomic: a run killed mid-write (SIGINT, SIGTERM or SIGKILL) leaves the destination as it
was, SIGINT and SIGTERM also remove their temporary files, and concurrent runs writing one OCI layout
do not corrupt it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO
from helpers.registry import skopeo_inspect
from helpers.tree import Tree

pytestmark = pytest.mark.slow

BIG = 64 << 20  # incompressible, so every sink spends a visible moment writing it


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = Tree(tmp_path_factory.mktemp("atomic") / "root")
    tree.app()
    tree.write("/srv/big", os.urandom(BIG))
    return tree.root


def temporaries(directory: Path, name: str) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(f".{name}.distill-")]


def killed_mid_write(source: Path, out: str, dest: Path, sig: signal.Signals) -> bool:
    """Start a run, send `sig` as soon as its temporary sibling appears; True if it was caught writing."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "distill", "/usr/bin/app", "--from", str(source), "--path", "/srv/big",
                                "--out", out, "--force", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    caught = False
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if temporaries(dest.parent, dest.name):
            process.send_signal(sig)
            caught = True
            break
        time.sleep(0.002)
    _, stderr = process.communicate(timeout=120)
    assert b"Traceback" not in stderr
    return caught and process.returncode != 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("transport", ["rootfs", "layer", "oci", "docker-archive"])
def test_a_killed_run_leaves_the_destination_as_it_was(source: Path, tmp_path: Path, transport: str, sig: signal.Signals) -> None:
    name = {"rootfs": "out", "layer": "out.tar", "oci": "out", "docker-archive": "out.tar"}[transport]
    dest = tmp_path / name
    if transport in ("rootfs",):
        dest.mkdir()
        (dest / "previous").write_text("the last good output")
    elif transport in ("layer", "docker-archive"):
        dest.write_text("the last good output")
    before = sorted(os.listdir(dest)) if dest.is_dir() else (dest.read_text() if dest.exists() else None)
    out = f"{transport}:{dest}" + (":app" if transport in ("oci", "docker-archive") else "")
    caught = 0
    for _ in range(3):  # a run that finished before the signal proves nothing; try again
        if killed_mid_write(source, out, dest, sig):
            caught += 1
            break
    assert caught, "the signal never arrived while the output was being written"
    after = sorted(os.listdir(dest)) if dest.is_dir() else (dest.read_text() if dest.exists() else None)
    assert after == before
    if sig is not signal.SIGKILL:
        assert temporaries(tmp_path, name) == []


def test_concurrent_runs_share_one_layout(source: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run([sys.executable, "-m", "distill", "/usr/bin/app", "--from", str(source), "--out", f"oci:{layout}:base",
                            "-q"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    runs = [subprocess.Popen([sys.executable, "-m", "distill", "/usr/bin/app", "--from", str(source), "--tz", "none" if n % 2 else "UTC",
                              "--env", f"RUN={n}", "--out", f"oci:{layout}:run{n}", "-q"], env=env, stderr=subprocess.PIPE)
            for n in range(4)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    index = json.loads((layout / "index.json").read_text())
    names = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    assert names == ["base", "run0", "run1", "run2", "run3"]
    for name in names:
        assert skopeo_inspect(f"oci:{layout}:{name}")["Os"] == "linux"
    assert not [n for n in os.listdir(layout / "blobs/sha256") if n.startswith(".")]
