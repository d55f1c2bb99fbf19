"""The `distill` command and `python -m distill`: `--version` answered before click is loaded, else the CLI.

Start-up is paid on every CI build that runs distill; importing click alone costs more than the whole
`--version` answer (docs/performance.md), so that answer, byte for byte what click's `version_option`
prints, comes first. For the same reason a finished run leaves without tearing the interpreter down
(freeing every module and object took 12-18 ms of a 160 ms run), once its output is flushed, its
atexit work done and no other thread, tracer or profiler is alive; anything unusual takes the ordinary exit.
"""

from __future__ import annotations

import atexit
import os
import sys

from distill import __version__

__all__ = ["main"]


def main() -> None:
    """Entry point: `distill --version` here, everything else in `distill.cli.main`."""
    if sys.argv[1:] == ["--version"] and sys.stdout is not None:
        try:
            sys.stdout.write(f"distill, version {__version__}\n")
            sys.stdout.flush()
        except OSError:
            pass  # a full disk or a closed pipe: the CLI reports it as it always has
        else:
            sys.exit(0)
    from distill.cli import main as cli_main

    try:
        cli_main()
    except SystemExit as done:
        if isinstance(done.code, int) or done.code is None:
            _leave(done.code or 0)
        raise
    _leave(0)


def _leave(code: int) -> None:
    """End the process now with `code` when that loses nothing; else return to the ordinary exit."""
    import threading  # already loaded by the CLI

    if threading.active_count() > 1:
        return  # the interpreter's exit would join it
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return  # coverage or cProfile writes its data after this returns
    if sys.stdout is None or sys.stderr is None:
        return  # started with a stream closed (`>&-`): the ordinary exit copes with that
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()  # finalizers of temporary directories, coverage's data: what an exit runs
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # a closed or broken stream: the ordinary exit reports it as it always has
    os._exit(code)


if __name__ == "__main__":
    main()
