"""Acceptance: distill the fat Debian 12 nginx rootfs; the result runs, answers, and is small."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_distill

pytestmark = pytest.mark.rootfs

NETNS_HTTP = REPO / "examples" / "netns_http.py"


@pytest.fixture(scope="module")
def distilled(fat_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nginx") / "out"
    result = run_distill("nginx", "--from", f"rootfs:{fat_root}", "--out", f"rootfs:{out}")
    assert result.code == 0, result.stderr
    return out


def serve(root: Path, *paths: str) -> dict:  # type: ignore[type-arg]
    command = [sys.executable, str(NETNS_HTTP), str(root), *[a for p in paths for a in ("--get", p)],
               "--", "/usr/sbin/nginx", "-g", "daemon off;"]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def test_distilled_nginx_serves_the_welcome_page_and_404(distilled: Path) -> None:
    result = serve(distilled, "/", "/nope")
    assert result["started"], result["stderr"]
    assert result["responses"]["/"]["status"] == 200
    assert "Welcome to nginx!" in result["responses"]["/"]["body"]
    assert result["responses"]["/nope"]["status"] == 404


def test_nginx_config_test_passes_in_the_output(distilled: Path) -> None:
    check = subprocess.run(["chroot", str(distilled), "/usr/sbin/nginx", "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "test is successful" in check.stderr


def test_no_shell_package_manager_perl_or_curl_ships(distilled: Path) -> None:
    for path in ("bin/sh", "usr/bin/sh", "usr/bin/dash", "usr/bin/bash", "usr/bin/apt", "usr/bin/apt-get",
                 "usr/bin/dpkg", "usr/bin/perl", "usr/bin/curl", "etc/shadow"):
        assert not os.path.lexists(distilled / path), path


def test_regular_files_total_at_most_11_mb(distilled: Path) -> None:
    total = sum(p.stat().st_size for p in distilled.rglob("*") if p.is_file() and not p.is_symlink())
    assert total <= 11 * 1000 * 1000, total


def test_accounts_are_reduced_to_those_in_use(distilled: Path) -> None:
    passwd = (distilled / "etc/passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in passwd] == ["root", "www-data"]
    group = [line.split(":")[0] for line in (distilled / "etc/group").read_text().splitlines()]
    assert group == ["root", "www-data"]


def test_layer_output_is_byte_identical_across_runs(fat_root: Path, tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.tar.gz"
        result = run_distill("nginx", "--from", str(fat_root), "--out", f"layer:{out}", "-q")
        assert result.code == 0, result.stderr
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
        time.sleep(1.1)
    assert digests[0] == digests[1]
