"""Static hints (distill.hints): executables and libraries a shipped program names in its strings, on
programs compiled by the test (OpenSSH on Debian 12 and 13: tests/e2e/test_hints_openssh.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from distill.hints import rodata_paths

from helpers.cli import run_distill
from helpers.tree import Tree

HELPER_CALLER = r"""
#include <stdio.h>
const char *volatile helper = "/usr/lib/app/helper";
const char *volatile plugin = "/usr/lib/app/plugin.so";
const char *volatile data = "/usr/share/app/data.txt";
const char *volatile phrase = "run /usr/lib/app/other now";
int main(void) { puts(helper); puts(plugin); puts(data); puts(phrase); return 0; }
"""


def test_rodata_paths_are_whole_strings(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "src")
    program = tree.prog("/usr/bin/caller", source=HELPER_CALLER)
    strings = rodata_paths(io.BytesIO(program.read_bytes()))
    assert {"/usr/lib/app/helper", "/usr/lib/app/plugin.so", "/usr/share/app/data.txt"} <= set(strings)
    assert "/usr/lib/app/other" not in strings  # inside a longer string: not a path the program opens as is


def test_hints_report_executables_and_libraries_and_include_takes_them(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "src").app()
    tree.prog("/usr/bin/caller", source=HELPER_CALLER)
    tree.prog("/usr/lib/app/helper")
    tree.lib("/usr/lib/app/plugin.so")
    tree.write("/usr/share/app/data.txt", "data\n")
    report = json.loads(run_distill("/usr/bin/caller", "--from", str(tree.root), "--out", f"rootfs:{tmp_path / 'a'}", "--json").stdout)
    assert [(h["path"], h["kind"], h["named_by"], h["shipped"]) for h in report["hints"]] == [
        ("/usr/lib/app/helper", "executable", "/usr/bin/caller", False),
        ("/usr/lib/app/plugin.so", "library", "/usr/bin/caller", False),
    ]  # data files are no hint
    explained = run_distill("explain", "/usr/bin/caller", "--from", str(tree.root)).stdout
    assert "  /usr/lib/app/helper  (executable named in the .rodata strings of /usr/bin/caller)" in explained
    profile = tmp_path / "caller.yaml"
    profile.write_text("schema: distill/v1\nname: caller\nbinaries: [/usr/bin/caller]\nhints: include\n")
    result = run_distill(str(profile), "--from", str(tree.root), "--out", f"rootfs:{tmp_path / 'b'}", "--json")
    assert result.code == 0, result.stderr
    entries = {e["path"]: e for e in json.loads(result.stdout)["entries"]}
    assert entries["/usr/lib/app/helper"]["reasons"][0] == {
        "kind": "hint",
        "detail": "hints: include: /usr/lib/app/helper, executable named in the .rodata strings of /usr/bin/caller",
        "via": "/usr/bin/caller",
    }
    assert "/usr/lib/app/plugin.so" in entries and "/usr/share/app/data.txt" not in entries
