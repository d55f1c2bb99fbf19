"""The hostile corpus: layers, root filesystems, ELF files, profiles and registries crafted to make
a naive tool escape its root, read host files, crash, or hang. Each case has its expected outcome:
a clean refusal (exit code and a one-line message naming the culprit) or a documented safe
handling. A canary in the test's HOME and in the host's /etc must never show up anywhere."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import secrets
import struct
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.errors import SourceError
from distill.reference import parse_reference
from distill.registry.client import RegistryClient
from distill.registry.options import RegistryOptions

from helpers.cli import Result, run_distill
from helpers.layouts import member, tree_members, write_layout
from helpers.tree import TRIPLET, Tree

CANARY = "distill-canary-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def canaries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Canary files in a HOME the runs use and in the host's real /etc; removed afterwards."""
    home = tmp_path_factory.mktemp("home")
    (home / "canary").write_text(CANARY + "\n")
    host_file = Path(f"/etc/{CANARY}")
    host_file.write_text(CANARY + "\n")
    try:
        yield {"HOME": str(home), "host_file": str(host_file)}
        assert host_file.read_text() == CANARY + "\n", "the host's canary file was changed"
    finally:
        host_file.unlink()


def no_canary(text: str) -> None:
    """Checked on every run's output, so each test guards the canary on its own, in any order."""
    assert CANARY + "\n" not in text, "a host file's content reached distill's output"


def hostile(*args: str, env: dict[str, str] | None = None) -> Result:
    result = run_distill(*args, env=env)
    no_canary(result.stdout)
    no_canary(result.stderr)
    assert "Traceback" not in result.stderr
    return result


def error(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("distill: error: ")]
    assert lines, result.stderr
    return lines[0]


def outputs_of(path: Path) -> None:
    """Every file distill wrote, checked for the canary."""
    if path.is_dir():
        for item in path.rglob("*"):
            if item.is_file() and not item.is_symlink():
                no_canary(item.read_bytes().decode("latin-1"))
    elif path.is_file():
        data = path.read_bytes()
        no_canary((gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("latin-1"))


@pytest.fixture
def glibc_tree(tmp_path: Path) -> Tree:
    tree = Tree(tmp_path / "root")
    tree.app()
    return tree


def layout_with(tmp_path: Path, tree: Tree, extra: list[list[tuple[tarfile.TarInfo, bytes | None]]]) -> Path:
    return write_layout(tmp_path / "layout", [tree_members(tree.root), *extra])


# -- layers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([member("../escape", data=b"x")], "climbs out of the root with '..'"),
        ([member("usr/../../escape", data=b"x")], "climbs out of the root with '..'"),
        ([member("hard", tarfile.LNKTYPE, link="../../etc/shadow")], "climbs out of the root with '..'"),
        ([member("hard", tarfile.LNKTYPE, link="/etc/shadow")], "hard link /hard -> /etc/shadow: no such regular file in the image"),
        ([member(".wh..", data=b"")], "names no entry"),
        ([member("etc/passwd/.wh..wh..opq", data=b"")], "opaque whiteout in /etc/passwd, which is not a directory"),
    ],
    ids=["dotdot", "nested-dotdot", "hardlink-dotdot", "hardlink-missing", "whiteout-dotdot", "opaque-under-file"],
)
def test_hostile_layer_members_are_refused(glibc_tree: Tree, tmp_path: Path, members: list, message: str) -> None:  # type: ignore[type-arg]
    layout = layout_with(tmp_path, glibc_tree, [members])
    result = hostile("/usr/bin/app", "--from", f"oci:{layout}:latest", "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 3
    assert message in error(result)
    assert not (tmp_path / "out").exists()


def test_a_file_written_through_a_symlink_stays_inside_the_image(glibc_tree: Tree, tmp_path: Path, canaries: dict[str, str]) -> None:
    layout = layout_with(
        tmp_path,
        glibc_tree,
        [
            [member("evil", tarfile.SYMTYPE, link="../../../../../../etc")],
            [
                member(f"evil/{CANARY}", data=b"from the layer\n"),
                member("abs", tarfile.SYMTYPE, link="/etc"),
                member("abs/written-via-absolute-link", data=b"inside\n"),
            ],
        ],
    )
    out = tmp_path / "out"
    result = hostile(
        "/usr/bin/app",
        "--from",
        f"oci:{layout}:latest",
        "--path",
        f"/etc/{CANARY}",
        "--path",
        "/etc/written-via-absolute-link",
        "--out",
        f"rootfs:{out}",
        env={"HOME": canaries["HOME"]},
    )
    assert result.code == 0, result.stderr
    assert (out / "etc" / CANARY).read_text() == "from the layer\n"  # the image's /etc, not the host's
    assert (out / "etc/written-via-absolute-link").read_text() == "inside\n"
    assert Path(canaries["host_file"]).read_text() == CANARY + "\n"  # the host file is untouched and unread
    outputs_of(out)


def test_absolute_member_names_stay_inside_the_image(glibc_tree: Tree, tmp_path: Path, canaries: dict[str, str]) -> None:
    layout = layout_with(tmp_path, glibc_tree, [[member(f"/etc/{CANARY}", data=b"layer copy\n"), member("//srv//x", data=b"x")]])
    out = tmp_path / "out"
    result = hostile(
        "/usr/bin/app", "--from", f"oci:{layout}:latest", "--path", f"/etc/{CANARY}", "--path", "/srv/x", "--out", f"rootfs:{out}"
    )
    assert result.code == 0, result.stderr
    assert (out / "etc" / CANARY).read_text() == "layer copy\n" and (out / "srv/x").read_text() == "x"
    assert Path(canaries["host_file"]).read_text() == CANARY + "\n"
    outputs_of(out)


def test_device_nodes_fifos_and_duplicates_are_handled(glibc_tree: Tree, tmp_path: Path) -> None:
    layout = layout_with(
        tmp_path,
        glibc_tree,
        [
            [
                member("dev/evil", tarfile.CHRTYPE),
                member("run/fifo", tarfile.FIFOTYPE),
                member("etc/dup", data=b"first"),
                member("etc/dup", data=b"second"),
            ]
        ],
    )
    out = tmp_path / "out"
    result = hostile(
        "/usr/bin/app",
        "--from",
        f"oci:{layout}:latest",
        "--path",
        "/dev/**",
        "--path",
        "/run/**",
        "--path",
        "/etc/dup",
        "--out",
        f"rootfs:{out}",
    )
    assert result.code == 0, result.stderr
    assert "/dev/evil: not shipped: a char" in result.stderr and "/run/fifo: not shipped: a fifo" in result.stderr
    assert not (out / "dev/evil").exists() and (out / "etc/dup").read_text() == "second"


def test_an_opaque_root_hides_every_lower_layer(glibc_tree: Tree, tmp_path: Path) -> None:
    layout = layout_with(tmp_path, glibc_tree, [[member(".wh..wh..opq", data=b""), member("only", data=b"x")]])
    result = hostile("/usr/bin/app", "--from", f"oci:{layout}:latest", "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 2
    assert "/usr/bin/app not found in" in error(result)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (["x"], "$.config: expected an object, got a list"),
        ({"Env": "LD_LIBRARY_PATH=/x"}, "$.config.Env: expected a list, got a string"),
        ({"Entrypoint": [1]}, "$.config.Entrypoint[0]: expected a string, got a number"),
        ({"Labels": ["a"]}, "$.config.Labels: expected an object, got a list"),
    ],
    ids=["not-object", "env-string", "entrypoint-number", "labels-list"],
)
def test_a_malformed_config_section_is_refused_before_any_layer_is_read(
    glibc_tree: Tree, tmp_path: Path, section: object, message: str
) -> None:
    layout = write_layout(tmp_path / "layout", [tree_members(glibc_tree.root)], config={"config": section})
    out = tmp_path / "out"
    result = hostile("/usr/bin/app", "--from", f"oci:{layout}:latest", "--out", f"oci:{out}:x")
    assert result.code == 3
    assert message in error(result) and "fix or rebuild the image" in error(result)
    assert not out.exists()


def test_a_member_claiming_a_huge_size_is_refused(glibc_tree: Tree, tmp_path: Path) -> None:
    info = tarfile.TarInfo("big")
    info.size = 4
    header = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    header[124:136] = b"77777777777\0"  # 8 GiB, in a 1.5 KiB layer
    header[148:156] = b"        "
    header[148:155] = f"{sum(header):06o}\0".encode()
    raw = bytes(header) + b"data" + b"\0" * 508 + b"\0" * 1024
    layout = write_layout(tmp_path / "layout", [tree_members(glibc_tree.root)])
    layout = _replace_last_layer(layout, raw)
    result = hostile("/usr/bin/app", "--from", f"oci:{layout}:latest", "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 3
    assert "claims 8589934591 bytes past the end of the layer" in error(result)


def _replace_last_layer(layout: Path, raw: bytes, compressed: bytes | None = None) -> Path:
    """Swap the last layer of a handcrafted layout for `raw` (stored as given in `compressed`)."""
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    config_path = layout / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]
    config = json.loads(config_path.read_text())
    blob = compressed if compressed is not None else gzip.compress(raw)
    digest = hashlib.sha256(blob).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(blob)
    manifest["layers"][-1].update({"digest": f"sha256:{digest}", "size": len(blob)})
    config["rootfs"]["diff_ids"][-1] = "sha256:" + hashlib.sha256(raw).hexdigest()
    for path, document in ((config_path, config), (manifest_path, manifest)):
        data = json.dumps(document).encode()
        new = hashlib.sha256(data).hexdigest()
        (layout / "blobs/sha256" / new).write_bytes(data)
        if path is config_path:
            manifest["config"].update({"digest": f"sha256:{new}", "size": len(data)})
        else:
            index["manifests"][0].update({"digest": f"sha256:{new}", "size": len(data)})
    (layout / "index.json").write_text(json.dumps(index))
    return layout


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_truncated_compressed_layer_is_refused(glibc_tree: Tree, tmp_path: Path, compression: str) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info, data in tree_members(glibc_tree.root):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    if compression == "gzip":
        whole = gzip.compress(raw.getvalue())
    else:
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        whole = zstd.compress(raw.getvalue())
    layout = write_layout(tmp_path / "layout", [tree_members(glibc_tree.root)])
    _replace_last_layer(layout, raw.getvalue(), whole[: len(whole) // 2])
    if compression == "zstd":
        manifest_file = _manifest_file(layout)
        manifest = json.loads(manifest_file.read_text())
        assert manifest["layers"][-1]["mediaType"].endswith("gzip")  # sniffed below: the bytes say zstd
    result = hostile("/usr/bin/app", "--from", f"oci:{layout}:latest", "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 3
    assert "corrupt or truncated" in error(result)


def _manifest_file(layout: Path) -> Path:
    index = json.loads((layout / "index.json").read_text())
    return layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]


@pytest.mark.slow
def test_a_100000_entry_layer_is_indexed(glibc_tree: Tree, tmp_path: Path) -> None:
    many = [member("many", tarfile.DIRTYPE, mode=0o755)] + [member(f"many/f{n}", data=b"") for n in range(100_000)]
    layout = layout_with(tmp_path, glibc_tree, [many])
    result = hostile("/usr/bin/app", "--from", f"oci:{layout}:latest", "--out", f"rootfs:{tmp_path / 'out'}", "-q")
    assert result.code == 0, result.stderr
    assert (tmp_path / "out/usr/bin/app").is_file()


# -- root filesystems -------------------------------------------------------------------------------


def test_symlink_loops_and_long_chains_are_refused(glibc_tree: Tree, tmp_path: Path) -> None:
    glibc_tree.symlink("/usr/bin/loop-a", "loop-b")
    glibc_tree.symlink("/usr/bin/loop-b", "loop-a")
    for n in range(50):
        glibc_tree.symlink(f"/usr/bin/chain{n}", f"chain{n + 1}")
    glibc_tree.copy(glibc_tree.host("/usr/bin/app"), "/usr/bin/chain50")
    for binary in ("/usr/bin/loop-a", "/usr/bin/chain0"):
        result = hostile(binary, "--from", str(glibc_tree.root), "--out", f"rootfs:{tmp_path / 'out'}")
        assert result.code == 3
        assert f"{binary}: too many levels of symbolic links" in error(result)
    assert not (tmp_path / "out").exists()


def test_links_to_host_files_resolve_inside_the_root(glibc_tree: Tree, tmp_path: Path, canaries: dict[str, str]) -> None:
    glibc_tree.symlink("/etc/canary-link", canaries["host_file"])
    glibc_tree.symlink("/usr/bin/self", "/proc/self/exe")
    glibc_tree.symlink("/home-link", canaries["HOME"])
    out = tmp_path / "out"
    result = hostile(
        "/usr/bin/app",
        "--from",
        str(glibc_tree.root),
        "--path",
        "/etc/canary-link",
        "--path",
        "/home-link",
        "--out",
        f"rootfs:{out}",
        "--json",
        env={"HOME": canaries["HOME"]},
    )
    assert result.code == 0, result.stderr
    assert (
        f"command line: --path /etc/canary-link: /etc/canary-link is a symlink to {canaries['host_file']}, which the source does not have"
    ) in result.stderr
    assert not (out / canaries["host_file"].lstrip("/")).exists()
    outputs_of(out)
    refused = hostile("/usr/bin/self", "--from", str(glibc_tree.root), "--out", f"rootfs:{tmp_path / 'o2'}")
    assert refused.code == 2 and "/usr/bin/self is not a regular file" in error(refused)
    copy = tmp_path / "copy.yaml"
    copy.write_text("schema: distill/v1\nbinaries: [/usr/bin/app]\npaths:\n  /etc/stolen: {copy: /etc/canary-link}\n")
    stolen = hostile(str(copy), "--from", str(glibc_tree.root), "--out", f"rootfs:{tmp_path / 'o3'}")
    assert stolen.code == 2 and "/etc/canary-link is not a file in rootfs:" in error(stolen)


# -- ELF files --------------------------------------------------------------------------------------


def _patched(source: Path, target: Path, edit) -> None:  # type: ignore[no-untyped-def]
    data = bytearray(source.read_bytes())
    edit(data)
    target.write_bytes(bytes(data))
    target.chmod(0o755)


def _dynamic_tag_offset(path: Path, tag: int) -> int:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as stream:
        dynamic = ELFFile(stream).get_section_by_name(".dynamic")
        start, size = dynamic["sh_offset"], dynamic["sh_size"]
        stream.seek(start)
        raw = stream.read(size)
    for at in range(0, size, 16):
        if struct.unpack_from("<q", raw, at)[0] == tag:
            return start + at
    raise AssertionError("no such tag")


@pytest.mark.parametrize("case", ["truncated", "segments-past-end", "strtab-nowhere", "magic-only"])
def test_broken_elf_files_are_refused_by_name(glibc_tree: Tree, tmp_path: Path, case: str) -> None:
    app = glibc_tree.host("/usr/bin/app")
    broken = glibc_tree.host("/usr/bin/broken")
    if case == "truncated":
        broken.write_bytes(app.read_bytes()[:40])
    elif case == "segments-past-end":
        _patched(app, broken, lambda d: struct.pack_into("<Q", d, 32, 0x7FFFFFFF0000))  # e_phoff
    elif case == "strtab-nowhere":
        at = _dynamic_tag_offset(app, 5)  # DT_STRTAB
        _patched(app, broken, lambda d: struct.pack_into("<Q", d, at + 8, 0xDEADBEEF000))
    else:
        broken.write_bytes(b"\x7fELF" + b"not really" * 20)
    broken.chmod(0o755)
    result = hostile("/usr/bin/broken", "--from", str(glibc_tree.root), "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 3
    assert "/usr/bin/broken:" in error(result)


@pytest.mark.timeout(60)  # the hang guard: a loop that follows the cycle forever fails here, not at the suite's limit
def test_cyclic_needed_terminates(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "root")
    tree.glibc()
    lib = f"/usr/lib/{TRIPLET}"
    tree.lib(f"{lib}/libb.so.1", soname="libb.so.1")
    tree.lib(f"{lib}/liba.so.1", soname="liba.so.1", needs=[f"{lib}/libb.so.1"])
    tree.lib(f"{lib}/libb.so.1", soname="libb.so.1", needs=[f"{lib}/liba.so.1"])  # now b needs a, and a needs b
    tree.prog("/usr/bin/app", needs=[f"{lib}/liba.so.1"])
    result = hostile("/usr/bin/app", "--from", str(tree.root), "--out", f"rootfs:{tmp_path / 'out'}", "-q", "--json")
    assert result.code == 0, result.stderr
    assert (tmp_path / f"out{lib}/liba.so.1").is_file() and (tmp_path / f"out{lib}/libb.so.1").is_file()
    edges = [(link["requester"], link["name"]) for closure in json.loads(result.stdout)["closures"] for link in closure["links"]]
    assert len(edges) == len(set(edges)), edges  # each DT_NEEDED edge once: the cycle was cut, not followed
    assert {name for _, name in edges} >= {"liba.so.1", "libb.so.1"}


@pytest.mark.slow
def test_ten_thousand_needed_entries(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "root")
    tree.glibc()
    build = tmp_path / "build"
    build.mkdir()
    (build / "l.c").write_text("int f(void) { return 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(build / "base.so"), str(build / "l.c")], check=True)
    for n in range(10_000):
        (build / f"lib{n}.so").symlink_to("base.so")
    (build / "m.c").write_text("int main(void) { return 0; }\n")
    tree.mkdir("/usr/bin")
    subprocess.run(
        [
            "gcc",
            "-o",
            str(tree.host("/usr/bin/many")),
            str(build / "m.c"),
            "-L",
            str(build),
            "-Wl,--no-as-needed",
            *[f"-l:lib{n}.so" for n in range(10_000)],
        ],
        check=True,
        capture_output=True,
    )
    result = hostile("/usr/bin/many", "--from", str(tree.root), "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 4
    assert "lib0.so (needed by /usr/bin/many) is not in the output" in error(result)
    assert "distill: error: ... and 9980 more (10000 in all; --json lists every one)" in result.stderr
    assert len(result.stderr.splitlines()) < 40


# -- profiles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('schema: distill/v1\na: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n', "aliases are not allowed in profiles"),
        ("schema: distill/v1\nbinaries: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply to be a profile"),
        ("schema: distill/v1\nextends: [/etc/passwd]\n", "is absolute; use a built-in name or a path relative to this file"),
        ("schema: distill/v1\npaths:\n  /etc/x: {copy: /../../etc/shadow}\n", "is not a clean path"),
    ],
    ids=["billion-laughs", "deep-nesting", "absolute-extends", "copy-escape"],
)
def test_hostile_profiles_are_refused(glibc_tree: Tree, tmp_path: Path, text: str, message: str) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(text)
    result = hostile(str(profile), "--from", str(glibc_tree.root), "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 2
    assert message in error(result)


def test_a_10_mb_profile_is_refused(glibc_tree: Tree, tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("schema: distill/v1\n" + "#" * (10 << 20) + "\n")
    result = hostile(str(profile), "--from", str(glibc_tree.root), "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 2 and "larger than 1024 KiB" in error(result)


# -- registries (a fake server: a real registry does not misbehave on demand) -----------------------


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    mode = "redirect-loop"

    def do_GET(self) -> None:
        if self.mode == "redirect-loop":
            self.send_response(307)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.mode == "always-500":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.mode == "slow":
            time.sleep(3)
        elif self.mode == "wrong-type":
            body = json.dumps({"schemaVersion": 2, "mediaType": "application/x-not-an-image"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-not-an-image")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.mode == "huge":
            self.send_response(200)
            self.send_header("Content-Length", str(50 << 20))
            self.end_headers()
            self.wfile.write(b"{" * 4096)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def misbehaving() -> Iterator[tuple[http.server.HTTPServer, str]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("redirect-loop", "too many redirects"),
        ("always-500", "answered HTTP 500"),
        ("slow", "no answer within 0.5 s"),
        ("wrong-type", "unsupported manifest media type 'application/x-not-an-image'"),
        ("huge", "refusing more than 4 MiB"),
    ],
)
def test_misbehaving_registries(misbehaving: tuple[http.server.HTTPServer, str], mode: str, message: str) -> None:
    _Misbehaving.mode = mode
    _, host = misbehaving
    client = RegistryClient(parse_reference(f"{host}/x/y:1"), RegistryOptions(timeout=0.5))
    client.retry_sleep = lambda seconds: None
    with pytest.raises(SourceError) as caught:
        from distill.oci.image import parse_manifest

        data, media_type = client.get_manifest("x/y", "1")
        parse_manifest(data, "x/y:1", media_type)
    assert message in caught.value.message
