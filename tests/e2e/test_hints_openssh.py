"""Static hints on the hidden case: OpenSSH on Debian 13 execs /usr/lib/openssh/sshd-session and sshd-auth,
which no ELF header names; a profile written for Debian 12 ships a listener that cannot serve. The same
profile with `hints: include` authenticates the host's ssh client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fatroot import SUITES
from helpers import fat_rootfs
from helpers.cli import run_distill
from helpers.probes import run_probe

SSHD = """schema: distill/v1
name: sshd
extends: [glibc]
binaries: [/usr/sbin/sshd, /bin/bash]             # root logs in with its shell
paths:
  /etc/ssh/**: {}
  /run/sshd/: {make: true, mode: "0755"}
accounts:
  users: [{name: sshd, optional: true}]
"""


@pytest.mark.rootfs
@pytest.mark.slow
@pytest.mark.parametrize("suite", SUITES)
def test_sshd_helpers_are_hinted_and_taken(suite: str, tmp_path: Path) -> None:
    root = fat_rootfs(("openssh-server", "openssh-client"), suite=suite)
    profile = tmp_path / "sshd.yaml"
    profile.write_text(SSHD)
    reports = {}
    for mode in ("report", "include"):
        (tmp_path / f"{mode}.yaml").write_text(SSHD.replace("name: sshd\n", f"name: sshd-{mode}\nhints: {mode}\n", 1))
        result = run_distill(str(tmp_path / f"{mode}.yaml"), "--from", str(root), "--out", f"rootfs:{tmp_path / mode}", "--json")
        assert result.code == 0, result.stderr
        reports[mode] = json.loads(result.stdout)
    hinted = {h["path"]: h for h in reports["report"]["hints"]}
    helpers = {"/usr/lib/openssh/sshd-session", "/usr/lib/openssh/sshd-auth"} if suite == "trixie" else set()
    assert helpers | {"/usr/lib/openssh/ssh-sk-helper"} <= set(hinted)
    assert all(not h["shipped"] and h["named_by"] == "/usr/sbin/sshd" for p, h in hinted.items() if p in helpers)
    assert reports["report"]["summary"]["hints"] == len(hinted)
    assert (
        "hints: " in run_distill(str(tmp_path / "report.yaml"), "--from", str(root), "--out", f"rootfs:{tmp_path / 'again'}").stderr
    )  # the summary names them
    taken = {e["path"]: e["reasons"] for e in reports["include"]["entries"]}
    for helper in helpers:
        assert [r["kind"] for r in taken[helper]] == ["hint"] and taken[helper][0]["via"] == "/usr/sbin/sshd"
    result = run_probe("sshd", str(tmp_path / "include"), str(tmp_path / "keys-include"))
    assert result["started"] and result["authenticated"], result["client"] + result["stderr"]
    if helpers:  # without its helpers Debian 13's sshd does not serve
        result = run_probe("sshd", str(tmp_path / "report"), str(tmp_path / "keys-report"))
        assert not result.get("authenticated") and "/usr/lib/openssh/sshd-session" in result["stderr"], result
