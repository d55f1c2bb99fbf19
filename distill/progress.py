"""Per-blob progress while pulling, on a terminal only (as skopeo and podman show it), through rich.

The CLI allows the display for a run (`shown`); code that downloads only reports (`task`), and
reports go nowhere when stderr is not a terminal or the user asked for --quiet. The display, and
rich with it (about 30 ms of imports), starts with the first download, so a run that downloads
nothing (a rootfs source, an image already cached) never loads it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["shown", "task"]


class _Display:
    """One `shown` block: the rich Progress, started on first use when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Any = None  # rich.progress.Progress once started
        self.lock = threading.Lock()  # downloads may report from several threads

    def get(self) -> Any:
        with self.lock:
            if self.progress is None and self.enabled:
                from rich.console import Console
                from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

                console = Console(stderr=True, highlight=False)
                self.enabled = console.is_terminal
                if self.enabled:
                    self.progress = Progress(
                        TextColumn("{task.description}"),
                        BarColumn(),
                        DownloadColumn(),
                        TransferSpeedColumn(),
                        console=console,
                        transient=False,
                    )
                    self.progress.start()
            return self.progress

    def stop(self) -> None:
        with self.lock:
            if self.progress is not None:
                self.progress.stop()


_active: list[_Display] = []  # the display of this run's `shown` block, if any


@contextmanager
def shown(enabled: bool) -> Iterator[None]:
    """Show progress on stderr for the duration of the block, if `enabled` and stderr is a terminal."""
    display = _Display(enabled)
    _active.append(display)
    try:
        yield
    finally:
        _active.remove(display)
        display.stop()


@contextmanager
def task(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress line for one download of `total` bytes; the callback adds bytes as they arrive."""
    display = _active[-1].get() if _active else None
    if display is None:
        yield lambda count: None
        return
    task_id = display.add_task(description, total=total)
    yield lambda count: display.advance(task_id, count)
    display.update(task_id, completed=total)
