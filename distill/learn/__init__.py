"""`distill learn`: draft or check a profile from one traced run of the app inside its source.

The one place, with `verify --run`, where distill runs the source's programs, and only because the
user asked: see distill/sandbox.py for the confinement. The profile stays the product; the run only
drafts it (`render_draft`) or checks it (`missing_from`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from distill.learn.draft import Needs, missing_from, needs_of, render_draft
from distill.learn.trace import parse_traces
from distill.materialize import materialize
from distill.refs import Ref
from distill.sandbox import Run, RunResult, confined_run
from distill.transports import Source, SourceOptions, open_source

__all__ = ["Learned", "learn", "missing_from", "render_draft"]


@dataclass
class Learned:
    source: Source
    needs: Needs
    run: RunResult


def learn(
    ref: Ref,
    options: SourceOptions,
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str = "/",
    uid: int = 0,
    gid: int = 0,
    probe: str | None = None,
    wait_ports: list[int] | None = None,
    timeout: float = 60.0,
) -> Learned:
    """Run `argv` confined inside the source under strace and sort out what it used."""
    source = open_source(ref, options)
    with tempfile.TemporaryDirectory(prefix="distill-learn-") as work:
        scratch = Path(work)
        root = source.host_root or str(materialize(source.view, scratch / "rootfs"))
        (scratch / "run").mkdir()
        result = confined_run(
            Run(root, argv, "strace", env=env, cwd=cwd, uid=uid, gid=gid, probe=probe, wait_ports=wait_ports or [], timeout=timeout),
            scratch / "run",
        )
        assert result.trace_dir is not None
        found = parse_traces(Path(result.trace_dir), str(scratch / "run" / "merged"))
    return Learned(source, needs_of(found, source.view), result)
