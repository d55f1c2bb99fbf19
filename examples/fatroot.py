#!/usr/bin/env python3
"""Build (once) and cache a fat Debian 12 root filesystem with mmdebstrap; print its path.

The cache is keyed by suite, variant, architecture and package list, lives under
$DISTILL_TEST_CACHE (default ~/.cache/distill-test), and is built in a temporary directory
renamed into place, under a lock, so an interrupted build never leaves a half rootfs.
Used by `make demo`, the tests and the benchmarks.

    examples/fatroot.py nginx,ca-certificates,tzdata,curl
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = "bookworm"
VARIANT = "apt"
DEFAULT_PACKAGES = ("nginx", "ca-certificates", "tzdata", "curl")


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_TEST_CACHE", Path.home() / ".cache" / "distill-test"))


def fat_rootfs(packages: tuple[str, ...] = DEFAULT_PACKAGES, *, arch: str = "amd64") -> Path:
    """The path of a cached rootfs with `packages` installed, building it if needed."""
    key = hashlib.sha256(f"{SUITE}|{VARIANT}|{arch}|{','.join(sorted(packages))}".encode()).hexdigest()[:16]
    home = cache_dir() / "rootfs"
    home.mkdir(parents=True, exist_ok=True)
    final = home / key
    with open(home / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "root" / "etc" / "os-release").exists():
            return final / "root"
        shutil.rmtree(final, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=home))
        try:
            command = ["mmdebstrap", f"--variant={VARIANT}", f"--architectures={arch}",
                       f"--include={','.join(packages)}", SUITE, str(work / "root")]
            print(f"building fat rootfs: {' '.join(command)}", file=sys.stderr)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            (work / "packages").write_text("\n".join(packages) + "\n")
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return final / "root"


if __name__ == "__main__":
    wanted = tuple(sys.argv[1].split(",")) if len(sys.argv) > 1 else DEFAULT_PACKAGES
    print(fat_rootfs(wanted))
