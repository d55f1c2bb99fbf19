"""Test images built from real parts and cached between runs: the fat nginx rootfs packed by umoci,
and distroless-like bases extracted from Debian packages by mmdebstrap (as distroless does: no
maintainer scripts), with the generated files distroless adds."""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from helpers import cache_dir, fat_rootfs, untimed
from helpers.registry import build_image_layout

DISTROLESS_PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
DISTROLESS_GROUP = "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n"
DISTROLESS_NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nservices: files\nprotocols: files\n"


def _cached(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """Build `kind/key` once into the test cache (atomically, under a lock) and return its path."""
    home = cache_dir() / kind
    home.mkdir(parents=True, exist_ok=True)
    final = home / key
    with untimed(), open(home / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / ".complete").exists():
            return final
        shutil.rmtree(final, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=home))
        try:
            build(work)
            (work / ".complete").write_text("ok\n")
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return final


def fat_layout() -> Path:
    """An OCI layout (ref `latest`) of the fat nginx rootfs, packed by umoci."""
    root = fat_rootfs()
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return _cached("layouts", f"fat-{key}", lambda work: build_image_layout(root, work / "layout", "latest")) / "layout"


def distroless_root(suite: str, packages: tuple[str, ...]) -> Path:
    """A distroless-like rootfs: Debian packages extracted without scripts, plus generated accounts,
    nsswitch.conf, a concatenated CA bundle, /tmp 1777 and a home for nonroot."""

    def build(work: Path) -> None:
        root = work / "root"
        subprocess.run(
            ["mmdebstrap", "--variant=extract", f"--include={','.join(packages)}", suite, str(root)], check=True, capture_output=True
        )
        (root / "etc/passwd").write_text(DISTROLESS_PASSWD)
        (root / "etc/group").write_text(DISTROLESS_GROUP)
        (root / "etc/nsswitch.conf").write_text(DISTROLESS_NSSWITCH)
        bundle = b"".join(Path(p).read_bytes() for p in sorted(glob.glob(str(root / "usr/share/ca-certificates/mozilla/*.crt"))))
        (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        (root / "etc/ssl/certs/ca-certificates.crt").write_bytes(bundle)
        (root / "tmp").chmod(0o1777)
        (root / "home/nonroot").mkdir(parents=True, exist_ok=True)
        os.chown(root / "home/nonroot", 65532, 65532)

    key = hashlib.sha256(f"{suite}|{','.join(packages)}".encode()).hexdigest()[:16]
    return _cached("distroless", f"{suite}-{key}", build) / "root"


def distroless_layout(suite: str, packages: tuple[str, ...]) -> Path:
    root = distroless_root(suite, packages)
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return _cached("layouts", f"distroless-{key}", lambda work: build_image_layout(root, work / "layout", "latest")) / "layout"


DEBIAN12_BASE = ("libc6", "libssl3", "base-files", "netbase", "tzdata", "ca-certificates")
DEBIAN11_BASE = ("libc6", "libssl1.1", "base-files", "netbase", "tzdata", "ca-certificates")


DEV_PACKAGES = ("nginx", "ca-certificates", "tzdata", "python3-venv", "gcc", "libc6-dev")


def dev_layout() -> Path:
    """An OCI layout of a fat Debian 12 with nginx, Python (venv) and a C compiler: the examples' build base."""
    root = fat_rootfs(DEV_PACKAGES)
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return _cached("layouts", f"dev-{key}", lambda work: build_image_layout(root, work / "layout", "latest")) / "layout"
