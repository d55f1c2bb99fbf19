"""Fuzz the ELF reader, the section-header reader and the symbol-table reader: any bytes give an answer or an ElfError, nothing else."""

import contextlib
import io
import sys

import atheris
from harness import run

with atheris.instrument_imports(include=["distill"]):
    from distill.elf import read_elf, sections, undefined_symbols
    from distill.errors import ElfError


WANTED = frozenset({"pthread_cancel", "pthread_exit"})


def test_one_input(data: bytes) -> None:
    for read in (
        lambda: read_elf(io.BytesIO(data), "fuzz"),
        lambda: sections(io.BytesIO(data), "fuzz"),
        lambda: undefined_symbols(io.BytesIO(data), "fuzz", WANTED),
    ):
        with contextlib.suppress(ElfError):  # a clean refusal is a pass; anything else is a finding
            read()


if __name__ == "__main__":
    sys.setrecursionlimit(2000)
    run(test_one_input)
