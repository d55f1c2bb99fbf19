"""Differential test: for every ELF under /usr/bin, /usr/sbin and /usr/lib of the fat Debian 12
rootfs, distill's closure equals what glibc's own loader prints inside that rootfs.

Nothing is skipped quietly: a file distill cannot parse or ld.so refuses is a failure, listed by path,
and the number compared may not fall below what docs/loader.md states."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from distill.errors import ElfError
from distill.loader import Loader
from distill.transports.rootfs import DirView

from helpers import REPO
from helpers.tree import model_list, parse_ld_list, same_answer

pytestmark = pytest.mark.rootfs


def documented_count() -> int:
    """The number of files docs/loader.md says the differential test compares."""
    text = (REPO / "docs/loader.md").read_text()
    match = re.search(r"rootfs \(([\d,]+) ELF files, every one compared", text)
    assert match, "docs/loader.md no longer states how many files the differential test compares"
    return int(match.group(1).replace(",", ""))


def test_every_elf_resolves_as_the_real_loader_does(fat_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view = DirView(fat_root)
    loader = Loader(view)
    files = [
        node.path for top in ("/usr/bin", "/usr/sbin", "/usr/lib") for node in view.walk(top) if node.is_file and loader.is_elf(node.path)
    ]
    unreadable, refused, disagreements = [], [], []
    for path in files:
        try:
            closure = loader.closure(path)
        except ElfError as error:
            unreadable.append(f"{path}: {error}")
            continue
        real = subprocess.run(["chroot", str(fat_root), "/lib64/ld-linux-x86-64.so.2", "--list", path], capture_output=True, text=True)
        expected = parse_ld_list(real.stdout, real.stderr)
        if not expected and real.returncode != 0 and closure.flavor is not None:
            refused.append(f"{path}: ld.so --list exit {real.returncode}: {real.stderr.strip()[:200]}")
            continue
        ours = model_list(closure)
        if not same_answer(ours, expected):
            disagreements.append(f"{path}: distill {ours} != ld.so {expected}")
    compared = len(files) - len(unreadable) - len(refused)
    with capsys.disabled():
        print(
            f"\ndifferential: {len(files)} ELF files, {compared} compared, {len(unreadable)} unreadable by distill, "
            f"{len(refused)} refused by ld.so, {len(disagreements)} disagreements"
        )
    assert not unreadable, "distill cannot read files Debian ships:\n" + "\n".join(unreadable[:20])
    assert not refused, "ld.so refuses files distill resolves:\n" + "\n".join(refused[:20])
    assert not disagreements, "\n".join(disagreements[:20])
    assert compared >= documented_count()
