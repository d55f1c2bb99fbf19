"""The registry client against a real docker-registry (anonymous, htpasswd Basic, Bearer tokens), and
the failures users hit: unknown names, lying or truncated content, missing credentials, a registry
that is down. Two behaviours no real registry produces on demand (429 with Retry-After, a redirect
to another host) use a small fake HTTP server on 127.0.0.1, and say so."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.errors import SourceError
from distill.oci.digest import VerifiedReader, sha256_of
from distill.reference import parse_reference
from distill.registry.auth import Credentials
from distill.registry.client import RegistryClient, RegistryOptions

from helpers import REPO
from helpers.cli import Result, run_distill
from helpers.probes import make_tls
from helpers.registry import Registry, TokenServer, build_image_layout, free_port, skopeo_copy
from helpers.tree import Tree

USER_CREDS = "alice:alice-password"


@pytest.fixture(scope="module")
def tiny_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real image: host glibc and one compiled program, packed by umoci."""
    base = tmp_path_factory.mktemp("tiny")
    tree = Tree(base / "root")
    tree.app()
    build_image_layout(tree.root, base / "layout", "latest")
    return base / "layout"


@pytest.fixture
def anonymous(tmp_path: Path, tiny_layout: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "reg") as reg:
        skopeo_copy(f"oci:{tiny_layout}:latest", reg.ref("library/app:1"))
        yield reg


def distill_app(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return run_distill("/usr/bin/app", *args, env=env)


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("distill: error: ")]
    assert lines and "Traceback" not in stderr, stderr
    return lines[0]


def blob_file(registry: Registry, digest: str) -> Path:
    hexpart = digest.split(":")[1]
    return registry.dir / "storage/docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


def manifest_digest(registry: Registry, repository: str, tag: str) -> str:
    client = RegistryClient(parse_reference(f"{registry.host}/{repository}:{tag}"), RegistryOptions())
    return sha256_of(client.get_manifest(repository, tag)[0])


def test_unknown_repository_and_tag(anonymous: Registry, tmp_path: Path) -> None:
    for ref, fragment in (
        (f"{anonymous.host}/library/nope:1", "library/nope:1: no such repository or tag in the registry"),
        (f"{anonymous.host}/library/app:2", "library/app:2: no such repository or tag in the registry"),
    ):
        result = distill_app("--from", ref, "--out", f"oci:{tmp_path / 'out'}:x")
        assert result.code == 3
        assert fragment in error_line(result.stderr)
        assert not (tmp_path / "out").exists()


def test_an_anonymous_pull_loads_no_credentials_code(anonymous: Registry, tmp_path: Path) -> None:
    """The credential lookup and challenge parser (`registry.auth`) load at the first 401: a registry that
    asks for none costs no import of them (run through the entry point in a fresh interpreter)."""
    args = ["/usr/bin/app", "--from", f"{anonymous.host}/library/app:1", "--out", f"oci:{tmp_path / 'out'}:x", "-q"]
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.__stderr__.write('AUTH LOADED ' + repr('distill.registry.auth' in sys.modules) + '\\n'))\n"
        f"sys.argv = ['distill', *{args!r}]\n"
        "from distill.__main__ import main\n"
        "main()\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "AUTH LOADED False" in result.stderr.splitlines()


def test_a_registry_that_is_down(tmp_path: Path) -> None:
    result = distill_app("--from", f"127.0.0.1:{free_port()}/library/app:1", "--out", f"oci:{tmp_path / 'out'}:x")
    assert result.code == 3
    assert "cannot connect to http://127.0.0.1:" in error_line(result.stderr)


def test_a_corrupted_blob_is_caught_by_its_digest(anonymous: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    client = RegistryClient(parse_reference(f"{anonymous.host}/library/app:1"), RegistryOptions())
    manifest = json.loads(client.get_manifest("library/app", "1")[0])
    layer = manifest["layers"][0]["digest"]
    data = blob_file(anonymous, layer)
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))
    result = distill_app("--from", anonymous.ref("library/app:1").removeprefix("docker://"), "--out", f"oci:{tmp_path / 'out'}:x")
    assert result.code == 3
    assert f"digest mismatch: expected {layer}" in error_line(result.stderr)
    data.write_bytes(bytes(content[: len(content) // 3]))  # now truncated
    result = distill_app("--from", anonymous.ref("library/app:1").removeprefix("docker://"), "--out", f"oci:{tmp_path / 'out'}:x")
    assert result.code == 3
    assert "truncated" in error_line(result.stderr) or "digest mismatch" in error_line(result.stderr)
    assert not (tmp_path / "out").exists()


def test_a_corrupted_manifest_is_caught_by_its_digest(anonymous: Registry, tmp_path: Path) -> None:
    digest = manifest_digest(anonymous, "library/app", "1")
    path = blob_file(anonymous, digest)
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion": 2'))
    result = distill_app("--from", f"{anonymous.host}/library/app:1", "--out", f"oci:{tmp_path / 'out'}:x")
    assert result.code == 3
    assert "manifest digest mismatch" in error_line(result.stderr)


def test_basic_auth_needs_credentials(tmp_path: Path, tiny_layout: Path) -> None:
    with Registry(tmp_path / "reg", auth="basic") as reg:
        skopeo_copy(f"oci:{tiny_layout}:latest", reg.ref("library/app:1"), dest_creds=reg.creds)
        out = tmp_path / "out"
        refused = distill_app("--from", f"{reg.host}/library/app:1", "--out", f"oci:{out}:x", env={"HOME": str(tmp_path)})
        assert refused.code == 3
        assert "requires a user name and password; give --creds USER:PASSWORD" in error_line(refused.stderr)
        assert reg.password not in refused.stderr
        ok = distill_app("--from", f"{reg.host}/library/app:1", "--creds", reg.creds or "", "--out", f"oci:{out}:x", "-v")
        assert ok.code == 0, ok.stderr
        assert reg.password not in ok.stderr + ok.stdout
        authfile = tmp_path / "auth.json"
        token = base64.b64encode((reg.creds or "").encode()).decode()
        authfile.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
        via_file = distill_app("--from", f"{reg.host}/library/app:1", "--authfile", str(authfile), "--out", f"oci:{tmp_path / 'o2'}:x")
        assert via_file.code == 0, via_file.stderr


def test_bearer_tokens_anonymous_pull_and_refused_push(tmp_path: Path, tiny_layout: Path) -> None:
    with (
        TokenServer(tmp_path / "tokens", pull_only_users=("reader",)) as tokens,
        Registry(tmp_path / "reg", auth="token", token_server=tokens) as reg,
    ):
        skopeo_copy(f"oci:{tiny_layout}:latest", reg.ref("library/app:1"), dest_creds=USER_CREDS)
        pulled = distill_app("--from", f"{reg.host}/library/app:1", "--out", f"oci:{tmp_path / 'out'}:x", env={"HOME": str(tmp_path)})
        assert pulled.code == 0, pulled.stderr  # an anonymous token grants pull on library/*
        anonymous_requests = [r for r in tokens.requests if not r.authenticated]
        assert len(anonymous_requests) == 1, "one token, reused for the manifest and every blob"
        pushed = distill_app("--from", f"{reg.host}/library/app:1", "--creds", USER_CREDS, "--out", f"docker://{reg.host}/distilled/app:1")
        assert pushed.code == 0, pushed.stderr
        refused = distill_app(
            "--from", f"{reg.host}/library/app:1", "--creds", "reader:reader-password", "--out", f"docker://{reg.host}/distilled/app:2"
        )
        assert refused.code == 5
        assert "push denied" in error_line(refused.stderr)
        assert "reader-password" not in refused.stderr


def test_an_identity_token_is_exchanged_for_access_tokens(tmp_path: Path, tiny_layout: Path) -> None:
    with (
        TokenServer(tmp_path / "tokens", refresh_tokens={"refresh-abc": "alice"}) as tokens,
        Registry(tmp_path / "reg", auth="token", token_server=tokens) as reg,
    ):
        skopeo_copy(f"oci:{tiny_layout}:latest", reg.ref("team/app:1"), dest_creds=USER_CREDS)
        authfile = tmp_path / "config.json"
        authfile.write_text(json.dumps({"auths": {reg.host: {"identitytoken": "refresh-abc"}}}))
        result = distill_app(
            "--from", f"{reg.host}/team/app:1", "--authfile", str(authfile), "--out", f"docker://{reg.host}/team/app:distilled"
        )
        assert result.code == 0, result.stderr
        assert "refresh-abc" not in result.stderr
        posts = [r for r in tokens.requests if r.method == "POST"]
        assert posts and all(r.user == "alice" for r in posts)


def test_push_mounts_base_layers_from_the_same_registry(anonymous: Registry, tmp_path: Path, tiny_layout: Path) -> None:
    skopeo_copy(f"oci:{tiny_layout}:latest", anonymous.ref("base/tiny:1"))
    result = distill_app(
        "--from",
        f"{anonymous.host}/library/app:1",
        "--base",
        f"{anonymous.host}/base/tiny:1",
        "--out",
        f"docker://{anonymous.host}/distilled/app:1",
        "--json",
        "-q",
    )
    assert result.code == 0, result.stderr
    log = anonymous.log_tail(200_000)
    assert "mount=" in log and "from=base" in log.replace("%2F", "/")


def test_push_skips_blobs_the_registry_has(anonymous: Registry, tmp_path: Path) -> None:
    """The second push of the same image uploads nothing: the registry's log shows HEADs and the manifest PUT."""
    args = ("--from", f"{anonymous.host}/library/app:1", "--json", "-q")
    first = distill_app(*args, "--out", f"docker://{anonymous.host}/distilled/app:1")
    assert first.code == 0, first.stderr
    mark = anonymous.log_mark()
    second = distill_app(*args, "--out", f"docker://{anonymous.host}/distilled/app:2")
    assert second.code == 0, second.stderr
    writes = [(r.method, r.path.split("?")[0]) for r in anonymous.requests(mark) if r.method in ("POST", "PUT", "PATCH")]
    assert writes == [("PUT", "/v2/distilled/app/manifests/2")], writes
    heads = {r.path for r in anonymous.requests(mark) if r.method == "HEAD" and "/blobs/" in r.path}
    image = json.loads(second.stdout)["image"]
    assert {f"/v2/distilled/app/blobs/{image['config_digest']}", f"/v2/distilled/app/blobs/{image['layer_digest']}"} <= heads


class _Fake(http.server.BaseHTTPRequestHandler):
    """A fake registry endpoint for what real registries do not do on demand (429, cross-host redirects)."""

    plan: list[tuple[int, dict[str, str], bytes]] = []
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        _Fake.seen.append(dict(self.headers))
        status, headers, body = _Fake.plan.pop(0)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # a client may hang up once it has seen enough
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Fake.plan, _Fake.seen = [], []
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_429_is_retried_honouring_retry_after(fake: str) -> None:
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}, "layers": []}
    ).encode()
    _Fake.plan = [(429, {"Retry-After": "2"}, b""), (503, {}, b""), (200, {"Content-Type": "application/json"}, manifest)]
    client = RegistryClient(parse_reference(f"{fake}/x/y:1"), RegistryOptions())
    waits: list[float] = []
    client.retry_sleep = waits.append
    data, _ = client.get_manifest("x/y", "1")
    assert data == manifest
    assert waits[0] == 2.0 and len(waits) == 2


def documented_retry_cap() -> float:
    """docs/images.md: '429 and 5xx are retried up to 5 times, honouring `Retry-After` (at most N s)'."""
    match = re.search(r"honouring `Retry-After` \(at most (\d+) s\)", (REPO / "docs/images.md").read_text())
    assert match, "docs/images.md no longer states the Retry-After cap"
    return float(match.group(1))


@pytest.mark.parametrize(("header", "expected"), [("3600", "cap"), ("-5", 0.0), ("1.5", 1.5)])
def test_retry_after_is_capped(fake: str, header: str, expected: float | str) -> None:
    """A registry asking for an hour's pause gets the documented cap, not an hour. Measured on the client's
    wait (not through the command line, which would then really sleep for the cap)."""
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}, "layers": []}
    ).encode()
    _Fake.plan = [(429, {"Retry-After": header}, b""), (200, {"Content-Type": "application/json"}, manifest)]
    client = RegistryClient(parse_reference(f"{fake}/x/y:1"), RegistryOptions())
    waits: list[float] = []
    client.retry_sleep = waits.append
    assert client.get_manifest("x/y", "1")[0] == manifest
    assert waits == [documented_retry_cap() if expected == "cap" else expected]


def test_a_redirect_to_another_host_does_not_carry_credentials(fake: str, tmp_path: Path) -> None:
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        blob = b"layer bytes"
        digest = sha256_of(blob)
        target = f"http://localhost:{other.server_address[1]}/storage/blob"  # same address, another host name
        _Fake.plan = [(401, {"WWW-Authenticate": 'Basic realm="test"'}, b""), (307, {"Location": target}, b""), (200, {}, blob)]
        client = RegistryClient(parse_reference(f"{fake}/x/y:1"), RegistryOptions(creds=Credentials("u", "secret")))
        with VerifiedReader(client.open_blob("x/y", digest), digest, len(blob), "blob") as reader:
            assert reader.read() == blob
        assert "Authorization" in _Fake.seen[1] and "Authorization" not in _Fake.seen[2]
    finally:
        other.shutdown()
        other.server_close()


def test_a_huge_manifest_is_refused(fake: str) -> None:
    _Fake.plan = [(200, {"Content-Type": "application/json"}, b"{" + b" " * (5 << 20) + b"}")]
    client = RegistryClient(parse_reference(f"{fake}/x/y:1"), RegistryOptions())
    with pytest.raises(SourceError) as caught:
        client.get_manifest("x/y", "1")
    assert "refusing more than 4 MiB" in caught.value.message or "larger than 4 MiB" in caught.value.message


def test_tls_verify_false_falls_back_to_plain_http(anonymous: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry that is not on loopback is spoken to over https; with --tls-verify=false, plain http is tried
    too. The real registry here is on 127.0.0.1, so the loopback rule is switched off for this test."""
    import distill.registry.client as client_module

    monkeypatch.setattr(client_module, "_loopback", lambda host: False)
    strict = RegistryClient(parse_reference(f"{anonymous.host}/library/app:1"), RegistryOptions())
    assert strict.base.startswith("https://")
    with pytest.raises(SourceError):
        strict.get_manifest("library/app", "1")
    relaxed = RegistryClient(parse_reference(f"{anonymous.host}/library/app:1"), RegistryOptions(tls_verify=False))
    data, _ = relaxed.get_manifest("library/app", "1")
    assert json.loads(data)["schemaVersion"] == 2 and relaxed.base.startswith("http://")


class _ChunkOnly(http.server.BaseHTTPRequestHandler):
    """A fake registry that refuses monolithic uploads (413), as some proxies do; real docker-registry accepts them."""

    received = bytearray()
    log: list[str] = []

    def _reply(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        _ChunkOnly.log.append("POST")
        self._reply(202, {"Location": "/v2/x/y/blobs/uploads/session-1"})

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _ChunkOnly.log.append(f"PUT {len(body)}")
        if body:
            self._reply(413)
        else:
            digest = self.path.split("digest=")[1].replace("%3A", ":")
            ok = digest == sha256_of(bytes(_ChunkOnly.received))
            self._reply(201 if ok else 400)

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        start, end = (int(n) for n in self.headers["Content-Range"].split("-"))
        _ChunkOnly.log.append(f"PATCH {start}-{end}")
        assert start == len(_ChunkOnly.received) and end == start + len(body) - 1
        _ChunkOnly.received.extend(body)
        self._reply(202, {"Location": "/v2/x/y/blobs/uploads/session-1"})

    def log_message(self, *args: object) -> None:
        pass


def test_uploads_fall_back_to_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import distill.registry.client as client_module

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ChunkOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(client_module, "_CHUNK", 1000)
    try:
        _ChunkOnly.received, _ChunkOnly.log = bytearray(), []
        blob = bytes(range(256)) * 10
        client = RegistryClient(parse_reference(f"127.0.0.1:{server.server_address[1]}/x/y:1"), RegistryOptions())
        client.upload_blob("x/y", sha256_of(blob), len(blob), lambda: io.BytesIO(blob))
        assert bytes(_ChunkOnly.received) == blob
        assert _ChunkOnly.log == ["POST", f"PUT {len(blob)}", "POST", "PATCH 0-999", "PATCH 1000-1999", "PATCH 2000-2559", "PUT 0"]
    finally:
        server.shutdown()
        server.server_close()


# -- --tls-verify through the command line --------------------------------------------------------------
# Registries on loopback addresses are spoken to over plain http, so these runs name the registry
# `app.test`, which an /etc/hosts bind-mounted in a private mount namespace points at 127.0.0.1.


def distill_via_name(registry: Registry, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """`distill /usr/bin/app --from app.test:PORT/library/app:1 ARGS`, in a mount namespace where app.test is 127.0.0.1."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost app.test\n")
    command = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        'mount --bind "$0" /etc/hosts && shift && exec "$@"',
        str(hosts),
        "--",
        sys.executable,
        "-m",
        "distill",
        "/usr/bin/app",
        "--from",
        f"app.test:{registry.port}/library/app:1",
        "--out",
        f"rootfs:{tmp_path / 'out'}",
        "-q",
        *args,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    return Result(proc.returncode, proc.stdout, proc.stderr)


# A CA bundle named in the environment (as corporate machines do) must not turn --tls-verify=false back on
BUNDLE_ENV = [{}, {"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt", "CURL_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}]


def environment(extra: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}, **extra}


@pytest.mark.parametrize("bundle", BUNDLE_ENV, ids=["no-bundle-env", "bundle-env"])
def test_tls_verify_false_accepts_a_certificate_nobody_trusts(tmp_path: Path, tiny_layout: Path, bundle: dict[str, str]) -> None:
    certificate, key = make_tls(tmp_path / "tls")[1:]
    with Registry(tmp_path / "reg", tls=(certificate, key)) as registry:
        skopeo_copy(f"oci:{tiny_layout}:latest", registry.ref("library/app:1"))
        strict = distill_via_name(registry, tmp_path, env=environment(bundle))
        assert strict.code == 3
        assert error_line(strict.stderr) == (
            f"distill: error: app.test:{registry.port}: TLS verification failed; "
            "use --tls-verify=false for a registry without a trusted certificate"
        )
        relaxed = distill_via_name(registry, tmp_path, "--tls-verify=false", env=environment(bundle))
        assert relaxed.code == 0, relaxed.stderr
        assert (tmp_path / "out/usr/bin/app").is_file()
        assert any(r.method == "GET" and "/manifests/" in r.path and r.agent.startswith("distill/") for r in registry.requests())


@pytest.mark.parametrize("bundle", BUNDLE_ENV, ids=["no-bundle-env", "bundle-env"])
def test_tls_verify_false_falls_back_to_plain_http_on_the_command_line(anonymous: Registry, tmp_path: Path, bundle: dict[str, str]) -> None:
    strict = distill_via_name(anonymous, tmp_path, env=environment(bundle))
    assert strict.code == 3 and "distill: error: " in strict.stderr and "Traceback" not in strict.stderr
    relaxed = distill_via_name(anonymous, tmp_path, "--tls-verify=false", env=environment(bundle))
    assert relaxed.code == 0, relaxed.stderr
    assert (tmp_path / "out/usr/bin/app").is_file()
