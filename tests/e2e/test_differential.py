"""Differential test: for every ELF under /usr/bin, /usr/sbin and /usr/lib of the fat Debian 12
rootfs, distill's closure equals what glibc's own loader prints inside that rootfs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from distill.errors import ElfError
from distill.loader import Loader
from distill.sources.rootfs import DirView

from helpers.tree import model_list, parse_ld_list, same_answer

pytestmark = pytest.mark.rootfs


def test_every_elf_resolves_as_the_real_loader_does(fat_root: Path) -> None:
    view = DirView(fat_root)
    loader = Loader(view)
    files = [node.path for top in ("/usr/bin", "/usr/sbin", "/usr/lib") for node in view.walk(top)
             if node.is_file and loader.is_elf(node.path)]
    assert len(files) > 500, "the fat rootfs should hold hundreds of ELF files"
    disagreements, compared = [], 0
    for path in files:
        try:
            closure = loader.closure(path)
        except ElfError:
            continue
        if closure.flavor is None:
            continue  # static: nothing to load
        real = subprocess.run(["chroot", str(fat_root), "/lib64/ld-linux-x86-64.so.2", "--list", path],
                              capture_output=True, text=True)
        expected = parse_ld_list(real.stdout, real.stderr)
        if not expected and real.returncode != 0:
            continue  # ld.so refuses it as a main program (e.g. a non-PIE object); nothing to compare
        compared += 1
        ours = model_list(closure)
        if not same_answer(ours, expected):
            disagreements.append(f"{path}: distill {ours} != ld.so {expected}")
    assert compared > 500
    assert not disagreements, "\n".join(disagreements[:20])
