"""Shared fixtures, and two guards every test runs under: a per-test time limit (so a hang fails the
test instead of stalling the suite) and a shuffled order (so no test leans on an earlier one).

The helpers themselves live in the `helpers` package beside this file."""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from helpers import fat_rootfs
from helpers.cli import run_distill
from helpers.tree import Tree

# Generous: the slowest test takes about 40 s warm on 2 cores. Only the test's own call is limited, not
# its fixtures, and cached image builds pause the clock (helpers.untimed): a cold build takes minutes.
# `@pytest.mark.timeout(N)` sets another limit for one test.
DEFAULT_TIMEOUT = int(os.environ.get("DISTILL_TEST_TIMEOUT", "300"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shuffle",
        default=os.environ.get("DISTILL_TEST_SHUFFLE", "no"),
        metavar="SEED|random|no",
        help="run modules, and the tests within each module, in a shuffled order "
        "(a seed reproduces an order; default: $DISTILL_TEST_SHUFFLE or no)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # pytest removes old temporary directories recursively, one frame per level; the hostile corpora
    # leave trees deeper than Python's default limit of 1000 frames
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    config.addinivalue_line("markers", f"timeout(seconds): this test's own time limit (default {DEFAULT_TIMEOUT} s, $DISTILL_TEST_TIMEOUT)")
    choice = config.getoption("--shuffle")
    config.stash[_SEED] = None if choice == "no" else random.randrange(1, 10**6) if choice == "random" else int(choice)


_SEED = pytest.StashKey[int | None]()


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.stash[_SEED]
    return "order: as written" if seed is None else f"order: shuffled, reproduce with --shuffle={seed}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Shuffle the modules, then the tests inside each module (kept together, so a module's fixtures are
    built once, as pytest-randomly does)."""
    seed = config.stash[_SEED]
    if seed is None:
        return
    rng = random.Random(seed)
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = list(modules.values())
    rng.shuffle(order)
    for group in order:
        rng.shuffle(group)
    items[:] = [item for group in order for item in group]


class TimeLimitExceeded(Exception):
    """Raised in the test's own thread when its time limit passes."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """SIGALRM bounds the test body: it interrupts a blocking wait (a subprocess, a socket), and
    subprocess.run kills its child on the way out. No plugin needed for a single-threaded runner."""
    marker = item.get_closest_marker("timeout")
    limit = int(marker.args[0]) if marker else DEFAULT_TIMEOUT

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeLimitExceeded(f"{item.nodeid} ran longer than {limit} s (a hang?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(limit)
    try:
        return (yield)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


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
