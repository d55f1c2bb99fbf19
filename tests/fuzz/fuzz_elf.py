"""Fuzz the ELF reader: any bytes give an ElfInfo or an ElfError, nothing else."""

import io
import sys

import atheris
from harness import run

with atheris.instrument_imports(include=["distill", "elftools"]):
    from distill.elf import read_elf
    from distill.errors import ElfError


def test_one_input(data: bytes) -> None:
    try:
        read_elf(io.BytesIO(data), "fuzz")
    except ElfError:
        pass


if __name__ == "__main__":
    sys.setrecursionlimit(2000)
    run(test_one_input)
