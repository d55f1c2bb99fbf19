"""The built-in profiles on look-alikes of the official images that build the app into /usr/local on Debian 13
(examples/lookalike.py): CPython and redis built from Debian's source packages' upstream tarballs; node is
Debian's nodejs moved into /usr/local (a source build takes hours on two cores). Each is built once and cached; the first run builds CPython (minutes on two cores)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import lookalike
from helpers.cli import run_distill
from helpers.probes import run_probe

pytestmark = [pytest.mark.rootfs, pytest.mark.slow]


def distill(source: Path, profile: str, out: Path) -> dict:  # type: ignore[type-arg]
    result = run_distill(profile, "--from", str(source), "--out", f"rootfs:{out}", "--json", "-q")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert not [w for w in report["warnings"] if "nothing matched" in w]
    return report


def reasons(report: dict, path: str) -> list[str]:  # type: ignore[type-arg]
    entry = next(e for e in report["entries"] if e["path"] == path)
    return [r["detail"] for r in entry["reasons"]]


def test_python3_profile_on_a_usr_local_cpython(tmp_path: Path) -> None:
    source = lookalike.python_root()
    assert not (source / "usr/bin/python3").exists() and not (source / "var/lib/dpkg/info/libpython3.13-stdlib:amd64.list").exists()
    out = tmp_path / "python3"
    report = distill(source, "python3", out)
    why = reasons(report, "/usr/local/lib/python3.13/os.py")
    assert why == [
        "runtime.python: the standard library of Python 3.13 (/usr/local/lib/python3.13/os.py found walking up from /usr/local/bin)"
    ]
    assert (out / "usr/local/lib/libpython3.13.so.1.0").is_file()  # through DT_RUNPATH $ORIGIN/../lib
    assert not list(out.glob("usr/local/lib/python3.13/site-packages/pip*"))  # pip is not the standard library
    result = run_probe("python3", str(out), str(tmp_path / "tls"))
    assert result["exit"] == 0, result["stderr"]
    assert result["default_cas"] > 100 and result["https"] == [200, "hello over TLS\n"]
    assert result["sqlite"] == "distilled" and result["iconv_utf16"] is True
    assert result["zoneinfo"] == "2024-01-15T21:00:00+09:00"


def test_redis_profile_on_a_usr_local_redis(tmp_path: Path) -> None:
    source = lookalike.redis_root()
    assert not (source / "usr/bin/redis-server").exists() and not (source / "etc/redis").exists()
    out = tmp_path / "redis"
    distill(source, "redis", out)
    assert (out / "usr/local/bin/redis-server").is_file()
    result = run_probe("redis", str(out))
    assert result["started"], result["stderr"]
    assert (result["set"], result["get"], result["save"]) == ("+OK\r\n", "$5\r\nworks\r\n", "+OK\r\n")
    assert result["dump_written"] and result["get_after_restart"] == "$5\r\nworks\r\n"


def test_node_profile_on_a_usr_local_node(tmp_path: Path) -> None:
    source = lookalike.node_root()
    assert not (source / "usr/bin/node").exists()
    out = tmp_path / "node"
    report = distill(source, "node", out)
    assert list(out.glob("usr/local/lib/libnode.so.*"))  # found through ld.so.conf's /usr/local/lib
    # Debian's build keeps some built-in modules outside the binary; node aborts at start-up without them
    library = next(out.glob("usr/local/lib/libnode.so.*")).name
    assert reasons(report, "/usr/share/nodejs/cjs-module-lexer/lexer.js") == [
        f"runtime.node: a built-in module /usr/local/lib/{library} loads from outside itself"
    ]
    result = run_probe("node", str(out), str(tmp_path / "tls"))
    assert result["exit"] == 0, result["stderr"]
    assert result["sha256"] == hashlib.sha256(b"distill").hexdigest()
    assert result["gzip"] == "distilled" and result["tokyo"] == "21"
    assert result["https"] == [200, "hello over TLS\n"]
