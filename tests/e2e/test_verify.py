"""`distill verify`: each failure class has its own message and exit code, on trees of real ELF files
compiled here; `--run` starts the entrypoint under runc and runs a probe against it."""

from __future__ import annotations

from pathlib import Path

from helpers.cli import run_distill
from helpers.tree import TRIPLET, Tree

LIBDIR = f"/usr/lib/{TRIPLET}"
V1 = "VERS_1 { global: f1; local: *; };\n"
V2 = "VERS_1 { global: f1; local: *; };\nVERS_2 { global: f2; } VERS_1;\n"
SERVER = r"""
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0), on = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(8080), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4)) { perror("listen"); return 1; }
    puts("app: listening on 8080");
    fflush(stdout);
    for (;;) { int c = accept(s, 0, 0); write(c, "pong", 4); close(c); }
}
"""


def verify(root: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_distill("verify", str(root), *args)


def test_a_clean_tree_passes(tree: Tree) -> None:
    tree.app()
    result = verify(tree.root, "--entrypoint", "/usr/bin/app", "--user", "root", "--workdir", "/usr")
    assert result.code == 0, result.stderr
    assert "ELF files load" in result.stderr


def test_a_missing_library_exits_4(tree: Tree) -> None:
    tree.glibc()
    tree.lib(f"{LIBDIR}/libgone.so.1", soname="libgone.so.1")
    tree.prog("/usr/bin/app", needs=[f"{LIBDIR}/libgone.so.1"])
    tree.host(f"{LIBDIR}/libgone.so.1").unlink()
    result = verify(tree.root, "--entrypoint", "/usr/bin/app")
    assert result.code == 4, result.stderr
    assert "distill: error: missing-library: libgone.so.1 (needed by /usr/bin/app) is not in the image" in result.stderr


def test_a_missing_symbol_version_exits_6(tree: Tree) -> None:
    tree.glibc()
    tree.write("/build/v2.map", V2)
    tree.write("/build/v1.map", V1)
    newer = tree.lib(
        "/build/new/libv.so.1",
        soname="libv.so.1",
        flags=[f"-Wl,--version-script={tree.host('/build/v2.map')}"],
        source="int f1(void) { return 1; }\nint f2(void) { return 2; }\n",
    )
    tree.lib(
        f"{LIBDIR}/libv.so.1",
        soname="libv.so.1",
        flags=[f"-Wl,--version-script={tree.host('/build/v1.map')}"],
        source="int f1(void) { return 1; }\n",
    )
    tree.prog("/usr/bin/app", flags=[str(newer)], source="int f2(void);\nint main(void) { return f2(); }\n")
    newer.unlink()
    result = verify(tree.root, "--entrypoint", "/usr/bin/app")
    assert result.code == 6, result.stderr
    assert "distill: error: missing-version: /usr/bin/app needs version VERS_2 of libv.so.1" in result.stderr


def test_a_missing_entrypoint_or_interpreter_exits_7(tree: Tree) -> None:
    tree.app()
    result = verify(tree.root, "--entrypoint", "/usr/bin/nope")
    assert result.code == 7, result.stderr
    assert "distill: error: entrypoint: entrypoint /usr/bin/nope is not in the image" in result.stderr
    tree.write("/usr/bin/script", "#!/usr/bin/python3\nprint(1)\n", mode=0o755)
    result = verify(tree.root, "--entrypoint", '["/usr/bin/script", "-v"]')
    assert result.code == 7
    assert "interpreter of /usr/bin/script: /usr/bin/python3 is not in the image" in result.stderr
    tree.write("/usr/bin/data", "not a program\n", mode=0o644)
    result = verify(tree.root, "--entrypoint", "data")
    assert result.code == 7
    assert "entrypoint /usr/bin/data is not an executable file (mode 0644)" in result.stderr


def test_a_missing_user_or_workdir_exits_8(tree: Tree) -> None:
    tree.app()
    result = verify(tree.root, "--entrypoint", "/usr/bin/app", "--user", "ghost:ghosts", "--workdir", "/srv/app")
    assert result.code == 8, result.stderr
    assert "config: user ghost is not in the image's /etc/passwd" in result.stderr
    assert "config: group ghosts is not in the image's /etc/group" in result.stderr
    assert "config: working directory /srv/app is not a directory in the image" in result.stderr


def test_the_most_basic_failure_class_sets_the_exit_code(tree: Tree) -> None:
    tree.glibc()
    tree.lib(f"{LIBDIR}/libgone.so.1", soname="libgone.so.1")
    tree.prog("/usr/bin/app", needs=[f"{LIBDIR}/libgone.so.1"])
    tree.host(f"{LIBDIR}/libgone.so.1").unlink()
    result = verify(tree.root, "--entrypoint", "/usr/bin/app", "--user", "ghost")
    assert result.code == 4
    assert "missing-library" in result.stderr and "config: user ghost" in result.stderr


def test_run_passes_a_probe_and_reports_a_failing_one_with_the_container_output_exit_9(tree: Tree) -> None:
    tree.app()
    tree.prog("/usr/bin/server", source=SERVER)
    probe = "python3 -c \"import socket; assert socket.create_connection(('127.0.0.1', 8080)).recv(4) == b'pong'\""
    passed = verify(tree.root, "--entrypoint", "/usr/bin/server", "--run", probe, "--wait-port", "8080", "--timeout", "30")
    assert passed.code == 0, passed.stderr
    assert "probe passed" in passed.stderr
    failed = verify(tree.root, "--entrypoint", "/usr/bin/server", "--run", "echo expected ping; exit 3", "--wait-port", "8080")
    assert failed.code == 9, failed.stderr
    assert (
        "probe: probe 'echo expected ping; exit 3' failed (exit 3): expected ping; container output: app: listening on 8080"
        in failed.stderr
    )
    assert not tree.host("/proc").exists()  # the source was never written: runc mounted /proc on an overlay of it


def test_run_reports_a_server_that_never_listens(tree: Tree) -> None:
    tree.app()
    result = verify(tree.root, "--entrypoint", "/usr/bin/app", "--run", "true", "--wait-port", "8080", "--timeout", "5")
    assert result.code == 9, result.stderr
    assert "probe not run: nothing listened on port 8080" in result.stderr


def test_a_bad_entrypoint_flag_is_a_usage_error(tree: Tree) -> None:
    tree.app()
    result = verify(tree.root, "--entrypoint", '["/usr/bin/app", 1]')
    assert result.code == 2
    assert result.stderr == "distill: error: --entrypoint: give a JSON list of strings, or words split like a shell\n"
