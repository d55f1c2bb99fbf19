"""The registry helpers of tests/helpers/registry.py, proved against the real peers: docker-registry
(distribution 2.8), skopeo and umoci."""

from __future__ import annotations

import json
import os
import socket
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from helpers.registry import (
    Registry,
    RegistryStartError,
    TokenRefused,
    TokenServer,
    ToolError,
    build_image_layout,
    decode_jwt,
    free_port,
    layout_blob,
    layout_manifest,
    skopeo_copy,
    skopeo_inspect,
)

OWNED_UID = 1234


def make_tiny_rootfs(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "var/empty").mkdir(parents=True)
    (root / "etc/motd").write_text("hello from tiny\n")
    (root / "etc/hostname").write_text("tiny\n")
    (root / "etc/shadow").write_text("root:*:19000::::::\n")
    (root / "etc/shadow").chmod(0o640)
    (root / "usr/bin/hello").write_text("#!/bin/sh\necho hello\n")
    (root / "usr/bin/hello").chmod(0o755)
    (root / "usr/bin/hi").symlink_to("hello")
    (root / "bin").symlink_to("usr/bin")
    (root / "var/empty").chmod(0o700)
    os.chown(root / "etc/hostname", OWNED_UID, OWNED_UID)
    return root


def layer_members(layout: Path, layer: dict) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(layout_blob(layout, layer["digest"])) as tar:
        return {member.name.removeprefix("./").rstrip("/"): member for member in tar.getmembers()}


@pytest.fixture(scope="module")
def tiny_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tiny")
    layout = base / "layout"
    build_image_layout(make_tiny_rootfs(base / "rootfs"), layout, "1")
    return layout


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry", "basic", users={"bob": "hunter2"}) as reg:
        yield reg


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    with TokenServer(tmp_path / "token", users={"alice": "wonderland", "reader": "readonly"}, pull_only_users={"reader"}) as server:
        yield server


@pytest.fixture
def token_registry(tmp_path: Path, token_server: TokenServer) -> Iterator[Registry]:
    with Registry(tmp_path / "registry", "token", token_server=token_server) as reg:
        yield reg


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------------------------------


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_tiny_layout_has_one_layer_with_owners_modes_and_links(tiny_layout: Path) -> None:
    manifest = layout_manifest(tiny_layout, "1")
    assert len(manifest["layers"]) == 1
    members = layer_members(tiny_layout, manifest["layers"][0])
    assert members["usr/bin/hi"].issym() and members["usr/bin/hi"].linkname == "hello"
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert members["var/empty"].isdir() and stat.S_IMODE(members["var/empty"].mode) == 0o700
    assert stat.S_IMODE(members["usr/bin/hello"].mode) == 0o755
    assert stat.S_IMODE(members["etc/shadow"].mode) == 0o640
    assert (members["etc/hostname"].uid, members["etc/hostname"].gid) == (OWNED_UID, OWNED_UID)
    assert members["etc/motd"].isfile() and members["etc/motd"].size == len("hello from tiny\n")
    assert not any(".wh." in name for name in members)


def test_anonymous_registry_push_inspect_and_pull(registry: Registry, tiny_layout: Path, tmp_path: Path) -> None:
    assert registry.host == f"127.0.0.1:{registry.port}" and registry.url == f"http://{registry.host}"
    assert registry.auth == "none"
    assert requests.get(f"{registry.url}/v2/", timeout=5).status_code == 200

    skopeo_copy(f"oci:{tiny_layout}:1", f"docker://{registry.host}/library/tiny:1")
    raw = skopeo_inspect(f"docker://{registry.host}/library/tiny:1", raw=True)
    assert raw == layout_manifest(tiny_layout, "1")  # pushed as is, no conversion
    info = skopeo_inspect(registry.ref("library/tiny:1"))
    assert info["Layers"] == [layer["digest"] for layer in raw["layers"]]
    assert info["Os"] == "linux"

    skopeo_copy(registry.ref("library/tiny:1"), f"oci:{tmp_path / 'pulled'}:back")
    assert layout_manifest(tmp_path / "pulled", "back") == raw


def test_registry_listens_only_on_loopback_and_stops(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    try:
        config = json.loads(reg.config_path.read_text())
        assert config["http"]["addr"] == reg.host and reg.host.startswith("127.0.0.1:")
        assert config["storage"]["delete"] == {"enabled": True}
        assert port_is_open(reg.port)
        process = reg.process
        assert process is not None and process.poll() is None
    finally:
        reg.stop()
    assert process.poll() is not None
    assert not port_is_open(reg.port)
    reg.stop()  # idempotent


def test_registry_start_failure_reports_log_tail(tmp_path: Path) -> None:
    with TokenServer(tmp_path / "token") as server:
        server.cert_path.unlink()
        with pytest.raises(RegistryStartError, match="root certificate bundle"):
            Registry(tmp_path / "registry", "token", token_server=server)


def test_basic_auth_registry(basic_registry: Registry, tiny_layout: Path) -> None:
    reg = basic_registry
    assert (reg.auth, reg.username, reg.password) == ("basic", "bob", "hunter2")
    assert (reg.dir / "htpasswd").read_text().startswith("bob:$2b$")
    anonymous = requests.get(f"{reg.url}/v2/", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert requests.get(f"{reg.url}/v2/", auth=("bob", "hunter2"), timeout=5).status_code == 200

    with pytest.raises(ToolError, match="(?i)unauthorized|authentication required"):
        skopeo_copy(f"oci:{tiny_layout}:1", reg.ref("library/tiny:1"))
    with pytest.raises(ToolError, match="(?i)unauthorized|authentication required"):
        skopeo_copy(f"oci:{tiny_layout}:1", reg.ref("library/tiny:1"), dest_creds="bob:wrong")
    skopeo_copy(f"oci:{tiny_layout}:1", reg.ref("library/tiny:1"), dest_creds="bob:hunter2")
    assert skopeo_inspect(reg.ref("library/tiny:1"), raw=True, creds=reg.creds) == layout_manifest(tiny_layout, "1")


def test_token_auth_registry(token_registry: Registry, token_server: TokenServer, tiny_layout: Path, tmp_path: Path) -> None:
    reg, server = token_registry, token_server
    assert (reg.auth, reg.username, reg.password) == ("token", "alice", "wonderland")

    challenge = requests.get(f"{reg.url}/v2/", timeout=5)
    assert challenge.status_code == 401
    bearer = challenge.headers["WWW-Authenticate"]
    assert bearer.startswith("Bearer ")
    assert f'realm="{server.url}/token"' in bearer and 'service="distill-test-registry"' in bearer

    # A normal user's token carries exactly what was asked for, and the registry accepts it.
    token = server.fetch_token(["repository:library/tiny:pull,push"], username="alice", password="wonderland")
    header, claims = decode_jwt(token)
    assert header["alg"] == "RS256" and header["kid"] == server.kid and len(header["x5c"]) == 1
    assert claims["iss"] == "distill-test-issuer" and claims["aud"] == "distill-test-registry"
    assert claims["sub"] == "alice" and claims["nbf"] <= claims["iat"] < claims["exp"]
    assert claims["access"] == [{"type": "repository", "name": "library/tiny", "actions": ["pull", "push"]}]
    authorized = requests.get(f"{reg.url}/v2/", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert authorized.status_code == 200

    with pytest.raises(ToolError, match="(?i)denied|unauthorized"):
        skopeo_copy(f"oci:{tiny_layout}:1", reg.ref("library/tiny:1"))  # anonymous: no push
    skopeo_copy(f"oci:{tiny_layout}:1", reg.ref("library/tiny:1"), dest_creds="alice:wonderland")
    pushes = [r for r in server.requests if r.user == "alice"]
    assert pushes and all(r.authenticated for r in pushes)
    assert any("repository:library/tiny:pull,push" in r.scopes for r in pushes)
    assert "wonderland" not in repr(server.requests)

    # A pull-only user can pull, but push is silently dropped from the token so the push fails.
    skopeo_copy(reg.ref("library/tiny:1"), f"oci:{tmp_path / 'reader'}:1", src_creds="reader:readonly")
    with pytest.raises(ToolError, match="(?i)denied|unauthorized"):
        skopeo_copy(f"oci:{tiny_layout}:1", reg.ref("library/other:1"), dest_creds="reader:readonly")
    reader_grants = [r.granted for r in server.requests if r.user == "reader"]
    assert reader_grants and all(a["actions"] == ["pull"] for g in reader_grants for a in g)

    # Anonymous pull of library/* works, with an anonymous token granting pull only.
    before = len(server.requests)
    info = skopeo_inspect(reg.ref("library/tiny:1"))
    assert info["Layers"] == [layer["digest"] for layer in layout_manifest(tiny_layout, "1")["layers"]]
    skopeo_copy(reg.ref("library/tiny:1"), f"oci:{tmp_path / 'anonymous'}:1")
    anonymous = list(server.requests[before:])
    assert anonymous and not any(r.authenticated for r in anonymous)
    assert all(r.granted == [{"type": "repository", "name": "library/tiny", "actions": ["pull"]}] for r in anonymous)
    anonymous_token = server.fetch_token(["repository:library/tiny:pull,push"])
    assert decode_jwt(anonymous_token)[1]["access"] == [{"type": "repository", "name": "library/tiny", "actions": ["pull"]}]
    manifest = requests.get(
        f"{reg.url}/v2/library/tiny/manifests/1",
        timeout=5,
        headers={"Authorization": f"Bearer {anonymous_token}", "Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert manifest.status_code == 200 and manifest.json() == layout_manifest(tiny_layout, "1")

    # Outside the public prefixes anonymous users get nothing; bad passwords get a 401.
    assert decode_jwt(server.fetch_token(["repository:private/tiny:pull"]))[1]["access"] == []
    with pytest.raises(TokenRefused) as refused:
        server.fetch_token(["repository:library/tiny:pull"], username="alice", password="nope")
    assert refused.value.status == 401
    assert server.requests[-1].authenticated is False and server.requests[-1].user is None


def test_token_signature_needs_a_trusted_key(token_registry: Registry, token_server: TokenServer, tmp_path: Path) -> None:
    catalog = [{"type": "registry", "name": "catalog", "actions": ["*"]}]

    def status(token: str) -> int:
        return requests.get(f"{token_registry.url}/v2/_catalog", timeout=5, headers={"Authorization": f"Bearer {token}"}).status_code

    assert status(token_server.make_token("alice", catalog)) == 200
    assert status(token_server.make_token("alice", catalog, kid=False)) == 200  # x5c alone
    assert status(token_server.make_token("alice", catalog, x5c=False)) == 200  # libtrust kid alone
    assert status(token_server.make_token("alice", catalog, x5c=False, kid=False)) == 401
    assert status(token_server.make_token("alice", catalog, audience="elsewhere")) == 401
    with TokenServer(tmp_path / "stranger") as stranger:
        assert status(stranger.make_token("alice", catalog)) == 401


def test_extra_layer_writes_whiteouts(tmp_path: Path, registry: Registry) -> None:
    rootfs = make_tiny_rootfs(tmp_path / "rootfs")

    def edit(tree: Path) -> None:
        (tree / "etc/motd").unlink()
        (tree / "usr/bin/hi").unlink()
        (tree / "var/empty").rmdir()
        (tree / "etc/added").write_text("new in layer two\n")

    layout = tmp_path / "layout"
    build_image_layout(rootfs, layout, "2", extra_layer=edit)
    layers = layout_manifest(layout, "2")["layers"]
    assert len(layers) == 2
    first, second = (layer_members(layout, layer) for layer in layers)
    assert "etc/motd" in first and "etc/added" not in first
    whiteouts = {name for name in second if ".wh." in os.path.basename(name)}
    assert whiteouts == {"etc/.wh.motd", "usr/bin/.wh.hi", "var/.wh.empty"}
    assert second["etc/added"].isfile()
    assert "etc/hostname" not in second  # unchanged files stay in the first layer

    skopeo_copy(f"oci:{layout}:2", registry.ref("library/tiny:2"))
    assert len(skopeo_inspect(registry.ref("library/tiny:2"))["Layers"]) == 2


@pytest.mark.rootfs
@pytest.mark.slow
def test_fat_rootfs_layout_with_an_extra_layer(fat_root: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_image_layout(fat_root, layout, "fat", extra_layer=lambda tree: (tree / "etc/os-release").unlink(missing_ok=True))
    layers = layout_manifest(layout, "fat")["layers"]
    assert len(layers) == 2
    assert "etc/.wh.os-release" in layer_members(layout, layers[1])
