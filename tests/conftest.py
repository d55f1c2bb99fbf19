"""Shared fixtures; the helpers themselves live in the `helpers` package beside this file."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import fat_rootfs
from helpers.cli import run_distill
from helpers.tree import Tree


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path / "root")


@pytest.fixture(scope="session")
def fat_root() -> Path:
    """The fat Debian 12 rootfs of the acceptance tests (mmdebstrap, cached between runs)."""
    return fat_rootfs()


@pytest.fixture
def distill():  # type: ignore[no-untyped-def]
    return run_distill
