#!/usr/bin/env python3
"""`make demo`: distill a fat Debian 12 nginx rootfs, run the result, compare with the hand-written list.

1. build (or reuse) a fat Debian 12 rootfs with mmdebstrap: nginx, ca-certificates, tzdata, curl;
2. replay the article's `cp -a --parents` list on it (build/demo/article-list);
3. `distill nginx --from rootfs:FAT --out rootfs:build/demo/nginx`;
4. start both in a private network namespace and GET / from each;
5. print a before/after table.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from article_list import copy_article_list  # noqa: E402

from fatroot import fat_rootfs  # noqa: E402


def tree_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def serve(root: Path) -> str:
    command = [sys.executable, str(HERE / "netns_http.py"), str(root), "--get", "/", "--", "/usr/sbin/nginx", "-g", "daemon off;"]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    if not result["started"]:
        if not (root / "lib64/ld-linux-x86-64.so.2").exists():
            return "does not start: its PT_INTERP /lib64/ld-linux-x86-64.so.2 was not copied"
        reason = (result["stderr"].strip().splitlines() or ["no output"])[-1]
        return f"does not start: {reason[:90]}"
    response = result["responses"]["/"]
    title = "Welcome to nginx!" if "Welcome to nginx!" in response["body"] else response["body"][:30]
    return f"GET / -> {response['status']} ({title})"


def main() -> None:
    fat = fat_rootfs()
    work = REPO / "build" / "demo"
    article, distilled = work / "article-list", work / "nginx"
    for old in (article, distilled):
        shutil.rmtree(old, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    copy_article_list(fat, article)
    print(f"$ distill nginx --from rootfs:{fat} --out rootfs:{distilled}", flush=True)
    subprocess.run([sys.executable, "-m", "distill", "nginx", "--from", f"rootfs:{fat}", "--out", f"rootfs:{distilled}"], check=True)
    rows = [("fat Debian 12 rootfs (mmdebstrap)", fat), ("article's cp -a --parents list", article), ("distill nginx", distilled)]
    sizes = [tree_size(root) for _, root in rows]  # before the servers write their logs
    outcomes = ["-", serve(article), serve(distilled)]
    print()
    print(f"{'':36} {'files':>7} {'MB':>8}  result in a private network namespace")
    for (label, _), (files, size), outcome in zip(rows, sizes, outcomes, strict=True):
        print(f"{label:36} {files:>7} {size / 1e6:>8.1f}  {outcome}")
    print(f"\nthe distilled rootfs is in {distilled}; try: distill explain nginx --from {fat}")


if __name__ == "__main__":
    main()
