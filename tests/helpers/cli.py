"""The `distill` command line run in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_distill(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """Run the real command line in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "distill", *args], capture_output=True, text=True, env=full_env, cwd=cwd)
    return Result(proc.returncode, proc.stdout, proc.stderr)
