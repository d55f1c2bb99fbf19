"""Sinks write a checked plan to the filesystem transports (`rootfs:`, `layer:`), atomically.

Every destination is validated before any sink writes (exists and not empty without
--force, inside the source, parent not writable), so a refused run leaves nothing behind
(see `staging`). Image transports are written by `sinks.image` from the built image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from distill.plan import Plan
from distill.refs import Ref
from distill.view import View

__all__ = ["Sink", "open_sink"]


class Sink(Protocol):
    """Writes one plan to one destination."""

    ref: Ref

    def write(self, plan: Plan, source: View) -> str:
        """Write the plan; return a one-line summary of what was written."""


def open_sink(ref: Ref) -> Sink:
    """The sink for a parsed `--out` reference."""
    from distill.sinks.layer import LayerSink
    from distill.sinks.rootfs import RootfsSink

    sinks: dict[str, Callable[[Ref], Sink]] = {"rootfs": RootfsSink, "layer": LayerSink}
    return sinks[ref.transport](ref)
