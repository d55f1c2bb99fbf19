"""The command line: documented exit codes, one-line errors, no tracebacks, nothing half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import REPO
from helpers.cli import run_distill
from helpers.tree import TRIPLET, Tree

LIBDIR = f"/usr/lib/{TRIPLET}"


@pytest.fixture
def source(tree: Tree) -> Path:
    tree.glibc()
    tree.lib(f"{LIBDIR}/libapp.so.1", soname="libapp.so.1")
    tree.prog("/usr/bin/app", needs=[f"{LIBDIR}/libapp.so.1"])
    tree.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    tree.write("/etc/group", "root:x:0:\n")
    return tree.root


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("distill: error: ")]
    assert lines, stderr
    assert "Traceback" not in stderr
    return lines[0].removeprefix("distill: error: ")


def test_adhoc_binary_app_distills_and_runs(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", f"rootfs:{out}")
    assert result.code == 0, result.stderr
    assert (out / "usr/bin/app").is_file() and (out / LIBDIR.lstrip("/") / "libapp.so.1").is_file()
    assert "size ratio" in result.stderr and "distilled" in result.stderr
    ran = os.system(f"chroot {out} /usr/bin/app")
    assert ran == 0


def test_json_report_lists_entries_reasons_checks_and_sizes(source: Path, tmp_path: Path) -> None:
    result = run_distill("--from", str(source), "--binary", "/usr/bin/app", "--out", f"layer:{tmp_path / 'l.tar'}", "--json", "-q")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["profile"]["name"] == "app"
    entries = {e["path"]: e for e in report["entries"]}
    lib = entries[f"{LIBDIR}/libapp.so.1"]
    assert lib["reasons"][0] == {"kind": "needed", "detail": "libapp.so.1", "via": "/usr/bin/app",
                                 "rule": f"default path: /lib/{TRIPLET}"}
    assert report["checks"] == {"errors": [], "warnings": [], "findings": []}
    assert report["summary"]["output_files"] == sum(1 for e in report["entries"] if e["type"] == "file")
    assert report["closures"][0]["root"] == "/usr/bin/app"


def test_explain_prints_a_tree_and_path_chains(source: Path) -> None:
    result = run_distill("explain", "/usr/bin/app", "--from", str(source))
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "/usr/bin/app  [command line: APP]"
    assert (f"├── /lib/{TRIPLET}/libapp.so.1  libapp.so.1 <- /usr/bin/app (default path: /lib/{TRIPLET})"
            in result.stdout.splitlines())
    chain = run_distill("explain", "/usr/bin/app", "--from", str(source), f"/lib/{TRIPLET}/libapp.so.1", "/bin/sh")
    assert chain.stdout == (f"{LIBDIR}/libapp.so.1\n  <- libapp.so.1 <- /usr/bin/app (default path: /lib/{TRIPLET})\n"
                            "    <- command line: APP\n/bin/sh: not shipped\n")


def test_profiles_lists_builtins() -> None:
    result = run_distill("profiles")
    assert result.code == 0
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == sorted(listed)
    assert set(listed) == {path.stem for path in (REPO / "profiles").glob("*.yaml")}  # every file shipped in profiles/


ERRORS = [
    ("no-from", ["nginx", "--out", "rootfs:{out}"], 2, "Missing option '--from'."),
    ("bare-out", ["nginx", "--from", "{src}", "--out", "{out}"], 2, "--out {out}: name a transport"),
    ("unsupported-transport", ["nginx", "--from", "containers-storage:nginx", "--out", "rootfs:{out}"], 2,
     "--from containers-storage:nginx: the containers-storage: transport is not supported"),
    ("bad-reference", ["nginx", "--from", "Nginx:latest", "--out", "rootfs:{out}"], 2,
     'invalid image reference "Nginx:latest": repository name must be lowercase'),
    ("bad-out", ["nginx", "--from", "{src}", "--out", "layer:{out}.zip"], 2, "--out layer:{out}.zip: a layer file must end in .tar, .tar.gz or .tgz"),
    ("unknown-profile", ["ngnix", "--from", "{src}", "--out", "rootfs:{out}"], 2, "no built-in profile 'ngnix' (did you mean nginx?); known: ca-certificates, curl"),
    ("bad-epoch", ["/usr/bin/app", "--from", "{src}", "--out", "rootfs:{out}"], 2, "SOURCE_DATE_EPOCH='yesterday': must be a whole number"),
    ("missing-source", ["nginx", "--from", "/nonexistent/fat", "--out", "rootfs:{out}"], 3, "rootfs:/nonexistent/fat: not a directory"),
    ("missing-binary", ["/usr/bin/nope", "--from", "{src}", "--out", "rootfs:{out}"], 2, "command line: APP: /usr/bin/nope not found in rootfs:"),
    ("broken-elf", ["/usr/bin/broken", "--from", "{src}", "--out", "rootfs:{out}"], 3, "/usr/bin/broken: not an ELF file or truncated header"),
    ("missing-library", ["/usr/bin/app", "--from", "{src}", "--out", "rootfs:{out}"], 4,
     "libapp.so.1 (needed by /usr/bin/app) is not in the output"),
    ("into-source", ["/usr/bin/app", "--from", "{src}", "--out", "rootfs:{src}/out"], 5, "overlaps the source"),
    ("bad-env", ["/usr/bin/app", "--from", "{src}", "--out", "rootfs:{out}", "--env", "NOEQUALS"], 2, "--env 'NOEQUALS': write KEY=VALUE"),
]


@pytest.mark.parametrize(("args", "code", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_input_gets_its_exit_code_and_one_line(source: Path, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    out = tmp_path / "out"
    (source / "usr/bin/broken").write_bytes(b"\x7fELF\x02")
    (source / "usr/bin/broken").chmod(0o755)
    if message.startswith("libapp.so.1"):
        os.unlink(source / LIBDIR.lstrip("/") / "libapp.so.1")
    env = {"SOURCE_DATE_EPOCH": "yesterday"} if message.startswith("SOURCE_DATE_EPOCH") else None
    result = run_distill(*[a.format(src=source, out=out) for a in args], env=env)
    assert result.code == code, result.stderr
    assert message.format(out=out) in one_line_error(result.stderr)
    assert not out.exists() and not (source / "out").exists()


def test_allow_missing_turns_closure_errors_into_warnings(source: Path, tmp_path: Path) -> None:
    os.unlink(source / LIBDIR.lstrip("/") / "libapp.so.1")
    out = tmp_path / "out"
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", f"rootfs:{out}", "--allow-missing", "-q")
    assert result.code == 0
    assert "distill: warning: libapp.so.1 (needed by /usr/bin/app) is not in the output" in result.stderr
    assert (out / "usr/bin/app").is_file()


def test_existing_output_is_kept_without_force(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious").write_text("keep me")
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", f"rootfs:{out}")
    assert result.code == 5
    assert one_line_error(result.stderr) == f"rootfs:{out}: already exists and is not empty; use --force to replace it"
    assert os.listdir(out) == ["precious"]
    forced = run_distill("/usr/bin/app", "--from", str(source), "--out", f"rootfs:{out}", "--force", "-q")
    assert forced.code == 0 and not (out / "precious").exists()


def test_repeated_out_writes_every_destination_from_one_plan(source: Path, tmp_path: Path) -> None:
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", f"rootfs:{tmp_path / 'a'}",
                         "--out", f"layer:{tmp_path / 'b.tar.gz'}", "-q")
    assert result.code == 0, result.stderr
    assert (tmp_path / "a/usr/bin/app").is_file() and (tmp_path / "b.tar.gz").stat().st_size > 0
