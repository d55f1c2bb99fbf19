"""Every platform of an image: Debian 12 amd64, arm64 and ppc64el roots (unpacked by mmdebstrap,
nothing run) under one image index, distilled with `--platform all`, pushed to a real registry,
read back by skopeo, and each platform's output run: natively, or under qemu-user-static."""

from __future__ import annotations

import http.client
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import fat_rootfs
from helpers.cli import run_distill
from helpers.platforms import ARCHES, index_layout, platform_name, platform_root, qemu
from helpers.probes import run_probe
from helpers.registry import Registry, skopeo_copy, skopeo_inspect

pytestmark = [pytest.mark.rootfs, pytest.mark.slow]

FOREIGN = ("amd64", "arm64", "ppc64el")
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry holding the three-platform source index as src/nginx:multi."""
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        skopeo_copy(f"oci:{index_layout(FOREIGN)}:latest", reg.ref("src/nginx:multi"), extra_args=["--all"])
        yield reg


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def distill_json(*args: str) -> dict:  # type: ignore[type-arg]
    result = run_distill(*args, "--json", "-q", env=EPOCH)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_every_platform_is_distilled_pushed_copied_and_runs(registry: Registry, cache: Path, tmp_path: Path) -> None:
    pushed = f"docker://{registry.host}/distilled/nginx:all"
    report = distill_json(
        "nginx",
        "--binary",
        "/usr/bin/jq",
        "--from",
        f"{registry.host}/src/nginx:multi",
        "--platform",
        "all",
        "--out",
        pushed,
        "--out",
        f"oci:{tmp_path / 'layout'}:nginx",
    )
    assert [p["platform"] for p in report["platforms"]] == [platform_name(a) for a in FOREIGN]

    raw = skopeo_inspect(pushed, raw=True)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"] for m in raw["manifests"]] == [m["platform"] for m in report["index"]["manifests"]]
    assert [m["digest"] for m in raw["manifests"]] == [p["image"]["manifest_digest"] for p in report["platforms"]]
    for platform in report["platforms"]:  # each platform's own closure, from its own triplet
        arch = next(a for a in FOREIGN if platform_name(a) == platform["platform"])
        libs = {e["path"] for e in platform["entries"] if "/libjq.so" in e["path"]}
        assert libs and all(f"/{ARCHES[arch][3]}/" in path for path in libs), libs

    copy = tmp_path / "copy"
    skopeo_copy(pushed, f"oci:{copy}:all", extra_args=["--all"])
    copied = json.loads((copy / "index.json").read_text())["manifests"][0]
    assert copied["digest"] == report["index"]["digest"]  # skopeo copied the index byte for byte

    for arch in FOREIGN:
        oci_arch, variant, _, _ = ARCHES[arch]
        one = tmp_path / f"one-{arch}"
        override = ["--override-arch", oci_arch, *(["--override-variant", variant] if variant else [])]
        skopeo_copy(pushed, f"oci:{one}:x", extra_args=override)
        bundle = tmp_path / f"bundle-{arch}"
        subprocess.run(["umoci", "unpack", "--image", f"{one}:x", str(bundle)], check=True, capture_output=True)
        config = skopeo_inspect(f"oci:{one}:x", config=True)
        assert config["architecture"] == oci_arch
        result = run_probe("platform", str(bundle / "rootfs"), qemu(arch) or "-")
        assert result["jq"][:2] == [0, '[1,"two",{"three":3}]'], (arch, result)
        if arch == "arm64":
            assert result["jq_L"][:2] == [0, '[1,"two",{"three":3}]'], result
        assert result["nginx_t"][0] == 0, (arch, result)
        assert result["started"] and result["http"] == 200 and result["welcome"], (arch, result)


def test_same_inputs_give_the_same_index_and_manifests(registry: Registry, cache: Path, tmp_path: Path) -> None:
    source = f"oci:{index_layout(FOREIGN)}:latest"
    first = distill_json(
        "/usr/bin/jq", "--from", source, "--platform", "linux/arm64,linux/amd64", "--out", f"oci-archive:{tmp_path / 'a.tar'}:jq"
    )
    second = distill_json(
        "/usr/bin/jq", "--from", source, "--platform", "linux/arm64,linux/amd64", "--out", f"oci-archive:{tmp_path / 'b.tar'}:jq"
    )
    assert first["index"] == second["index"]
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert [m["platform"]["architecture"] for m in first["index"]["manifests"]] == ["arm64", "amd64"]  # the order asked for
    digests = [p["image"]["manifest_digest"] for p in first["platforms"]]
    assert len(set(digests)) == 2 and digests == [m["digest"] for m in first["index"]["manifests"]]
    raw = skopeo_inspect(f"oci-archive:{tmp_path / 'a.tar'}:jq", raw=True)
    assert [m["digest"] for m in raw["manifests"]] == digests
    again = distill_json(
        "/usr/bin/jq",
        "--from",
        f"oci-archive:{tmp_path / 'a.tar'}:jq",
        "--platform",
        "linux/arm64",
        "--out",
        f"rootfs:{tmp_path / 'arm64'}",
    )  # distill reads its own index back, one platform
    assert any(e["path"].startswith("/lib/aarch64-linux-gnu/") for e in again["entries"])


def test_a_platform_that_fails_its_checks_fails_the_run_naming_it(cache: Path, tmp_path: Path) -> None:
    source = f"oci:{index_layout(('amd64', 'arm64'), broken='arm64')}:latest"
    out = tmp_path / "out"
    result = run_distill("/usr/bin/jq", "--from", source, "--platform", "all", "--out", f"oci:{out}", env=EPOCH)
    assert result.code == 4, result.stderr
    assert "linux/arm64: " in result.stderr and "libonig.so.5" in result.stderr
    assert "linux/amd64" not in result.stderr
    assert not out.exists()
    allowed = run_distill("/usr/bin/jq", "--from", source, "--platform", "all", "--out", f"oci:{out}", "--allow-missing", "-q", env=EPOCH)
    assert allowed.code == 0, allowed.stderr
    assert "warning: linux/arm64: " in allowed.stderr and "libonig.so.5" in allowed.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["mediaType"] == "application/vnd.oci.image.index.v1+json"


@pytest.mark.parametrize("out", ["docker-archive:{tmp}/x.tar", "docker-daemon:x:1", "rootfs:{tmp}/root"])
def test_one_platform_sinks_refuse_several(out: str, tmp_path: Path) -> None:
    dest = out.format(tmp=tmp_path)
    result = run_distill("/usr/bin/jq", "--from", f"oci:{tmp_path}/nowhere", "--platform", "all", "--out", dest)
    assert result.code == 2, result.stderr
    assert "holds one platform" in result.stderr and dest.split(":")[0] in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["explain"], ["--sbom", "{tmp}/sbom.json", "--out", "oci:{tmp}/out"]])
def test_explain_and_sbom_describe_one_platform(command: list[str], tmp_path: Path) -> None:
    words = [word.format(tmp=tmp_path) for word in command]
    head, tail = (words, []) if words == ["explain"] else ([], words)
    result = run_distill(*head, "/usr/bin/jq", "--from", f"oci:{tmp_path}/nowhere", "--platform", "all", *tail)
    assert result.code == 2 and "one platform" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_directory_source_has_one_platform(tmp_path: Path) -> None:
    result = run_distill("/usr/bin/jq", "--from", str(tmp_path), "--platform", "linux/amd64,linux/arm64", "--out", f"oci:{tmp_path}/out")
    assert result.code == 2 and "one platform" in result.stderr, result.stderr


class _RefusesOciIndex(http.server.BaseHTTPRequestHandler):
    """A proxy in front of the real registry that refuses the OCI index media type with 400
    MANIFEST_INVALID, as registries that predate OCI do. A fake because docker-registry 2.8 accepts
    both and has no setting to refuse one; every other request reaches the real registry."""

    upstream = ""
    refused: list[str] = []

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if (
            self.command == "PUT"
            and "/manifests/" in self.path
            and self.headers.get("Content-Type") == "application/vnd.oci.image.index.v1+json"
        ):
            _RefusesOciIndex.refused.append(self.path)
            data = b'{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}'
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        connection = http.client.HTTPConnection(self.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        connection.request(self.command, self.path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        connection.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


def test_a_registry_refusing_the_oci_index_gets_a_docker_manifest_list(registry: Registry, tmp_path: Path) -> None:
    _RefusesOciIndex.upstream, _RefusesOciIndex.refused = registry.host, []
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusesOciIndex)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        target = f"127.0.0.1:{proxy.server_address[1]}/distilled/jq:list"
        report = distill_json(
            "/usr/bin/jq",
            "--from",
            f"oci:{index_layout(FOREIGN)}:latest",
            "--platform",
            "linux/amd64,linux/arm64",
            "--out",
            f"docker://{target}",
        )
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert _RefusesOciIndex.refused == ["/v2/distilled/jq/manifests/list"]
    assert "as a Docker manifest list" in report["written"][0]
    raw = skopeo_inspect(f"docker://{registry.host}/distilled/jq:list", raw=True)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert raw["manifests"] == report["index"]["manifests"]  # the same manifests, platforms and order
    skopeo_copy(f"docker://{registry.host}/distilled/jq:list", f"oci:{tmp_path / 'copy'}:x", extra_args=["--all"])


# -- portable profiles -----------------------------------------------------------------------------

PORTABLE = """schema: distill/v1
name: portable
extends: [glibc]
binaries: [/usr/bin/jq]
paths:
  /usr/lib/$MULTIARCH/gconv/gconv-modules: {}
  /usr/$LIB/gconv/UTF-16.so: {}
"""


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_multiarch_tokens_expand_for_each_architecture(arch: str, tmp_path: Path) -> None:
    profile = tmp_path / "portable.yaml"
    profile.write_text(PORTABLE)
    report = distill_json(str(profile), "--from", str(platform_root(arch)), "--out", f"rootfs:{tmp_path / 'out'}")
    triplet = ARCHES[arch][3]
    paths = {e["path"] for e in report["entries"]}
    assert f"/usr/lib/{triplet}/gconv/gconv-modules" in paths and f"/usr/lib/{triplet}/gconv/UTF-16.so" in paths
    assert not [p for p in paths if any(f"/{t}/" in p for a, (_, _, _, t) in ARCHES.items() if a != arch)]


def test_tokens_expand_per_platform_of_an_index(tmp_path: Path) -> None:
    profile = tmp_path / "portable.yaml"
    profile.write_text(PORTABLE)
    report = distill_json(
        str(profile), "--from", f"oci:{index_layout(FOREIGN)}:latest", "--platform", "all", "--out", f"oci:{tmp_path / 'out'}"
    )
    for platform, arch in zip(report["platforms"], FOREIGN, strict=True):
        assert f"/usr/lib/{ARCHES[arch][3]}/gconv/gconv-modules" in {e["path"] for e in platform["entries"]}


def test_an_x86_64_path_on_arm64_is_refused_with_the_fix(tmp_path: Path) -> None:
    profile = tmp_path / "x86.yaml"
    profile.write_text(PORTABLE.replace("$MULTIARCH", "x86_64-linux-gnu"))
    result = run_distill(str(profile), "--from", str(platform_root("arm64")), "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 2, result.stderr
    assert "/usr/lib/x86_64-linux-gnu/gconv/gconv-modules is a path of amd64 images" in result.stderr
    assert "arm64" in result.stderr and "$MULTIARCH" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_token_is_a_profile_error(tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text(PORTABLE.replace("$MULTIARCH", "$ARCH"))
    result = run_distill(str(profile), "--from", str(tmp_path), "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 2 and "unknown token $ARCH" in result.stderr and "$MULTIARCH" in result.stderr, result.stderr


# -- musl ------------------------------------------------------------------------------------------

GREET = 'const char *greet(void) { return "hello from musl"; }\n'
HELLO = "#include <stdio.h>\nconst char *greet(void);\nint main(void) { puts(greet()); return 0; }\n"


def test_a_musl_root_is_distilled_and_runs(tmp_path: Path) -> None:
    """Debian's musl runtime (unpacked) plus a library and a program built with musl-gcc here."""
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", f"{fat_rootfs(('musl',), variant='extract')}/.", str(root)], check=True)
    libdir = root / "usr/lib/x86_64-linux-musl"  # listed in Debian's /etc/ld-musl-x86_64.path, not a musl default
    libdir.mkdir(parents=True, exist_ok=True)
    (tmp_path / "greet.c").write_text(GREET)
    (tmp_path / "hello.c").write_text(HELLO)
    subprocess.run(
        ["musl-gcc", "-shared", "-fPIC", "-Wl,-soname,libgreet.so.1", "-o", str(libdir / "libgreet.so.1"), str(tmp_path / "greet.c")],
        check=True,
    )
    (root / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["musl-gcc", "-o", str(root / "usr/local/bin/hello"), str(tmp_path / "hello.c"), str(libdir / "libgreet.so.1")], check=True
    )
    out = tmp_path / "out"
    report = distill_json("/usr/local/bin/hello", "--from", str(root), "--out", f"rootfs:{out}")
    closure = report["closures"][0]
    assert closure["loader"] == "musl"
    greet = next(link for link in closure["links"] if link["name"] == "libgreet.so.1")
    assert greet["path"] == "/usr/lib/x86_64-linux-musl/libgreet.so.1" and "ld-musl-x86_64.path" in greet["detail"]
    paths = {e["path"] for e in report["entries"]}
    assert "/etc/ld-musl-x86_64.path" in paths  # without it musl would search only its defaults and miss libgreet
    assert not [p for p in paths if "libc.so.6" in p or "x86_64-linux-gnu" in p]  # nothing of glibc
    ran = subprocess.run(["chroot", str(out), "/usr/local/bin/hello"], capture_output=True, text=True)
    assert (ran.returncode, ran.stdout) == (0, "hello from musl\n"), ran.stderr
