"""Acceptance for images: registries, layouts, archives and a daemon, against real peers
(docker-registry, skopeo, umoci, runc, podman) started and driven by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cli import run_distill
from helpers.containers import run_bundle_http, unpack_bundle
from helpers.daemon import write_docker25_archive
from helpers.images import DEBIAN11_BASE, DEBIAN12_BASE, distroless_layout, fat_layout
from helpers.registry import Registry, skopeo_copy, skopeo_inspect

pytestmark = [pytest.mark.rootfs, pytest.mark.slow]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An anonymous registry holding the fat nginx image and two distroless-like bases."""
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        skopeo_copy(f"oci:{fat_layout()}:latest", reg.ref("library/nginx:latest"))
        skopeo_copy(f"oci:{distroless_layout('bookworm', DEBIAN12_BASE)}:latest", reg.ref("distroless/base-debian12:latest"))
        skopeo_copy(f"oci:{distroless_layout('bullseye', DEBIAN11_BASE)}:latest", reg.ref("distroless/base-debian11:latest"))
        yield reg


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private distill cache, so each test starts cold unless it says otherwise."""
    home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def report(*args: str) -> dict:  # type: ignore[type-arg]
    result = run_distill(*args, "--json", "-q")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def layer_names(layout: Path, ref: str) -> list[str]:
    """Member names of the last (distill's) layer of an image in a layout."""
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref)
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"].split(":")[1]).read_text())
    blob = layout / "blobs/sha256" / manifest["layers"][-1]["digest"].split(":")[1]
    with tarfile.open(blob) as tar:
        return tar.getnames()


def test_registry_in_layout_and_registry_out_runs_and_is_reproducible(registry: Registry, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pushed = f"docker://{registry.host}/distilled/nginx:1"
    first = report("nginx", "--from", f"{registry.host}/library/nginx:latest", "--out", f"oci:{out}:nginx", "--out", pushed)
    layout_info = skopeo_inspect(f"oci:{out}:nginx")
    remote_info = skopeo_inspect(pushed)
    digest = first["image"]["manifest_digest"]
    assert layout_info["Digest"] == remote_info["Digest"] == digest
    assert remote_info["Architecture"] == "amd64"
    assert (
        json.loads(
            subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", pushed], check=True, capture_output=True, text=True).stdout
        )["layers"][0]["digest"]
        == first["image"]["layer_digest"]
    )
    bundle = tmp_path / "bundle"
    config = unpack_bundle(f"{out}:nginx", bundle)
    assert config["process"]["args"] == ["/usr/sbin/nginx", "-g", "daemon off;"]
    served = run_bundle_http(bundle, "/", "/nope")
    assert served["started"], served["stderr"]
    assert served["responses"]["/"]["status"] == 200 and served["responses"]["/nope"]["status"] == 404
    again = report("nginx", "--from", f"{registry.host}/library/nginx:latest", "--out", f"oci:{tmp_path / 'again'}:nginx")
    assert again["image"]["manifest_digest"] == digest


def test_warm_cache_is_reused(registry: Registry, cache: Path, tmp_path: Path) -> None:
    """Judged by the registry's own access log: the warm run fetches no blob (it only checks, with HEAD, that the image
    still holds the blobs its cached layers were verified from), and the spools are the same files."""
    source = f"{registry.host}/library/nginx:latest"
    cold_mark = registry.log_mark()
    cold = report("nginx", "--from", source, "--out", f"oci:{tmp_path / 'a'}:x")
    layers = len(skopeo_inspect(f"docker://{source}")["Layers"])
    cold_blobs = [r for r in registry.requests(cold_mark) if r.agent.startswith("distill/") and "/blobs/" in r.path]
    assert len({r.path for r in cold_blobs if r.method == "GET"}) == layers + 1, cold_blobs  # the config and each layer
    spools = sorted((cache / "distill/layers/sha256").glob("*.tar"))
    assert spools, "layer spools are cached"
    inodes = [p.stat().st_ino for p in spools]
    warm_mark = registry.log_mark()
    warm = report("nginx", "--from", source, "--out", f"oci:{tmp_path / 'b'}:x")
    asked = [r for r in registry.requests(warm_mark) if r.agent.startswith("distill/")]
    assert asked and not [r for r in asked if r.method == "GET" and "/blobs/" in r.path], asked
    assert [p.stat().st_ino for p in spools] == inodes  # the same files: not decompressed and written again
    assert warm["image"] == cold["image"]


def test_distroless_base_ships_neither_libc_nor_libssl_and_runs(registry: Registry, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = report(
        "nginx",
        "--from",
        f"{registry.host}/library/nginx:latest",
        "--base",
        f"{registry.host}/distroless/base-debian12:latest",
        "--out",
        f"oci:{out}:nginx",
    )
    names = layer_names(out, "nginx")
    assert not any(n.endswith(("/libc.so.6", "/libssl.so.3", "/libcrypto.so.3", "ld-linux-x86-64.so.2")) for n in names), names
    assert "usr/sbin/nginx" in names
    assert "var/lib/dpkg/status.d/nginx" in names and "var/lib/dpkg/status.d/libc6" not in names  # the base's to declare
    base = result["base"]
    assert base["name"] == f"{registry.host}/distroless/base-debian12:latest"
    assert any(p.endswith("/libc.so.6") for p in base["provided_by_base"])
    assert "/etc/passwd" in base["merged_with_base"]
    info = skopeo_inspect(f"oci:{out}:nginx")
    assert len(info["Layers"]) == len(skopeo_inspect(f"docker://{registry.host}/distroless/base-debian12:latest")["Layers"]) + 1
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out}:nginx"], check=True, capture_output=True, text=True).stdout)
    assert raw["annotations"]["org.opencontainers.image.base.name"] == f"{registry.host}/distroless/base-debian12:latest"
    bundle = tmp_path / "bundle"
    unpack_bundle(f"{out}:nginx", bundle)
    passwd = (bundle / "rootfs/etc/passwd").read_text()
    assert passwd.startswith("root:x:0:0:root:/root:/sbin/nologin\n") and "\nwww-data:x:33:33:" in passwd
    served = run_bundle_http(bundle, "/")
    assert served["started"], served["stderr"]
    assert served["responses"]["/"]["status"] == 200


def test_a_base_with_older_glibc_is_refused(registry: Registry, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_distill(
        "nginx",
        "--from",
        f"{registry.host}/library/nginx:latest",
        "--base",
        f"{registry.host}/distroless/base-debian11:latest",
        "--out",
        f"oci:{out}:nginx",
    )
    assert result.code == 4, result.stderr
    first = next(line for line in result.stderr.splitlines() if line.startswith("distill: error: "))
    assert "needs version GLIBC_2.3" in first and "of libc.so.6" in first and "defines versions up to GLIBC_2.30" in first
    assert "--replace-base-libs" in first
    assert not out.exists()


def test_replace_base_libs_ships_the_sources_libraries(registry: Registry, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report(
        "nginx",
        "--from",
        f"{registry.host}/library/nginx:latest",
        "--base",
        f"{registry.host}/distroless/base-debian12:latest",
        "--replace-base-libs",
        "--out",
        f"oci:{out}:nginx",
    )
    names = layer_names(out, "nginx")
    assert any(n.endswith("/libc.so.6") for n in names)


@pytest.fixture(scope="module")
def podman_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`podman system service` on a private unix socket, storage in a temp dir (vfs)."""
    home = tmp_path_factory.mktemp("podman")
    storage = ["--root", str(home / "root"), "--runroot", str(home / "run"), "--storage-driver", "vfs"]
    store = f"containers-storage:[vfs@{home / 'root'}+{home / 'run'}]"
    socket = home / "podman.sock"
    service = subprocess.Popen(
        ["podman", *storage, "system", "service", "--time=0", f"unix://{socket}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            if socket.exists():
                break
            subprocess.run(["sleep", "0.1"])
        yield {"podman": " ".join(["podman", *storage]), "DOCKER_HOST": f"unix://{socket}", "store": store}
    finally:
        service.terminate()
        service.wait(timeout=30)


def test_every_transport_gives_the_same_layer(registry: Registry, podman_service: dict[str, str], cache: Path, tmp_path: Path) -> None:
    layout = fat_layout()
    podman = podman_service["podman"].split()
    skopeo_copy(f"oci:{layout}:latest", f"{podman_service['store']}localhost/fat:latest")
    oci_archive, podman_archive = tmp_path / "fat.oci.tar", tmp_path / "fat.podman.tar"
    skopeo_copy(f"oci:{layout}:latest", f"oci-archive:{oci_archive}:latest")
    subprocess.run([*podman, "save", "--format", "docker-archive", "-o", str(podman_archive), "localhost/fat:latest"], check=True)
    dual = tmp_path / "fat.dual.tar"
    write_docker25_archive(layout, dual, "fat:latest")
    diff_ids = {}
    for source in (
        f"{registry.host}/library/nginx:latest",
        f"oci:{layout}:latest",
        f"oci-archive:{oci_archive}",
        f"docker-archive:{podman_archive}",
        f"docker-archive:{dual}:fat:latest",
        "docker-daemon:localhost/fat:latest",
    ):
        env = {"DOCKER_HOST": podman_service["DOCKER_HOST"]}
        result = run_distill("nginx", "--from", source, "--out", f"oci:{tmp_path / 'out'}:{len(diff_ids)}", "--json", "-q", env=env)
        assert result.code == 0, (source, result.stderr)
        diff_ids[source] = json.loads(result.stdout)["image"]["diff_id"]
    assert len(set(diff_ids.values())) == 1, diff_ids


def test_zstd_layers_read_like_gzip_ones(cache: Path, tmp_path: Path) -> None:
    zstd_layout = tmp_path / "zstd"
    subprocess.run(
        ["skopeo", "copy", "-q", "--dest-compress-format=zstd", f"oci:{fat_layout()}:latest", f"oci:{zstd_layout}:latest"], check=True
    )
    manifest = json.loads(
        (
            zstd_layout / "blobs/sha256" / json.loads((zstd_layout / "index.json").read_text())["manifests"][0]["digest"].split(":")[1]
        ).read_text()
    )
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    from_zstd = report("nginx", "--from", f"oci:{zstd_layout}:latest", "--out", f"oci:{tmp_path / 'a'}:x")
    from_gzip = report("nginx", "--from", f"oci:{fat_layout()}:latest", "--out", f"oci:{tmp_path / 'b'}:x")
    assert from_zstd["image"]["diff_id"] == from_gzip["image"]["diff_id"]


def test_docker_archive_output_loads_in_podman_and_the_docker_cli(
    registry: Registry, podman_service: dict[str, str], cache: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "nginx.tar"
    result = report(
        "nginx",
        "--from",
        f"{registry.host}/library/nginx:latest",
        "--out",
        f"docker-archive:{archive}:distilled/nginx:1",
        "--out",
        f"oci-archive:{tmp_path / 'nginx.oci.tar'}:nginx",
    )
    podman = podman_service["podman"].split()
    loaded = subprocess.run([*podman, "load", "-i", str(archive)], check=True, capture_output=True, text=True)
    assert "distilled/nginx:1" in loaded.stdout + loaded.stderr
    env = {**os.environ, "DOCKER_HOST": podman_service["DOCKER_HOST"], "HOME": str(tmp_path)}
    docker = subprocess.run(["docker", "load", "-i", str(archive)], env=env, capture_output=True, text=True)
    assert docker.returncode == 0, docker.stderr
    inspect = json.loads(
        subprocess.run([*podman, "image", "inspect", "distilled/nginx:1"], check=True, capture_output=True, text=True).stdout
    )
    assert inspect[0]["Config"]["Entrypoint"] == ["/usr/sbin/nginx", "-g", "daemon off;"]
    assert skopeo_inspect(f"oci-archive:{tmp_path / 'nginx.oci.tar'}:nginx")["Digest"] == result["image"]["manifest_digest"]
    daemon = run_distill(
        "nginx",
        "--from",
        f"{registry.host}/library/nginx:latest",
        "--out",
        "docker-daemon:distilled/nginx:2",
        "-q",
        env={"DOCKER_HOST": podman_service["DOCKER_HOST"]},
    )
    assert daemon.code == 0, daemon.stderr
    loaded_by_api = json.loads(
        subprocess.run([*podman, "image", "inspect", "distilled/nginx:2"], check=True, capture_output=True, text=True).stdout
    )
    assert loaded_by_api[0]["Config"]["Entrypoint"] == ["/usr/sbin/nginx", "-g", "daemon off;"]
