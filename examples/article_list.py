#!/usr/bin/env python3
"""The article's hand-written `cp -a --parents` stage (see ../shared/seed-summary.md), replayed.

Copies the same list from a fat rootfs into OUT, the way its Dockerfile RUN line does, except
that a path missing from this rootfs is skipped instead of failing the build. It exists to
compare against: on Debian 12 it copies libraries nginx never loads and misses /run.

    examples/article_list.py FAT OUT
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from distill.transports.rootfs import DirView

TRIPLET = "x86_64-linux-gnu"
# (pattern, dereference) in the article's order; `cp -aL` for /var/run
ARTICLE_LIST = [
    ("/usr/lib/nginx", False),
    ("/usr/share/nginx", False),
    ("/var/log/nginx", False),
    ("/var/run", True),
    ("/etc/nginx", False),
    ("/etc/passwd", False),
    ("/etc/group", False),
    ("/usr/sbin/nginx", False),
    ("/usr/sbin/nginx-debug", False),
    (f"/lib/{TRIPLET}/ld-*", False),
    (f"/usr/lib/{TRIPLET}/libpcre*", False),
    (f"/lib/{TRIPLET}/libz.so.*", False),
    (f"/lib/{TRIPLET}/libc*", False),
    (f"/lib/{TRIPLET}/libdl*", False),
    (f"/lib/{TRIPLET}/libpthread*", False),
    (f"/lib/{TRIPLET}/libcrypt*", False),
    (f"/usr/lib/{TRIPLET}/libssl.so.*", False),
    (f"/usr/lib/{TRIPLET}/libcrypto.so.*", False),
]


def copy_article_list(fat: Path, out: Path, time_zone: str = "UTC") -> list[str]:
    """Replay the list into `out`; return the patterns that matched nothing in `fat`.

    In its Docker build stage the list runs inside the image; replayed on a host, an absolute link
    such as `/var/run -> /run` would lead `cp -L` to the *host's* /run, so dereferenced entries are
    resolved inside the rootfs (with distill's root-confined view) first.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "var/cache/nginx").mkdir(parents=True, exist_ok=True)
    view = DirView(fat)
    skipped = []
    for pattern, dereference in ARTICLE_LIST:
        matches = sorted(glob.glob(str(fat) + pattern))
        if not matches:
            skipped.append(pattern)
            continue
        relative = [os.path.relpath(m, fat) for m in matches]
        if dereference:
            for name in relative:
                target = out / name
                target.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-a", f"{fat}{view.resolve('/' + name).path}/.", str(target)], check=True)
            continue
        subprocess.run(["cp", "-a", "--parents", *relative, str(out)], cwd=fat, check=True)
    zone = fat / "usr/share/zoneinfo" / time_zone
    (out / "etc").mkdir(exist_ok=True)
    subprocess.run(["cp", "-L", str(zone), str(out / "etc/localtime")], check=True)
    return skipped


if __name__ == "__main__":
    missing = copy_article_list(Path(sys.argv[1]), Path(sys.argv[2]))
    print("skipped (not in this rootfs):", " ".join(missing) or "nothing")
