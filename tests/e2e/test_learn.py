"""`distill learn`: a traced run inside the source drafts a profile that works, or shows what one lacks.

The acceptance case is graphviz: `dot` loads its renderers through a plugin config file, which no ELF
header names, so an ad-hoc profile gives an output that cannot render PNG; the learned draft does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.profile import load_profile

from helpers import fat_rootfs
from helpers.cli import run_distill
from helpers.registry import build_image_layout
from helpers.tree import Tree

GRAPH = "digraph { a -> b; b -> c }\n"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def graphviz_root() -> Path:
    return fat_rootfs(("graphviz",))


LEARN = [sys.executable, "-m", "distill", "learn"]


def learn(root: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LEARN, *args[:1], "--from", str(root), *args[1:]], input=stdin, capture_output=True, text=True)


def renders_png(root: Path) -> bytes:
    run = subprocess.run(["chroot", str(root), "/usr/bin/dot", "-Tpng"], input=GRAPH.encode(), capture_output=True)
    return run.stdout[:8] + run.stderr[-300:]


@pytest.mark.rootfs
def test_learned_graphviz_profile_renders_png_where_an_ad_hoc_one_cannot(graphviz_root: Path, tmp_path: Path) -> None:
    draft = tmp_path / "dot.yaml"
    result = learn(graphviz_root, "dot", "--write", str(draft), "--", "dot", "-Tpng", "-o", "/dev/null", stdin=GRAPH)
    assert result.returncode == 0, result.stderr
    text = draft.read_text()
    document = yaml.safe_load(text)
    assert "/usr/bin/dot" in document["binaries"]
    assert any("/graphviz/libgvplugin_" in b for b in document["binaries"])  # dlopen'ed renderers
    assert "/usr/lib/x86_64-linux-gnu/graphviz/config6a" in document["paths"]  # the plugin config
    for line in text.splitlines():  # readable: every entry says what touched it
        if line.startswith(("  - /", "  /")):
            assert " # " in line and ("by /usr/bin/dot" in line or "executed" in line), line
    assert not any(p.startswith(("/proc", "/sys", "/dev")) for p in [*document["binaries"], *document["paths"]])
    assert load_profile(str(draft)).name == "dot"

    learned = run_distill(str(draft), "--from", str(graphviz_root), "--out", f"rootfs:{tmp_path / 'learned'}", "-q")
    assert learned.code == 0, learned.stderr
    assert renders_png(tmp_path / "learned").startswith(PNG)

    adhoc = run_distill("/usr/bin/dot", "--from", str(graphviz_root), "--out", f"rootfs:{tmp_path / 'adhoc'}", "-q")
    assert adhoc.code == 0, adhoc.stderr
    assert not renders_png(tmp_path / "adhoc").startswith(PNG)


@pytest.mark.rootfs
def test_check_lists_what_a_profile_lacks_exit_4(graphviz_root: Path, tmp_path: Path) -> None:
    adhoc = tmp_path / "adhoc.yaml"
    adhoc.write_text("schema: distill/v1\nname: dot\nextends: [glibc]\nbinaries: [/usr/bin/dot]\n")
    result = learn(graphviz_root, "dot", "--check", str(adhoc), "--", "dot", "-Tpng", "-o", "/dev/null", stdin=GRAPH)
    assert result.returncode == 4, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("/usr/lib/x86_64-linux-gnu/graphviz/config6a: opened by /usr/bin/dot")
        and line.endswith("not in the profile's output")
        for line in lines
    ), lines
    assert f"distill: error: {adhoc}: lacks" in result.stderr


@pytest.mark.rootfs
def test_learning_a_server_with_a_probe_finds_its_worker_account(fat_root: Path) -> None:
    before = sorted(p.name for p in (fat_root / "run").iterdir())
    result = learn(fat_root, "nginx", "--probe", "curl -sf http://127.0.0.1/ -o /dev/null", "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert "probe exit 0" in result.stderr
    document = yaml.safe_load(result.stdout)
    assert document["accounts"]["users"] == ["www-data"]
    assert "# setuid(33) by /usr/sbin/nginx" in result.stdout
    assert "/usr/sbin/nginx" in document["binaries"]
    assert any(p.startswith("/etc/nginx/") for p in document["paths"])
    # files it creates need only their directory, not the source's (possibly stale) contents
    assert {"/var/log/nginx/", "/var/lib/nginx/", "/run/"} <= set(document["paths"])
    assert not any(p.startswith("/var/log/nginx/") and p.endswith(".log") for p in document["paths"])
    assert sorted(p.name for p in (fat_root / "run").iterdir()) == before  # nginx.pid went to the overlay


@pytest.mark.rootfs
def test_learn_then_distill_then_verify_run_without_a_built_in_profile(fat_root: Path, tmp_path: Path) -> None:
    draft = tmp_path / "web.yaml"
    learned = learn(
        fat_root,
        "web",
        "--probe",
        "curl -sf http://127.0.0.1/ -o /dev/null",
        "--wait-port",
        "80",
        "--write",
        str(draft),
        "--",
        "/usr/sbin/nginx",
        "-g",
        "daemon off;",
    )
    assert learned.returncode == 0, learned.stderr
    built = run_distill(str(draft), "--from", str(fat_root), "--out", f"rootfs:{tmp_path / 'out'}", "-q")
    assert built.code == 0, built.stderr
    entrypoint = json.dumps(yaml.safe_load(draft.read_text())["image"]["entrypoint"])  # a rootfs has no image config
    verified = run_distill(
        "verify",
        str(tmp_path / "out"),
        "--entrypoint",
        entrypoint,
        "--wait-port",
        "80",
        "--timeout",
        "30",
        "--run",
        "curl -sf http://127.0.0.1/ | grep -q 'Welcome to nginx'",
    )
    assert verified.code == 0, verified.stderr
    assert "probe passed" in verified.stderr


def test_children_relative_paths_and_the_host_stay_apart(tree: Tree, tmp_path: Path) -> None:
    tree.app()
    tree.write("/etc/app/one.conf", "1\n")
    tree.write("/etc/app/two.conf", "2\n")
    tree.write("/usr/share/app/data", "x\n")
    tree.prog("/usr/bin/child", source='#include <stdio.h>\nint main(void) { return fopen("/usr/share/app/data", "r") == 0; }\n')
    tree.prog(
        "/usr/bin/parent",
        source="""
#include <dirent.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    DIR *d = opendir("/etc/app"); struct dirent *e; char name[300];
    while ((e = readdir(d))) { if (e->d_name[0] != '.') { snprintf(name, sizeof name, "/etc/app/%s", e->d_name); fopen(name, "r"); } }
    chdir("/usr/share"); fopen("app/data", "r"); fopen("/proc/self/status", "r");
    if (fork() == 0) { execl("/usr/bin/child", "child", (char *)0); _exit(127); }
    int status; wait(&status); return WEXITSTATUS(status);
}
""",
    )
    result = learn(tree.root, "app", "--", "/usr/bin/parent")
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert document["binaries"] == ["/usr/bin/child", "/usr/bin/parent"]
    assert "/etc/app/**" in document["paths"]  # listed, then every entry read
    assert "/usr/share/app/data" in document["paths"]  # relative to the working directory, and by the child
    assert "opened by /usr/bin/child, /usr/bin/parent" in result.stdout or "opened by /usr/bin/parent, /usr/bin/child" in result.stdout
    assert "executed by /usr/bin/parent" in result.stdout
    assert not any(p.startswith("/proc") for p in document["paths"])
    assert not any(str(tmp_path) in p for p in document["paths"])  # no host path leaked through the overlay


def test_an_image_source_is_written_out_and_traced(tree: Tree, tmp_path: Path) -> None:
    tree.app()
    tree.write("/etc/app.conf", "x\n")
    tree.prog("/usr/bin/reader", source='#include <stdio.h>\nint main(void) { return fopen("/etc/app.conf", "r") == 0; }\n')
    build_image_layout(tree.root, tmp_path / "layout", "1")
    result = learn(tree.root, "reader", "--", "reader")  # PATH lookup inside the root
    from_image = subprocess.run(
        [*LEARN, "reader", "--from", f"oci:{tmp_path / 'layout'}:1", "--", "reader"], capture_output=True, text=True
    )
    assert from_image.returncode == 0, from_image.stderr
    assert from_image.stdout.splitlines()[4:] == result.stdout.splitlines()[4:]  # the same draft, below the header
    assert "/etc/app.conf: {}" in from_image.stdout
