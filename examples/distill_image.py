#!/usr/bin/env python3
"""Build distill's own image (`make image`): Debian 12's python3 and CA bundle, the distill wheel and
its dependencies installed with pip, then distilled by distill itself with the built-in `distill`
profile. Writes an OCI layout and a docker-archive, cached by the wheels' and the rootfs's content:

    examples/distill_image.py [OUTDIR]      # default build/image: OUTDIR/oci (tag latest), OUTDIR/distill.tar,
                                            # OUTDIR/wheels (distill's wheel and its dependencies')
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

from fatroot import cache_dir, fat_rootfs

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("python3", "ca-certificates")
CONSOLE_SCRIPT = "#!/usr/bin/python3\nimport sys\nfrom distill.__main__ import main\nsys.exit(main())\n"
EPOCH = "1700000000"  # SOURCE_DATE_EPOCH: the same wheels give the same image digest


def wheelhouse(dest: Path) -> None:
    """The distill wheel and a wheel of every runtime dependency, for the rootfs's Python (Debian 12: 3.11)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(dest), str(REPO)], check=True)


def source_key(root: Path) -> str:
    """What the image is made of: distill's sources and packaging, and the rootfs it starts from."""
    digest = hashlib.sha256(str(root).encode())
    for path in sorted(
        [
            REPO / "pyproject.toml",
            REPO / "README.md",
            *(REPO / "distill").rglob("*.py"),
            *(REPO / "profiles").glob("*.yaml"),
            Path(__file__),
        ]
    ):
        digest.update(str(path.relative_to(REPO)).encode() + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def build(outdir: Path) -> Path:
    """OUTDIR/oci, OUTDIR/distill.tar and the wheels they hold (OUTDIR/wheels), rebuilt when a source changed."""
    root = fat_rootfs(PACKAGES)
    key = source_key(root)
    if (outdir / "key").exists() and (outdir / "key").read_text() == key:
        return outdir
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".image-", dir=outdir.parent))
    try:
        wheelhouse(staging / "wheels")
        fat = staging / "fat"
        subprocess.run(["cp", "-a", "--reflink=auto", f"{root}/.", str(fat)], check=True)
        site = fat / "usr/local/lib/python3.11/dist-packages"
        # by name, from the wheel directory: a path requirement would record that (temporary) path in direct_url.json
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-compile",
                "--find-links",
                str(staging / "wheels"),
                "--target",
                str(site),
                "distill",
            ],
            check=True,
        )
        shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts written for the host's python
        script = fat / "usr/local/bin/distill"
        script.write_text(CONSOLE_SCRIPT)
        script.chmod(0o755)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "distill",
                "distill",
                "--from",
                str(fat),
                "-q",
                "--out",
                f"oci:{staging}/oci:latest",
                "--out",
                f"docker-archive:{staging}/distill.tar:distill:latest",
            ],
            check=True,
            env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH},
        )
        shutil.rmtree(fat)
        (staging / "key").write_text(key)
        shutil.rmtree(outdir, ignore_errors=True)
        os.rename(staging, outdir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return outdir


def image_size(outdir: Path) -> int:
    """Bytes of the docker-archive (the compressed layer, config and manifest)."""
    return (outdir / "distill.tar").stat().st_size


def cached_image() -> Path:
    """The image under the test cache (shared by the tests), under a lock: tests may run in parallel."""
    home = cache_dir()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "distill-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build(home / "distill-image")


if __name__ == "__main__":
    out = build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "image")
    print(f"{out}/oci:latest and docker-archive:{out}/distill.tar ({image_size(out) / 1e6:.1f} MB)")
