"""Per-blob progress while pulling, on a terminal only (as skopeo and podman show it), through rich.

The CLI turns the display on for a run (`shown`); code that downloads only reports (`task`), and
reports go nowhere when stderr is not a terminal or the user asked for --quiet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["shown", "task"]

_active: list[Any] = []  # the started rich.progress.Progress of this run, if any


@contextmanager
def shown(enabled: bool) -> Iterator[None]:
    """Show progress on stderr for the duration of the block, if `enabled` and stderr is a terminal."""
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        yield
        return
    display = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console, transient=False
    )
    display.start()
    _active.append(display)
    try:
        yield
    finally:
        _active.remove(display)
        display.stop()


@contextmanager
def task(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress line for one download of `total` bytes; the callback adds bytes as they arrive."""
    display = _active[-1] if _active else None
    if display is None:
        yield lambda count: None
        return
    task_id = display.add_task(description, total=total)
    yield lambda count: display.advance(task_id, count)
    display.update(task_id, completed=total)
