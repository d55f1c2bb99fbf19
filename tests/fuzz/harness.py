"""Shared set-up of the atheris harnesses: instrument distill, run TestOneInput, report counts.

Each harness allows only the exceptions its code promises for bad input (ElfError, SourceError,
ReferenceError, ValueError, ...); anything else is a crash, and atheris stops with the input that
caused it. `make test` runs each harness for a fixed number of inputs; `make fuzz` for longer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris


def run(test_one_input: Callable[[bytes], None]) -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
