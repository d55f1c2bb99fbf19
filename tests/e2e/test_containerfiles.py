"""The example Containerfiles, built by a real builder (buildah, vfs storage, chroot isolation) from
bases served by the tests' own registry, and each image run under runc until its app answers.

Also distill's own image (`make image`): distilled by distill, pushed to that registry, used as a
build stage by two of the examples, and checked by `distill verify`.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distill_image import cached_image, image_size

from helpers import REPO, cache_dir
from helpers.cli import run_distill
from helpers.containers import run_bundle_http, unpack_bundle
from helpers.images import dev_layout, fat_layout
from helpers.registry import Registry, skopeo_copy

pytestmark = [pytest.mark.rootfs, pytest.mark.slow]

EXAMPLES = REPO / "examples/containerfiles"
# example -> (port its app listens on, text its answer must hold)
APPS = {
    "build-stage": (80, "Welcome to nginx!"),
    "pip-in-fat": (80, "Welcome to nginx!"),
    "own-profile": (8080, "hello from a distilled image"),
}


@pytest.fixture(scope="module")
def distill_image() -> Path:
    return cached_image()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, distill_image: Path):  # type: ignore[no-untyped-def]
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        started = time.monotonic()
        skopeo_copy(f"oci:{fat_layout()}:latest", reg.ref("fat-nginx:latest"))
        skopeo_copy(f"oci:{dev_layout()}:latest", reg.ref("fat-dev:latest"))
        skopeo_copy(f"oci:{distill_image}/oci:latest", reg.ref("distill:latest"))
        print(f"bases pushed in {time.monotonic() - started:.0f} s", file=sys.stderr)
        yield reg


@pytest.fixture(scope="module")
def built(registry: Registry, distill_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[int, str, Path]]]:
    """Every example built at once (buildah runs them in parallel on one storage); name -> (exit, log, layout).

    The vfs storage lives in the test cache, so base layers pulled once stay (vfs keeps a full copy of
    every layer: removing gigabytes costs as much as building); what the previous run built is pruned
    first, and a lock keeps two test sessions off it at once."""
    work = tmp_path_factory.mktemp("buildah")
    home = cache_dir() / "buildah"
    home.mkdir(parents=True, exist_ok=True)
    lock = open(home / "lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    storage = ["buildah", "--root", str(home / "root"), "--runroot", str(home / "run"), "--storage-driver", "vfs"]
    started = time.monotonic()
    subprocess.run([*storage, "rm", "--all"], check=True, capture_output=True)
    subprocess.run([*storage, "rmi", "--prune"], check=True, capture_output=True)
    print(f"buildah storage pruned in {time.monotonic() - started:.0f} s", file=sys.stderr)
    running = {}
    for name in APPS:
        context = work / f"context-{name}"
        subprocess.run(["cp", "-a", str(EXAMPLES / name), str(context)], check=True)
        if name == "pip-in-fat":
            shutil.copytree(distill_image / "wheels", context / "wheels")
        log = open(work / f"{name}.log", "w+")
        running[name] = (
            subprocess.Popen(
                [
                    *storage,
                    "bud",
                    "--isolation",
                    "chroot",
                    "--tls-verify=false",
                    "--build-arg",
                    f"REGISTRY={registry.host}",
                    "-t",
                    f"example-{name}",
                    "-f",
                    str(context / "Containerfile"),
                    str(context),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            ),
            log,
        )
    started = time.monotonic()
    results = {}
    for name, (process, log) in running.items():
        code = process.wait(timeout=1200)
        log.seek(0)
        text = log.read()[-4000:]
        log.close()
        layout = work / f"layout-{name}"
        if code == 0:
            subprocess.run([*storage, "push", "-q", f"localhost/example-{name}", f"oci:{layout}:latest"], check=True, capture_output=True)
        results[name] = (code, text, layout)
    print(f"buildah built {len(APPS)} examples in {time.monotonic() - started:.0f} s", file=sys.stderr)
    try:
        yield results
    finally:
        lock.close()


@pytest.mark.parametrize("name", list(APPS))
def test_example_containerfile_builds_and_its_image_answers(name: str, built: dict[str, tuple[int, str, Path]], tmp_path: Path) -> None:
    code, log, layout = built[name]
    assert code == 0, log
    port, text = APPS[name]
    unpack_bundle(f"{layout}:latest", tmp_path / "bundle")
    result = run_bundle_http(tmp_path / "bundle", "/", port=port)
    assert result["started"], result
    assert result["responses"]["/"]["status"] == 200
    assert text in result["responses"]["/"]["body"]
    if name == "build-stage":  # verify --run on the same image: runc, its exposed port, a probe from outside
        verified = run_distill("verify", f"oci:{layout}:latest", "--run", "curl -sf http://127.0.0.1/ | grep -q 'Welcome to nginx'")
        assert verified.code == 0, verified.stderr
        assert "probe passed" in verified.stderr


def test_distill_image_is_small_verified_and_pushed(distill_image: Path, registry: Registry) -> None:
    size = image_size(distill_image)
    print(f"distill image: {size / 1e6:.1f} MB (docker-archive)", file=sys.stderr)
    assert size < 40_000_000
    result = run_distill("verify", f"oci:{distill_image}/oci:latest")
    assert result.code == 0, result.stderr
    pulled = run_distill("verify", f"docker://{registry.host}/distill:latest", "--tls-verify=false")
    assert pulled.code == 0, pulled.stderr
    assert "ELF files load" in pulled.stderr
