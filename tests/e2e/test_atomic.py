"""Outputs are atomic: a run killed mid-write (SIGINT, SIGTERM or SIGKILL) leaves the destination as it
was, SIGINT and SIGTERM also remove their temporary files, and concurrent runs writing one OCI layout
do not corrupt it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
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


def staged_inside(layout: Path) -> list[str]:
    """Temporary blobs distill stages inside an existing layout."""
    blobs = layout / "blobs/sha256"
    return [n for n in os.listdir(blobs) if ".distill-" in n] if blobs.is_dir() else []


def snapshot(path: Path) -> dict[str, tuple[str, int, str]]:
    """Everything at `path`: each entry's kind, mode and content (a file's sha256, a link's target)."""
    if not (path.exists() or path.is_symlink()):
        return {}
    entries = [path, *sorted(path.rglob("*"))] if path.is_dir() and not path.is_symlink() else [path]
    found = {}
    for entry in entries:
        info = entry.lstat()
        if stat.S_ISLNK(info.st_mode):
            content = os.readlink(entry)
        elif stat.S_ISREG(info.st_mode):
            content = hashlib.sha256(entry.read_bytes()).hexdigest()
        else:
            content = ""
        found[str(entry.relative_to(path))] = (stat.filemode(info.st_mode), info.st_size if content else 0, content)
    return found


EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}  # docs/cli.md; SIGKILL: the kernel's


def killed_mid_write(source: Path, out: str, writing: Callable[[], bool], sig: signal.Signals) -> int | None:
    """Start a run and send `sig` as soon as `writing()` sees its temporary output; the exit status,
    or None if the run finished before anything was seen (the per-test time limit bounds a hang)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "distill", "/usr/bin/app", "--from", str(source), "--path", "/srv/big", "--out", out, "--force", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    caught = False
    while process.poll() is None:
        if writing():
            process.send_signal(sig)
            caught = True
            break
        time.sleep(0.002)
    _, stderr = process.communicate()
    assert b"Traceback" not in stderr, stderr
    if sig is not signal.SIGKILL and caught:
        assert stderr.decode().strip() == {signal.SIGINT: "distill: interrupted", signal.SIGTERM: "distill: terminated"}[sig]
    return process.returncode if caught else None


SIGNALS = pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])


def interrupted(source: Path, out: str, writing: Callable[[], bool], sig: signal.Signals) -> None:
    for _ in range(3):  # a run that finished before the signal proves nothing; try again
        code = killed_mid_write(source, out, writing, sig)
        if code is not None:
            assert code == EXIT[sig]
            return
    pytest.fail("the signal never arrived while the output was being written")


@SIGNALS
@pytest.mark.parametrize("transport", ["rootfs", "layer", "oci", "docker-archive"])
def test_a_killed_run_leaves_the_destination_as_it_was(source: Path, tmp_path: Path, transport: str, sig: signal.Signals) -> None:
    name = {"rootfs": "out", "layer": "out.tar", "oci": "out", "docker-archive": "out.tar"}[transport]
    dest = tmp_path / name
    if transport == "rootfs":
        dest.mkdir()
        (dest / "previous").write_text("the last good output")
    elif transport in ("layer", "docker-archive"):
        dest.write_text("the last good output")
    before = snapshot(dest)
    out = f"{transport}:{dest}" + (":app" if transport in ("oci", "docker-archive") else "")
    interrupted(source, out, lambda: bool(temporaries(dest.parent, dest.name)), sig)
    assert snapshot(dest) == before
    if sig is not signal.SIGKILL:
        assert temporaries(tmp_path, name) == []


def new_blobs(layout: Path, before: dict[str, tuple[str, int, str]]) -> list[str]:
    """Blobs renamed into the layout since `before` (complete files, not temporaries)."""
    return [f"blobs/sha256/{n}" for n in os.listdir(layout / "blobs/sha256") if ".distill-" not in n and f"blobs/sha256/{n}" not in before]


def referenced(layout: Path) -> set[str]:
    """Every blob the layout's index reaches (manifests, configs, layers)."""
    found = set()
    for entry in json.loads((layout / "index.json").read_text())["manifests"]:
        manifest_name = f"blobs/sha256/{entry['digest'].split(':')[1]}"
        manifest = json.loads((layout / manifest_name).read_text())
        found |= {manifest_name, *(f"blobs/sha256/{d['digest'].split(':')[1]}" for d in [manifest["config"], *manifest["layers"]])}
    return found


@SIGNALS
@pytest.mark.parametrize("moment", ["first-blob-staged", "first-blob-landed"])
def test_a_killed_write_into_an_existing_layout_is_all_or_nothing(source: Path, tmp_path: Path, sig: signal.Signals, moment: str) -> None:
    """An existing layout gains blobs in place and index.json last. Interrupted, it holds exactly what it held,
    or (when the signal came after index.json was replaced) that plus the whole new image; never a stray blob.
    After SIGKILL nothing can clean up: complete, unreferenced blobs and temporaries may stay, nothing else."""
    layout = tmp_path / "layout"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(
        [sys.executable, "-m", "distill", "/usr/bin/app", "--from", str(source), "--out", f"oci:{layout}:previous", "-q"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    before = snapshot(layout)
    writing = (lambda: bool(staged_inside(layout))) if moment == "first-blob-staged" else (lambda: bool(new_blobs(layout, before)))
    interrupted(source, f"oci:{layout}:app", writing, sig)
    after = snapshot(layout)
    extra = set(after) - set(before)
    assert skopeo_inspect(f"oci:{layout}:previous")["Os"] == "linux"
    if after.get("index.json") != before["index.json"]:  # committed: the new image is whole, and nothing else came
        assert {k: v for k, v in after.items() if k in before and k != "index.json"} == {
            k: v for k, v in before.items() if k != "index.json"
        }
        assert extra <= referenced(layout) and skopeo_inspect(f"oci:{layout}:app")["Os"] == "linux"
    elif sig is signal.SIGKILL:
        assert {k: v for k, v in after.items() if k in before} == before
        assert all(".distill-" in name or verified_blob(layout / name) for name in extra), extra
    else:
        assert after == before, sorted(extra)


def verified_blob(path: Path) -> bool:
    return path.parent.name == "sha256" and hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def test_concurrent_runs_share_one_layout(source: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(
        [sys.executable, "-m", "distill", "/usr/bin/app", "--from", str(source), "--out", f"oci:{layout}:base", "-q"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distill",
                "/usr/bin/app",
                "--from",
                str(source),
                "--tz",
                "none" if n % 2 else "UTC",
                "--env",
                f"RUN={n}",
                "--out",
                f"oci:{layout}:run{n}",
                "-q",
            ],
            env=env,
            stderr=subprocess.PIPE,
        )
        for n in range(4)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    index = json.loads((layout / "index.json").read_text())
    names = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    assert names == ["base", "run0", "run1", "run2", "run3"]
    for name in names:
        assert skopeo_inspect(f"oci:{layout}:{name}")["Os"] == "linux"
    assert not [n for n in os.listdir(layout / "blobs/sha256") if n.startswith(".")]
