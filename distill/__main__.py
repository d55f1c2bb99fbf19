"""The `distill` command and `python -m distill`: `--version` answered before click is loaded, else the CLI.

Start-up is paid on every CI build that runs distill; importing click alone costs more than the whole
`--version` answer (docs/performance.md), so that answer, byte for byte what click's `version_option`
prints, comes first.
"""

from __future__ import annotations

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

    cli_main()


if __name__ == "__main__":
    main()
