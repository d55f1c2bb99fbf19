"""Archive and daemon transports against real peers: `docker-archive:FILE@N` on a multi-image archive
written by a real `podman save`, and the `docker-daemon:` sink and source speaking to a Docker 25+
Engine (a stand-in, tests/helpers/daemon.py: Debian ships Docker 20.10) whose archives go through
podman and skopeo to prove they load."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cli import run_distill
from helpers.daemon import FakeDocker25, write_docker25_archive
from helpers.registry import build_image_layout, skopeo_inspect
from helpers.tree import Tree

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small images packed by umoci, told apart by the content of /etc/which."""
    base = tmp_path_factory.mktemp("images")
    made = {}
    for name in ("first", "second"):
        tree = Tree(base / name / "root")
        tree.app()
        tree.write("/etc/which", f"{name}\n")
        build_image_layout(tree.root, base / name / "layout", "latest")
        made[name] = base / name / "layout"
    return made


@pytest.fixture
def podman() -> Iterator[list[str]]:
    """podman with a private store (vfs) in a short path: podman refuses a runroot over 50 characters."""
    home = Path(tempfile.mkdtemp(prefix="podman-"))
    storage = ["--root", str(home / "root"), "--runroot", str(home / "run"), "--storage-driver", "vfs"]
    yield ["podman", *storage]
    subprocess.run(["podman", *storage, "system", "reset", "--force"], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def test_docker_archive_at_n_picks_the_nth_image_of_podman_save(layouts: dict[str, Path], podman: list[str], tmp_path: Path) -> None:
    store = f"containers-storage:[vfs@{podman[2]}+{podman[4]}]"
    for name, layout in layouts.items():
        subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}:latest", f"{store}localhost/{name}:1"], check=True, capture_output=True)
    archive = tmp_path / "both.tar"
    subprocess.run(
        [*podman, "save", "--multi-image-archive", "-o", str(archive), "localhost/second:1", "localhost/first:1"],
        check=True,
        capture_output=True,
    )
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        entries = json.load(member)
    assert len(entries) == 2
    for n, entry in enumerate(entries):  # @N is the N-th entry of the archive's manifest.json, from 0
        out = tmp_path / f"out{n}"
        result = run_distill(
            "/usr/bin/app", "--from", f"docker-archive:{archive}@{n}", "--path", "/etc/which", "--out", f"rootfs:{out}", "-q"
        )
        assert result.code == 0, result.stderr
        expected = entry["RepoTags"][0].split("/")[-1].split(":")[0]
        assert (out / "etc/which").read_text() == f"{expected}\n"
    beyond = run_distill("/usr/bin/app", "--from", f"docker-archive:{archive}@2", "--out", f"rootfs:{tmp_path / 'none'}")
    assert beyond.code == 3
    assert beyond.stderr == f"distill: error: docker-archive:{archive}@2: no image @2; the archive holds 2\n"
    assert not (tmp_path / "none").exists()


def members(archive: bytes | Path) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) if isinstance(archive, bytes) else tarfile.open(archive) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}  # type: ignore[union-attr]


def test_the_daemon_sink_loads_the_docker_25_archive(layouts: dict[str, Path], podman: list[str], tmp_path: Path) -> None:
    """What distill posts to a Docker 25+ Engine is that release's `docker save` format (the OCI layout plus
    manifest.json), byte for byte what the docker-archive sink writes, and real podman loads it."""
    with FakeDocker25(tmp_path / "docker.sock") as daemon:
        result = run_distill(
            "/usr/bin/app",
            "--from",
            f"oci:{layouts['first']}:latest",
            "--out",
            "docker-daemon:example/app:1",
            "--out",
            f"docker-archive:{tmp_path / 'app.tar'}:example/app:1",
            "--json",
            "-q",
            env={"DOCKER_HOST": daemon.host},
        )
        assert result.code == 0, result.stderr
        assert daemon.paths == ["GET /version", "POST /v1.44/images/load"]  # the daemon's API version, negotiated
    (posted,) = daemon.loaded
    (tmp_path / "posted.tar").write_bytes(posted)
    files, archived = members(posted), members(tmp_path / "app.tar")
    assert set(files) == set(archived) and {"oci-layout", "index.json", "manifest.json"} <= set(files)
    assert {k: v for k, v in files.items() if k.startswith("blobs/")} == {k: v for k, v in archived.items() if k.startswith("blobs/")}
    (legacy,) = json.loads(files["manifest.json"])
    image = json.loads(result.stdout)["image"]
    assert legacy["Config"] == f"blobs/sha256/{image['config_digest'].split(':')[1]}"
    assert legacy["Layers"] == [f"blobs/sha256/{image['layer_digest'].split(':')[1]}"]
    assert legacy["RepoTags"][0] in ("example/app:1", "docker.io/example/app:1")  # one name, familiar or in full
    index = json.loads(files["index.json"])
    assert [m["digest"] for m in index["manifests"]] == [image["manifest_digest"]]
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/example/app:1"
    loaded = subprocess.run([*podman, "load", "-i", str(tmp_path / "posted.tar")], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert "example/app:1" in loaded.stdout + loaded.stderr
    assert skopeo_inspect(f"docker-archive:{tmp_path / 'posted.tar'}")["Layers"] == [image["diff_id"]]  # uncompressed, as Docker lists


def test_the_daemon_source_reads_docker_25_save_output(layouts: dict[str, Path], tmp_path: Path) -> None:
    archive = tmp_path / "saved.tar"
    write_docker25_archive(layouts["second"], archive, "example/second:1")
    with FakeDocker25(tmp_path / "docker.sock") as daemon:
        daemon.images["example/second:1"] = archive.read_bytes()
        from_daemon = run_distill(
            "/usr/bin/app",
            "--from",
            "docker-daemon:example/second:1",
            "--path",
            "/etc/which",
            "--out",
            f"oci:{tmp_path / 'a'}:x",
            "--json",
            "-q",
            env={"DOCKER_HOST": daemon.host},
        )
        assert from_daemon.code == 0, from_daemon.stderr
        missing = run_distill(
            "/usr/bin/app",
            "--from",
            "docker-daemon:example/absent:1",
            "--out",
            f"rootfs:{tmp_path / 'b'}",
            env={"DOCKER_HOST": daemon.host},
        )
    from_layout = run_distill(
        "/usr/bin/app",
        "--from",
        f"oci:{layouts['second']}:latest",
        "--path",
        "/etc/which",
        "--out",
        f"oci:{tmp_path / 'c'}:x",
        "--json",
        "-q",
    )
    assert from_layout.code == 0, from_layout.stderr
    assert json.loads(from_daemon.stdout)["image"]["diff_id"] == json.loads(from_layout.stdout)["image"]["diff_id"]
    assert missing.code == 3
    assert missing.stderr == "distill: error: docker-daemon:docker.io/example/absent:1: no such image in the daemon\n"
