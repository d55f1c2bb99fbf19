"""The atheris harnesses run in every `make test` for a fixed number of inputs (`make fuzz` runs longer)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO

RUNS = 4000


@pytest.mark.parametrize("harness", ["elf", "layer", "reference", "profile", "auth"])
def test_fuzz_harness_finds_no_crash(harness: str) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tests/fuzz/run.py"), "--runs", str(RUNS), "--only", harness],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout[: result.stdout.rindex("]") + 1])
    assert report[0]["executions"] == RUNS, result.stderr[-2000:]
    assert not report[0]["crashed"], report[0]["tail"]
