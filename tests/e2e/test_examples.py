"""The examples stay valid: their profiles load, and the nginx variant distills on the fat rootfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.profile import load_profile

from helpers import REPO
from helpers.cli import run_distill

EXAMPLES = sorted((REPO / "examples").rglob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_profiles_load(path: Path) -> None:
    assert load_profile(str(path)).name == path.stem


@pytest.mark.rootfs
def test_nginx_with_logs_on_stdout_distills(fat_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_distill(str(REPO / "examples/nginx-stdout-logs.yaml"), "--from", str(fat_root), "--out", f"rootfs:{out}", "-q")
    assert result.code == 0, result.stderr
    assert (out / "var/log/nginx/access.log").readlink() == Path("/dev/stdout")
    assert (out / "var/log/nginx/error.log").readlink() == Path("/dev/stderr")
