#!/usr/bin/env python3
"""Build (once) and cache a fat Debian root filesystem with mmdebstrap; print its path.

The cache is keyed by suite, variant, architecture and package list, lives under
$DISTILL_TEST_CACHE (default ~/.cache/distill-test), and is built in a temporary directory
renamed into place, under a lock, so an interrupted build never leaves a half rootfs.
Used by `make demo`, the tests and the benchmarks.

`variant="extract"` unpacks the packages and their dependencies without running any maintainer
script, so it needs no emulation and builds a root for any Debian architecture on this machine
(`arch="arm64"`). The only thing a maintainer script would have done that programs need at run
time is base-passwd's accounts, so /etc/passwd and /etc/group are copied from its master files
when base-passwd is among the packages. These roots come from the release alone (no -security or
-updates suites), so they stay the same from one day to the next on every architecture.

    examples/fatroot.py nginx,ca-certificates,tzdata,curl
    examples/fatroot.py nginx,jq,base-passwd arm64 extract
    examples/fatroot.py nginx,ca-certificates amd64 apt trixie
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
SUITES = ("bookworm", "trixie")  # Debian 12 and Debian 13, the releases the tests cover
VARIANT = "apt"
DEFAULT_PACKAGES = ("nginx", "ca-certificates", "tzdata", "curl")
MIRROR = "http://deb.debian.org/debian"


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_TEST_CACHE", Path.home() / ".cache" / "distill-test"))


# what base-passwd's postinst does, for roots whose maintainer scripts never ran
_ACCOUNTS_HOOK = (
    'if [ -f "$1/usr/share/base-passwd/passwd.master" ]; then '
    'cp "$1/usr/share/base-passwd/passwd.master" "$1/etc/passwd"; '
    'cp "$1/usr/share/base-passwd/group.master" "$1/etc/group"; fi'
)


def fat_rootfs(
    packages: tuple[str, ...] = DEFAULT_PACKAGES,
    *,
    arch: str = "amd64",
    variant: str = VARIANT,
    suite: str = SUITE,
    hooks: tuple[str, ...] = (),
) -> Path:
    """The path of a cached rootfs of `suite` with `packages` installed (or, with variant "extract", unpacked).

    `hooks` are mmdebstrap customize hooks (shell, "$1" is the root); they are part of the key. A root
    without hooks keeps the key it always had, so caches built before suites existed stay valid."""
    release_only = "|release-only" if variant == "extract" else ""  # keeps the keys of existing roots
    text = f"{suite}|{variant}|{arch}|{','.join(sorted(packages))}{release_only}"
    if hooks:
        text += "|" + "\0".join(hooks)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    home = cache_dir() / "rootfs"
    home.mkdir(parents=True, exist_ok=True)
    final = home / key
    with open(home / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "packages").exists():  # written last, before the rename
            return final / "root"
        shutil.rmtree(final, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=home))
        try:
            command = [
                "mmdebstrap",
                f"--variant={variant}",
                f"--architectures={arch}",
                f"--include={','.join(packages)}",
                *(f"--customize-hook={hook}" for hook in hooks),
                suite,
                str(work / "root"),
            ]
            if variant == "extract":
                command[1:1] = ["--mode=root", f"--extract-hook={_ACCOUNTS_HOOK}"]
                command.append(f"deb {MIRROR} {suite} main")
            print(f"building fat rootfs: {' '.join(command)}", file=sys.stderr)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            (work / "packages").write_text(("" if suite == SUITE else f"# {suite}\n") + "\n".join(packages) + "\n")
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return final / "root"


if __name__ == "__main__":
    wanted = tuple(sys.argv[1].split(",")) if len(sys.argv) > 1 else DEFAULT_PACKAGES
    print(
        fat_rootfs(
            wanted,
            arch=sys.argv[2] if len(sys.argv) > 2 else "amd64",
            variant=sys.argv[3] if len(sys.argv) > 3 else VARIANT,
            suite=sys.argv[4] if len(sys.argv) > 4 else SUITE,
        )
    )
