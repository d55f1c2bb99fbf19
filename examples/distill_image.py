#!/usr/bin/env python3
"""Build distill's own image (`make image`): Debian 12's python3 and CA bundle, the distill wheel and
its dependencies installed with pip, then distilled by distill itself with the built-in `distill`
profile. Writes an OCI layout and a docker-archive, cached by the wheels' and the rootfs's content:

    examples/distill_image.py [OUTDIR]      # default build/image: OUTDIR/oci (tag latest), OUTDIR/distill.tar
"""

from __future__ import annotations

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
CONSOLE_SCRIPT = "#!/usr/bin/python3\nimport sys\nfrom distill.cli import main\nsys.exit(main())\n"
EPOCH = "1700000000"  # SOURCE_DATE_EPOCH: the same wheels give the same image digest


def wheelhouse(dest: Path) -> list[Path]:
    """The distill wheel and a wheel of every runtime dependency, for the rootfs's Python (Debian 12: 3.11)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(dest), str(REPO)], check=True)
    return sorted(dest.glob("*.whl"))


def build(outdir: Path) -> Path:
    """OUTDIR/oci and OUTDIR/distill.tar, rebuilt only when the wheels or the rootfs changed."""
    root = fat_rootfs(PACKAGES)
    with tempfile.TemporaryDirectory(prefix="distill-image-") as work:
        wheels = wheelhouse(Path(work) / "wheels")
        digest = hashlib.sha256(str(root).encode())
        for wheel in wheels:
            digest.update(wheel.name.encode() + hashlib.sha256(wheel.read_bytes()).digest())
        key = digest.hexdigest()[:16]
        if (outdir / "key").exists() and (outdir / "key").read_text() == key:
            return outdir
        fat = Path(work) / "fat"
        subprocess.run(["cp", "-a", "--reflink=auto", f"{root}/.", str(fat)], check=True)
        site = fat / "usr/local/lib/python3.11/dist-packages"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-compile", "--no-deps",
                        "--target", str(site), *map(str, wheels)], check=True)
        shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts written for the host's python
        script = fat / "usr/local/bin/distill"
        script.write_text(CONSOLE_SCRIPT)
        script.chmod(0o755)
        staging = Path(tempfile.mkdtemp(prefix=".image-", dir=outdir.parent if outdir.parent.exists() else None))
        try:
            subprocess.run([sys.executable, "-m", "distill", "distill", "--from", str(fat), "-q",
                            "--out", f"oci:{staging}/oci:latest", "--out", f"docker-archive:{staging}/distill.tar:distill:latest"],
                           check=True, env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH})
            (staging / "key").write_text(key)
            shutil.rmtree(outdir, ignore_errors=True)
            outdir.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, outdir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return outdir


def image_size(outdir: Path) -> int:
    """Bytes of the docker-archive (the compressed layer, config and manifest)."""
    return (outdir / "distill.tar").stat().st_size


def cached_image() -> Path:
    """The image under the test cache (shared by the tests)."""
    return build(cache_dir() / "distill-image")


if __name__ == "__main__":
    out = build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "image")
    print(f"{out}/oci:latest and docker-archive:{out}/distill.tar ({image_size(out) / 1e6:.1f} MB)")
