"""Acceptance: distill the fat Debian 12 nginx rootfs; the result runs, answers, and is small."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO
from helpers.cli import run_distill

pytestmark = pytest.mark.rootfs

NETNS_HTTP = REPO / "examples" / "netns_http.py"


@pytest.fixture(scope="module")
def distilled(fat_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nginx") / "out"
    result = run_distill("nginx", "--from", f"rootfs:{fat_root}", "--out", f"rootfs:{out}")
    assert result.code == 0, result.stderr
    return out


@pytest.fixture
def runnable(distilled: Path, tmp_path: Path) -> Path:
    """A copy of the output for a test that runs nginx (which writes its pid and logs), so the shared output
    stays as distill wrote it whatever order the tests run in."""
    copy = tmp_path / "run"
    subprocess.run(["cp", "-a", str(distilled), str(copy)], check=True)
    return copy


def serve(root: Path, *paths: str) -> dict:  # type: ignore[type-arg]
    command = [
        sys.executable,
        str(NETNS_HTTP),
        str(root),
        *[a for p in paths for a in ("--get", p)],
        "--",
        "/usr/sbin/nginx",
        "-g",
        "daemon off;",
    ]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def test_distilled_nginx_serves_the_welcome_page_and_404(runnable: Path) -> None:
    result = serve(runnable, "/", "/nope")
    assert result["started"], result["stderr"]
    assert result["responses"]["/"]["status"] == 200
    assert "Welcome to nginx!" in result["responses"]["/"]["body"]
    assert result["responses"]["/nope"]["status"] == 404


def test_nginx_config_test_passes_in_the_output(runnable: Path) -> None:
    check = subprocess.run(["chroot", str(runnable), "/usr/sbin/nginx", "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "test is successful" in check.stderr


def test_no_shell_package_manager_perl_or_curl_ships(distilled: Path) -> None:
    for path in (
        "bin/sh",
        "usr/bin/sh",
        "usr/bin/dash",
        "usr/bin/bash",
        "usr/bin/apt",
        "usr/bin/apt-get",
        "usr/bin/dpkg",
        "usr/bin/perl",
        "usr/bin/curl",
        "etc/shadow",
    ):
        assert not os.path.lexists(distilled / path), path


def documented_nginx_row() -> tuple[int, float]:
    """docs/profiles.md: `| `distill nginx` | FILES | MB | runs |` for nginx on its own fat rootfs."""
    match = re.search(r"^\| `distill nginx` \| (\d+) \| ([\d.]+) \|", (REPO / "docs/profiles.md").read_text(), re.M)
    assert match, "docs/profiles.md no longer has the distill nginx row"
    return int(match.group(1)), float(match.group(2))


def test_regular_files_match_the_documented_size(distilled: Path) -> None:
    files = [p for p in distilled.rglob("*") if p.is_file() and not p.is_symlink()]
    count, megabytes = documented_nginx_row()
    assert len(files) == count
    # 2% leaves room for a Debian point release; a lost or extra library moves the figure by more
    assert sum(p.stat().st_size for p in files) / 1e6 == pytest.approx(megabytes, rel=0.02)


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


NGINX_ORG_CONF = """\
user  nginx;
worker_processes  auto;
error_log  /var/log/nginx/error.log notice;
pid        /var/run/nginx.pid;
events { worker_connections 1024; }
http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;
    access_log    /var/log/nginx/access.log;
    client_body_temp_path /var/cache/nginx/client_temp;
    proxy_temp_path       /var/cache/nginx/proxy_temp;
    fastcgi_temp_path     /var/cache/nginx/fastcgi_temp;
    uwsgi_temp_path       /var/cache/nginx/uwsgi_temp;
    scgi_temp_path        /var/cache/nginx/scgi_temp;
    include /etc/nginx/conf.d/*.conf;
}
"""
NGINX_ORG_SITE = "server { listen 80; location / { root /usr/share/nginx/html; index index.html; } }\n"


def replace_file(path: Path, text: str) -> None:
    """Write without touching the cached rootfs the tree was hard-linked from."""
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_text(text)


def test_nginx_org_layout_distills_and_serves(fat_root: Path, tmp_path: Path) -> None:
    """nginx.org's packaging: user nginx, conf.d/default.conf, /usr/share/nginx/html, /var/cache/nginx."""
    root = tmp_path / "org"
    subprocess.run(["cp", "-al", str(fat_root), str(root)], check=True)
    replace_file(root / "etc/nginx/nginx.conf", NGINX_ORG_CONF)
    replace_file(root / "etc/nginx/conf.d/default.conf", NGINX_ORG_SITE)
    (root / "etc/nginx/sites-enabled/default").unlink()
    shutil.rmtree(root / "var/www")  # Debian's site root; nginx.org serves /usr/share/nginx/html
    passwd = [line for line in (root / "etc/passwd").read_text().splitlines() if not line.startswith("www-data:")]
    replace_file(root / "etc/passwd", "\n".join([*passwd, "nginx:x:101:101:nginx user:/nonexistent:/bin/false"]) + "\n")
    group = [line for line in (root / "etc/group").read_text().splitlines() if not line.startswith("www-data:")]
    replace_file(root / "etc/group", "\n".join([*group, "nginx:x:101:"]) + "\n")
    (root / "var/cache/nginx").mkdir()
    os.chown(root / "var/cache/nginx", 101, 101)
    out = tmp_path / "out"
    result = run_distill("nginx", "--from", str(root), "--out", f"rootfs:{out}", "-q")
    assert result.code == 0, result.stderr
    assert [line.split(":")[0] for line in (out / "etc/passwd").read_text().splitlines()] == ["root", "nginx"]
    assert (out / "var/cache/nginx").stat().st_uid == 101
    assert not (out / "var/www").exists()
    served = serve(out, "/")
    assert served["started"], served["stderr"]
    assert served["responses"]["/"]["status"] == 200
    assert "Welcome to nginx!" in served["responses"]["/"]["body"]
