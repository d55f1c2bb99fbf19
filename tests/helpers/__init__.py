"""Helpers the tests share: compiled ELF trees, the command-line runner, real registries, test images,
OCI layouts, container runs and app probes. Importing the package puts examples/ on the path, for the
cached fat rootfs (examples/fatroot.py) and the network-namespace HTTP helper (examples/netns_http.py)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "examples") not in sys.path:
    sys.path.insert(0, str(REPO / "examples"))

import fatroot  # noqa: E402
from fatroot import cache_dir  # noqa: E402


@contextmanager
def untimed() -> Iterator[None]:
    """Stop the per-test time limit (tests/conftest.py) while a cached image is built: a cold build on a
    fresh machine takes minutes and says nothing about the test. The limit goes on where it stopped."""
    remaining = signal.alarm(0)
    try:
        yield
    finally:
        if remaining:
            signal.alarm(remaining)


def fat_rootfs(*args: Any, **kwargs: Any) -> Path:
    """examples/fatroot.py's cached Debian rootfs, built outside the per-test time limit."""
    with untimed():
        return fatroot.fat_rootfs(*args, **kwargs)


# `make test` (and CI, which runs it) installs every tool the tests use: there, a missing one is a failure
STRICT = os.environ.get("DISTILL_TEST_STRICT") == "1" or os.environ.get("CI") == "true"


def require(present: bool, what: str) -> None:
    """Skip a test whose tool is missing on a developer's machine; fail it under `make test`."""
    if not present:
        if STRICT:
            pytest.fail(f"{what} is missing, and `make test` installs it (DEB_PACKAGES in the Makefile)")
        pytest.skip(f"{what} is missing (`make test` installs it)")


__all__ = ["REPO", "STRICT", "cache_dir", "fat_rootfs", "require", "untimed"]
