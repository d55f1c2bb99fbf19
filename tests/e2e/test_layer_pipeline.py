"""The concurrent layer pipeline under stress: several layers read at once from one archive, the first
failure in layer order stopping the layers queued after it, an interrupt while a registry stalls, and a
cache that cannot be written. Images are crafted (helpers.crafted) with layers of random bytes, so gzip
does not shrink them and every layer takes real time to read; registries are the real docker-registry."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from distill.transports.oci import TarStore

from helpers.crafted import Crafted, app_members, run, snapshot, tar_bytes, tiny_static_app
from helpers.layouts import member
from helpers.registry import Registry, skopeo_copy

_EXTRA_LAYERS = 5  # after the app's layer: six layers, more than the four fetched at once


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> Crafted:
    """A six-layer image: the app, then five layers of 6 MiB of random bytes each."""
    app = tiny_static_app(tmp_path_factory.mktemp("app") / "app")
    noise = [tar_bytes([member(f"noise/{n}", data=os.urandom(6 << 20))]) for n in range(_EXTRA_LAYERS)]
    return Crafted([tar_bytes(app_members(app)), *noise])


@pytest.fixture(scope="module")
def layout(crafted: Crafted, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crafted.layout(tmp_path_factory.mktemp("layout") / "layout")


def _layer_digests(crafted: Crafted) -> list[str]:
    return [layer["digest"] for layer in crafted.documents()[2]["layers"]]


def test_members_of_one_archive_read_concurrently_keep_their_bytes(tmp_path: Path) -> None:
    """Threads reading different members of one archive each get their own member's bytes, whether the
    archive is a path or an open file object (a docker-daemon save)."""
    contents = {f"blobs/sha256/{n}": os.urandom(8 << 20) for n in range(4)}
    path = tmp_path / "race.tar"
    path.write_bytes(tar_bytes([(member(name, data=data)[0], data) for name, data in contents.items()]))
    opened = open(path, "rb")  # closed below, after every read
    for source in (str(path), opened, io.BytesIO(path.read_bytes())):
        store = TarStore(source, "oci-archive:race.tar")  # type: ignore[arg-type]
        seen: dict[str, str] = {}

        def read(name: str, store: TarStore = store, seen: dict[str, str] = seen) -> None:
            digest = hashlib.sha256()
            with store.open(name) as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
            seen[name] = digest.hexdigest()

        for _attempt in range(3):
            threads = [threading.Thread(target=read, args=(name,)) for name in contents]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert seen == {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    opened.close()


def test_multi_layer_archives_distill_every_time(crafted: Crafted, layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """oci-archive and docker-archive sources of six layers, each run on a fresh cache (all layers read
    from the archive at once): every run succeeds with the same output."""
    oci_archive = tmp_path / "oci.tar"
    with tarfile.open(oci_archive, "w") as tar:
        tar.add(layout, arcname=".")
    docker_archive = crafted.docker_archive(tmp_path / "docker.tar")
    outputs = []
    for source in (f"oci-archive:{oci_archive}", f"docker-archive:{docker_archive}"):
        for attempt in range(3):
            monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"cache-{source[:3]}-{attempt}"))
            out = tmp_path / f"out-{source[:3]}-{attempt}"
            result = run("/usr/bin/app", "--from", source, "--out", f"rootfs:{out}", "-q")
            assert result.code == 0, (source, attempt, result.stderr)
            outputs.append(snapshot(out))
    assert all(output == outputs[0] for output in outputs) and outputs[0]["usr/bin/app"]


@pytest.fixture
def registry(layout: Path, tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "reg") as reg:
        skopeo_copy(f"oci:{layout}:latest", reg.ref("app:1"))
        yield reg


def _blob_file(registry: Registry, digest: str) -> Path:
    hexpart = digest.split(":")[1]
    return registry.dir / "storage/docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


def test_a_corrupt_layer_stops_the_layers_queued_after_it(
    crafted: Crafted, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layer 1's blob holds other bytes under its digest: the run fails on it (exit 3), and the layers
    queued behind the four fetched at once (5 and 6) are never requested from the registry."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    digests = _layer_digests(crafted)
    data = _blob_file(registry, digests[0])
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))
    mark = registry.log_mark()
    result = run("/usr/bin/app", "--from", registry.ref("app:1").removeprefix("docker://"), "--out", f"rootfs:{tmp_path / 'out'}", "-q")
    assert result.code == 3, result.stderr
    assert f"blob {digests[0][:19]}: digest mismatch: expected {digests[0]}" in result.stderr
    fetched = {access.path.rsplit("/", 1)[1] for access in registry.requests(mark) if access.method == "GET" and "/blobs/" in access.path}
    assert digests[0] in fetched
    assert not fetched & set(digests[4:]), "layers queued after the failed one were fetched"
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache/distill/blobs/sha256" / digests[0].split(":")[1]).exists()


class _StallingProxy(http.server.ThreadingHTTPServer):
    """A fake: a registry that goes silent. No real registry stalls on demand, so this proxy on 127.0.0.1
    passes every request to the real docker-registry except GETs of the layer blobs named in `stall`,
    which it holds open without answering until the test ends."""

    daemon_threads = True

    def __init__(self, upstream: str, stall: set[str]) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream, self.stall = upstream, stall
        self.stalled = threading.Event()  # a layer blob was asked for
        self.release = threading.Event()


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _StallingProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._forward()

    def do_GET(self) -> None:
        if self.path.rsplit("/", 1)[-1] in self.server.stall:
            self.server.stalled.set()
            self.server.release.wait(120)
            return
        self._forward()

    def _forward(self) -> None:
        request = urllib.request.Request(self.server.upstream + self.path, method=self.command)
        for name in ("Accept", "Authorization"):
            if self.headers.get(name):
                request.add_header(name, self.headers[name])
        try:
            with urllib.request.urlopen(request) as response:
                status, headers, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, body = error.code, error.headers, error.read()
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@pytest.mark.parametrize(("signum", "code", "said"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_an_interrupt_while_the_registry_stalls_ends_the_run_at_once(
    crafted: Crafted, registry: Registry, tmp_path: Path, signum: int, code: int, said: str
) -> None:
    """SIGINT/SIGTERM while every layer fetch hangs on a silent registry: the run ends with its exit code
    (it does not wait for the fetches), writes nothing at the destination, and leaves no blob in the cache."""
    proxy = _StallingProxy(registry.url, set(_layer_digests(crafted)))
    server = threading.Thread(target=proxy.serve_forever, daemon=True)
    server.start()
    cache, out = tmp_path / "cache", tmp_path / "out"
    try:
        env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distill",
                "/usr/bin/app",
                "--from",
                f"127.0.0.1:{proxy.server_address[1]}/app:1",
                "--out",
                f"rootfs:{out}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proxy.stalled.wait(60), "distill never asked for a layer blob"
            time.sleep(0.3)  # let the other fetches reach the proxy too
            process.send_signal(signum)
            _stdout, stderr = process.communicate(timeout=20)  # before the fix: blocked until the proxy lets go
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == code, stderr
        assert f"distill: {said}" in stderr and "Traceback" not in stderr
        assert not out.exists()
        blobs = cache / "distill/blobs/sha256"
        kept = [p.name for p in blobs.iterdir() if not p.name.startswith(".")] if blobs.exists() else []
        assert not set(kept) & {d.split(":")[1] for d in _layer_digests(crafted)}
    finally:
        proxy.release.set()
        proxy.shutdown()
        proxy.server_close()


@contextmanager
def full_after_256k(directory: Path) -> Iterator[None]:
    """`directory` (made here) on a 256 KiB tmpfs for the block: a real ENOSPC for what does not fit."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(directory)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=True)  # lazy: a file a failing run left open


def test_a_full_cache_disk_is_not_a_corrupt_layer(
    crafted: Crafted, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache's blob store on a 256 KiB tmpfs (mounted here, real ENOSPC): the 2 MiB layer blobs do not
    fit, so they are not cached, one warning says so naming the path and errno, and the pull succeeds."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    blobs = tmp_path / "cache/distill/blobs"
    with full_after_256k(blobs):
        result = run("/usr/bin/app", "--from", registry.ref("app:1").removeprefix("docker://"), "--out", f"rootfs:{tmp_path / 'out'}", "-q")
        kept = sorted(p.name for p in (blobs / "sha256").iterdir())
    assert result.code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "cache: cannot write" in line]
    assert len(warnings) == 1, result.stderr
    assert str(blobs / "sha256") in warnings[0] and "ENOSPC" in warnings[0]
    assert (tmp_path / "out/usr/bin/app").exists()
    noise = {d.split(":")[1] for d in _layer_digests(crafted)[1:]}
    assert not any(name.startswith(".") for name in kept), kept  # no temporary copy left behind
    assert not set(kept) & noise


def test_no_room_for_the_layers_is_a_one_line_source_error(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache's spool directory on a 256 KiB tmpfs (mounted here, real ENOSPC): the layers cannot be read
    without room for them, so the run stops with exit 3 and one line naming the path, not an internal error."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    layers = tmp_path / "cache/distill/layers"
    with full_after_256k(layers):
        result = run("/usr/bin/app", "--from", registry.ref("app:1").removeprefix("docker://"), "--out", f"rootfs:{tmp_path / 'out'}", "-q")
        left = [p.name for p in layers.rglob("*") if p.is_file()]
    assert result.code == 3, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("distill: error: ") and str(layers) in line and "No space left on device" in line, line
    assert not (tmp_path / "out").exists() and not [name for name in left if name.startswith(".")], left
