"""Scenario `size`: for every built-in app profile with a probe, the bytes distill ships over the bytes of
the files the app opens or executes while its probe runs on the fat root (strace_probe.py).

Both sides come from the same fat Debian 12 roots the tests use (tests/e2e/test_apps.py): the apps root for
most, ruby's and node's own roots for those two. Shipped bytes are the regular files of
`distill APP --from rootfs:FAT --out rootfs:OUT`; touched bytes are the distinct regular files of FAT
the app used. The difference is named from the plan: every shipped file the app did not touch is grouped
by the first reason `--json` gives for it (a profile rule, a closure, a runtime collector, a system file),
and every file the app touched that did not ship is listed too (the app tolerated its absence, or found
it elsewhere). Target (issue 13): <= 1.10 for nginx and redis.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from common import REPO, distill, tree_bytes
from strace_probe import resolve_in, traced_probe

from fatroot import fat_rootfs

# the roots of tests/e2e/test_apps.py (Debian 12), so no new download is needed for them
APP_PACKAGES = ("nginx", "redis-server", "postgresql", "python3", "curl", "openssl", "ca-certificates", "tzdata", "locales")
RUBY_PACKAGES = ("ruby", "ca-certificates")
NODE_PACKAGES = ("nodejs", "ca-certificates", "tzdata")


def _ok(result: dict[str, Any], key: str, value: object) -> bool:
    return result.get(key) == value


# profile -> (fat root packages, probe arguments after the root, did the probe pass)
PROBES: dict[str, tuple[tuple[str, ...], list[str], Any]] = {
    "nginx": (APP_PACKAGES, ["@scratch"], lambda r: r.get("started") and r.get("http") == 200 and r.get("https") == 200),
    "redis": (APP_PACKAGES, [], lambda r: _ok(r, "get_after_restart", "$5\r\nworks\r\n")),
    "postgresql": (APP_PACKAGES, [], lambda r: _ok(r, "psql", 0) and len(r.get("rows", [])) == 7),
    "python3": (APP_PACKAGES, ["@scratch"], lambda r: _ok(r, "exit", 0) and r.get("https", [0])[0] == 200),
    "perl": (APP_PACKAGES, [], lambda r: _ok(r, "exit", 0)),
    "curl": (APP_PACKAGES, ["@root2", "@scratch"], lambda r: (r.get("curl") or [1])[0] == 0),
    "openssl": (APP_PACKAGES, ["@scratch"], lambda r: (r.get("s_client") or [1])[0] == 0 and (r.get("md4") or [1])[0] == 0),
    "ruby": (RUBY_PACKAGES, [], lambda r: _ok(r, "exit", 0)),
    "node": (NODE_PACKAGES, ["@scratch"], lambda r: _ok(r, "exit", 0) and r.get("https", [0])[0] == 200),
}
# what systemd-tmpfiles makes at boot that a probe needs (tmpfiles.d/postgresql.conf: the socket directory)
RUN_DIRS = {"postgresql": {"/run/postgresql": "postgres"}}
GUARDED = ("nginx", "redis")  # the profiles with a target, whose ratios join the regression guard
TARGET = 1.10


def app_profiles() -> set[str]:
    """Built-in profiles that describe an app (they set an image entrypoint), as tests/e2e/test_apps.py counts them."""
    found = set()
    for path in (REPO / "profiles").glob("*.yaml"):
        if "entrypoint" in (yaml.safe_load(path.read_text()).get("image") or {}):
            found.add(path.stem)
    return found


_PYC = re.compile(r"^(?P<dir>.*)/__pycache__/(?P<name>[^/.]+)\.cpython-\d+(?:\.opt-\d)?\.pyc$")


def source_of(fat: Path, path: str) -> str:
    """A byte-code cache Python read stands for the module source beside it: distill ships sources and no
    `__pycache__` (Python compiles in memory), and with a valid cache Python only stats the source."""
    match = _PYC.match(path)
    if match:
        source = f"{match['dir']}/{match['name']}.py"
        if (fat / source.lstrip("/")).is_file():
            return source
    return path


def label(reason: dict[str, Any]) -> str:
    """A group for a shipped file's first reason: the rule, without the file it matched."""
    kind, detail = reason.get("kind", "?"), str(reason.get("detail", ""))
    if kind == "needed":
        return "ELF closure (DT_NEEDED)"
    if kind == "profile":
        return detail
    return f"{kind}: {re.split(r'[:(]', detail, maxsplit=1)[0].strip()}" if detail else kind


def measure(name: str) -> dict[str, Any]:
    packages, extra, passed = PROBES[name]
    fat = fat_rootfs(packages)
    traced = traced_probe(name, fat, ["@root", *extra], RUN_DIRS.get(name))
    used = {source_of(fat, path) for path in traced.files}
    touched = {path: (fat / path.lstrip("/")).stat().st_size for path in used}
    with tempfile.TemporaryDirectory(prefix="distill-bench-size-") as work:
        out = Path(work) / "out"
        done = subprocess.run(
            distill(name, "--from", f"rootfs:{fat}", "--out", f"rootfs:{out}", "--json", "-q"), capture_output=True, text=True, check=True
        )
        report = json.loads(done.stdout)
        shipped_bytes = tree_bytes(out)
    shipped: dict[str, tuple[int, str]] = {}  # real path in the fat root (or the output path) -> size, group
    for entry in report["entries"]:
        if entry["type"] == "file":
            real = resolve_in(fat, entry["path"]) or entry["path"]
            shipped[real] = (entry["size"], label(entry["reasons"][0]) if entry["reasons"] else "?")
    untouched: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for path, (size, group) in shipped.items():
        if path not in touched:
            untouched[group].append((size, path))
    groups = [
        {
            "reason": group,
            "files": len(files),
            "bytes": sum(s for s, _ in files),
            "largest": [p for _, p in sorted(files, reverse=True)[:3]],
        }
        for group, files in untouched.items()
    ]
    groups.sort(key=lambda g: -g["bytes"])
    missing = sorted(((size, path) for path, size in touched.items() if path not in shipped), reverse=True)
    touched_bytes = sum(touched.values())
    return {
        "profile": name,
        "fat_root": str(fat),
        "probe_passed_on_fat": bool(passed(traced.result)),
        "processes_in_root": traced.processes,
        "touched_files": len(touched),
        "touched_bytes": touched_bytes,
        "shipped_files": report["summary"]["output_files"],
        "shipped_bytes": shipped_bytes,
        "ratio": round(shipped_bytes / touched_bytes, 3) if touched_bytes else None,
        "shipped_untouched_bytes": sum(g["bytes"] for g in groups),
        "untouched_by_reason": groups,
        "touched_not_shipped": [{"path": p, "bytes": s} for s, p in missing],
    }


def run(only: list[str] | None = None) -> dict[str, object]:
    apps = app_profiles()
    without = sorted(apps - set(PROBES))
    rows = [measure(name) for name in PROBES if not only or name in only]
    return {
        "scenario": "size",
        "target": f"<= {TARGET} for {', '.join(GUARDED)}",
        "profiles_without_probe": without,  # distill: its image is probed by tests/e2e/test_containerfiles.py, not probes.py
        "rows": rows,
    }


def ratios(result: dict[str, object]) -> dict[str, float]:
    rows = {row["profile"]: row for row in result["rows"]}  # type: ignore[attr-defined]
    # a probe that failed on the fat root touched less than the app needs: its ratio means nothing
    return {f"size {name}": float(rows[name]["ratio"]) for name in GUARDED if name in rows and rows[name]["probe_passed_on_fat"]}


def show(result: dict[str, object]) -> None:
    print("\nsize: shipped bytes / bytes the app opened or executed during its probe, on the fat root")
    print(f"  {'profile':11} {'probe':5} {'touched':>8} {'MB':>7} {'shipped':>8} {'MB':>7} {'ratio':>6}  largest untouched groups (MB)")
    for row in result["rows"]:  # type: ignore[attr-defined]
        top = "; ".join(f"{g['reason']} {g['bytes'] / 1e6:.1f}" for g in row["untouched_by_reason"][:3])
        print(
            f"  {row['profile']:11} {'ok' if row['probe_passed_on_fat'] else 'FAIL':5} {row['touched_files']:8} "
            f"{row['touched_bytes'] / 1e6:7.2f} {row['shipped_files']:8} {row['shipped_bytes'] / 1e6:7.2f} {row['ratio']:6.2f}x  {top}"
        )
    for row in result["rows"]:  # type: ignore[attr-defined]
        gone = row["touched_not_shipped"]
        if gone:
            listed = ", ".join(f"{g['path']} ({g['bytes'] / 1e3:.0f} kB)" for g in gone[:6])
            print(f"  {row['profile']}: touched, not shipped: {len(gone)} files, {sum(g['bytes'] for g in gone) / 1e6:.2f} MB: {listed}")
    failed = [row["profile"] for row in result["rows"] if not row["probe_passed_on_fat"]]  # type: ignore[attr-defined]
    if failed:
        print(f"  PROBE FAILED on the fat root, so its touched files are incomplete and its ratio is not guarded: {', '.join(failed)}")
    if result["profiles_without_probe"]:
        print(f"  app profiles without a probe in tests/helpers/probes.py: {', '.join(result['profiles_without_probe'])}")  # type: ignore[arg-type]
