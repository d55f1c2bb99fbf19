"""Helpers the tests share: compiled ELF trees, the command-line runner, real registries, test images,
OCI layouts, container runs and app probes. Importing the package puts examples/ on the path, for the
cached fat rootfs (examples/fatroot.py) and the network-namespace HTTP helper (examples/netns_http.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "examples") not in sys.path:
    sys.path.insert(0, str(REPO / "examples"))

from fatroot import cache_dir, fat_rootfs  # noqa: E402

# `make test` (and CI, which runs it) installs every tool the tests use: there, a missing one is a failure
STRICT = os.environ.get("DISTILL_TEST_STRICT") == "1" or os.environ.get("CI") == "true"


def require(present: bool, what: str) -> None:
    """Skip a test whose tool is missing on a developer's machine; fail it under `make test`."""
    if not present:
        if STRICT:
            pytest.fail(f"{what} is missing, and `make test` installs it (DEB_PACKAGES in the Makefile)")
        pytest.skip(f"{what} is missing (`make test` installs it)")


__all__ = ["REPO", "STRICT", "cache_dir", "fat_rootfs", "require"]
