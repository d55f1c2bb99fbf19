"""Helpers the tests share: compiled ELF trees, the command-line runner, real registries, test images,
OCI layouts, container runs and app probes. Importing the package puts examples/ on the path, for the
cached fat rootfs (examples/fatroot.py) and the network-namespace HTTP helper (examples/netns_http.py)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "examples") not in sys.path:
    sys.path.insert(0, str(REPO / "examples"))

from fatroot import cache_dir, fat_rootfs  # noqa: E402

__all__ = ["REPO", "cache_dir", "fat_rootfs"]
