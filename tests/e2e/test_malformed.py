"""Malformed and crafted images: each is refused in one line with a documented exit code (never an
internal error), an existing layout and the cache stay trustworthy. Each test here failed before
the fix it guards (issue 9). Images are crafted document by document (`crafted.py`) around a real
static ELF compiled by the test; runs go through the real command line, in process for speed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from distill.errors import SourceError

from helpers.cli import Result
from helpers.crafted import Crafted, app_members, run, snapshot, tar_bytes, tiny_static_app
from helpers.tree import Tree

MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z


def refused(result: Result, code: int, *needles: str) -> str:
    """The one error line of a refused run, checked to hold every needle."""
    assert result.code == code, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("distill: error: ")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_static_app(tmp_path_factory.mktemp("app") / "app")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("DISTILL_CACHE_MAX", "DISTILL_LAYER_MAX", "SOURCE_DATE_EPOCH"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache" / "distill"


def layer(app: bytes, *extra: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    return tar_bytes([*app_members(app), *extra])


def distill_from(source: str, out: Path, *more: str) -> Result:
    return run("/usr/bin/app", "--from", source, "--out", f"rootfs:{out}", "-q", *more)


# -- 1. documents: one typed validation layer ------------------------------------------------------


def _first(key: str, value: Any) -> Any:
    def hook(index: Any) -> Any:
        index["manifests"][0][key] = value
        return index

    return hook


@pytest.mark.parametrize(
    ("hook", "needle"),
    [
        (lambda i: {**i, "manifests": 3}, "index.json: $.manifests: expected a list, got a number"),
        (_first("annotations", ["x"]), "$.manifests[0].annotations: expected an object, got a list"),
        (_first("platform", "linux/amd64"), "$.manifests[0].platform: expected an object, got a string"),
        (
            _first("annotations", {"org.opencontainers.image.ref.name": 7}),
            "$.manifests[0].annotations['org.opencontainers.image.ref.name']: expected a string, got a number",
        ),
        (_first("size", 2**70), "$.manifests[0].size: 1180591620717411303424 is outside 0..9223372036854775807"),
        (lambda i: [i], "index.json: not a JSON object"),
    ],
    ids=["manifests-number", "annotations-list", "platform-string", "refname-number", "size-huge", "index-list"],
)
def test_a_malformed_index_is_a_source_error_naming_the_json_path(app: bytes, tmp_path: Path, hook: Any, needle: str) -> None:
    layout = Crafted([layer(app)], index_hook=hook).layout(tmp_path / "layout")
    refused(distill_from(f"oci:{layout}:latest", tmp_path / "out"), 3, needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("manifest_hook", "config_hook", "needle"),
    [
        (lambda m: {**m, "layers": {"a": 1}}, None, "$.layers: expected a list, got an object"),
        (lambda m: {**m, "annotations": {"x": None}}, None, "$.annotations.x: expected a string, got null"),
        (None, lambda c: {**c, "history": [{"empty_layer": "yes"}]}, "$.history[0].empty_layer: expected true or false"),
        (None, lambda c: {**c, "rootfs": {"diff_ids": ["md5:1"]}}, "$.rootfs.diff_ids[0]: expected a sha256 digest"),
        (None, lambda c: {**c, "config": {"Env": ["\ud800"]}}, "$.config.Env[0]: a string holds an unpaired surrogate"),
        (None, lambda c: {**c, "architecture": float("nan")}, "not valid JSON (NaN is not a JSON number)"),
    ],
    ids=["layers-object", "annotation-null", "history-flag", "diff-id-md5", "lone-surrogate", "nan"],
)
def test_a_malformed_manifest_or_config_is_a_source_error(
    app: bytes, tmp_path: Path, manifest_hook: Any, config_hook: Any, needle: str
) -> None:
    layout = Crafted([layer(app)], manifest_hook=manifest_hook, config_hook=config_hook).layout(tmp_path / "layout")
    refused(distill_from(f"oci:{layout}:latest", tmp_path / "out"), 3, needle)


@pytest.mark.parametrize(
    ("hook", "needle"),
    [
        (lambda e: [{**e[0], "RepoTags": 5}], "manifest.json: $[0].RepoTags: expected a list, got a number"),
        (lambda e: [{**e[0], "Layers": "0/layer.tar"}], "manifest.json: $[0].Layers: expected a list, got a string"),
        (lambda e: [], "manifest.json: $: expected a non-empty list"),
    ],
    ids=["repotags-number", "layers-string", "empty"],
)
def test_a_malformed_docker_archive_manifest_is_a_source_error(app: bytes, tmp_path: Path, hook: Any, needle: str) -> None:
    archive = Crafted([layer(app)], archive_hook=hook).docker_archive(tmp_path / "app.tar")
    refused(run("/usr/bin/app", "--from", f"docker-archive:{archive}:app:1", "--out", f"rootfs:{tmp_path / 'out'}"), 3, needle)


def test_a_token_answer_of_the_wrong_shape_is_refused_by_the_same_layer() -> None:
    from distill.oci import documents

    with pytest.raises(SourceError, match=r"token: \$.token: expected a string, got a list"):
        documents.check_token(documents.load_object(b'{"token": ["x"]}', "token"), "token")
    with pytest.raises(SourceError, match=r"\$.expires_in: expected a finite number"):
        documents.check_token({"token": "t", "expires_in": "soon"}, "token")


# -- 1. tar-member metadata --------------------------------------------------------------------------


def pax(name: str, headers: dict[str, str], data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.pax_headers = len(data), 0o644, headers
    return info, data


@pytest.mark.parametrize(
    ("headers", "clamped"),
    [
        ({"mtime": "nan"}, "nan -> 0"),
        ({"mtime": "1e15"}, "1000000000000000.0 -> 253402300799"),
        ({"mtime": "-5"}, "-5"),
    ],
    ids=["nan", "1e15", "negative"],
)
def test_an_mtime_out_of_range_is_clamped_and_said(app: bytes, tmp_path: Path, headers: dict[str, str], clamped: str) -> None:
    layout = Crafted([layer(app, pax("etc/odd", headers), pax("etc/never-shipped", headers))]).layout(tmp_path / "layout")
    out = tmp_path / "out"
    result = run(
        "/usr/bin/app",
        "--from",
        f"oci:{layout}:latest",
        "--path",
        "/etc/odd",
        "--out",
        f"rootfs:{out}",
        "--out",
        f"layer:{tmp_path / 'layer.tar'}",
        "-q",
    )
    assert result.code == 0, result.stderr
    assert "2 member(s) with an mtime that is not finite or outside 1970..9999, clamped: /etc/odd (mtime" in result.stderr
    assert clamped in result.stderr
    assert 0 <= (out / "etc/odd").stat().st_mtime <= MAX_TIME
    with tarfile.open(tmp_path / "layer.tar") as tar:
        assert 0 <= tar.getmember("etc/odd").mtime <= MAX_TIME


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({"uid": str(2**40)}, "has uid 1099511627776, outside 0..4294967294"),
        ({"gid": "-1"}, "has gid -1, outside 0..4294967294"),
        ({"uid": "4294967295"}, "has uid 4294967295"),
        ({"path": "etc/a\x00b"}, "has a NUL byte in its name"),
    ],
    ids=["uid-2^40", "gid-negative", "uid-minus-one", "nul-in-path"],
)
def test_member_owners_and_names_out_of_range_are_refused(app: bytes, tmp_path: Path, headers: dict[str, str], needle: str) -> None:
    layout = Crafted([layer(app, pax("etc/odd", headers))]).layout(tmp_path / "layout")
    refused(distill_from(f"oci:{layout}:latest", tmp_path / "out"), 3, needle)
    assert not (tmp_path / "out").exists()


def test_a_file_member_named_dot_cannot_replace_the_root(app: bytes, tmp_path: Path) -> None:
    dot = tarfile.TarInfo(".")
    dot.size = 1
    layout = Crafted([layer(app), tar_bytes([(dot, b"x")])]).layout(tmp_path / "layout")
    refused(distill_from(f"oci:{layout}:latest", tmp_path / "out"), 3, "names the root but is a file, not a directory")


def test_a_created_time_in_year_0_is_clamped_not_a_crash(app: bytes, tmp_path: Path) -> None:
    layout = Crafted([layer(app)], config_extra={"created": "0001-01-01T00:00:00+01:00"}).layout(tmp_path / "layout")
    result = run("/usr/bin/app", "--from", f"oci:{layout}:latest", "--out", f"oci:{tmp_path / 'out'}:x", "-q")
    assert result.code == 0, result.stderr
    assert "config `created` is outside 1970..9999; the output says 1970-01-01T00:00:00Z" in result.stderr
    index = json.loads((tmp_path / "out/index.json").read_text())
    manifest = json.loads((tmp_path / "out/blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((tmp_path / "out/blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
    assert config["created"] == "1970-01-01T00:00:00Z"


# -- 1. truncated archives, dangling link members ----------------------------------------------------


def oci_archive(layout: Path, path: Path) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for item in sorted(layout.rglob("*")):
            tar.add(item, arcname=str(item.relative_to(layout)), recursive=False)
    return path


@pytest.mark.parametrize("kind", ["oci-archive", "docker-archive"])
@pytest.mark.parametrize("where", ["in-the-largest-member", "in-the-last-header"])
def test_a_truncated_archive_is_a_source_error(app: bytes, tmp_path: Path, kind: str, where: str) -> None:
    crafted = Crafted([layer(app)])
    whole = (
        oci_archive(crafted.layout(tmp_path / "layout"), tmp_path / "a.tar")
        if kind == "oci-archive"
        else crafted.docker_archive(tmp_path / "a.tar")
    )
    with tarfile.open(whole) as tar:
        members = tar.getmembers()
    largest = max(members, key=lambda m: m.size)
    cut = largest.offset_data + largest.size // 2 if where == "in-the-largest-member" else members[-1].offset + 100
    whole.write_bytes(whole.read_bytes()[:cut])
    result = run("/usr/bin/app", "--from", f"{kind}:{whole}", "--out", f"rootfs:{tmp_path / 'out'}", "-q")
    refused(result, 3)


def test_a_link_member_whose_target_is_not_in_the_archive_is_a_source_error(app: bytes, tmp_path: Path) -> None:
    archive = Crafted([layer(app)]).docker_archive(tmp_path / "a.tar")
    rebuilt = tmp_path / "b.tar"
    with tarfile.open(archive) as source, tarfile.open(rebuilt, "w") as out:
        for info in source.getmembers():
            if info.name == "0/layer.tar":
                info.type, info.linkname, info.size = tarfile.LNKTYPE, "gone/layer.tar", 0
                out.addfile(info)
            else:
                out.addfile(info, source.extractfile(info))
    refused(
        run("/usr/bin/app", "--from", f"docker-archive:{rebuilt}", "--out", f"rootfs:{tmp_path / 'out'}"),
        3,
        "0/layer.tar links to 'gone/layer.tar', which the archive does not hold",
    )


# -- 2. no recursion over a depth the input chooses ---------------------------------------------------


@pytest.mark.parametrize("how", ["whiteout", "replaced-by-file"])
def test_a_1200_level_tree_can_be_whited_out_or_replaced(app: bytes, tmp_path: Path, how: str) -> None:
    deep = [("deep/" + "d/" * depth, None) for depth in range(1200)]
    members = [(tarfile.TarInfo(name), data) for name, data in deep]
    for info, _ in members:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    if how == "whiteout":
        top = tarfile.TarInfo(".wh.deep")
        top.size = 0
        upper = [(top, b"")]
    else:
        top = tarfile.TarInfo("deep")
        top.size = 1
        upper = [(top, b"x")]
    layout = Crafted([layer(app, *members), tar_bytes(upper)]).layout(tmp_path / "layout")
    result = distill_from(f"oci:{layout}:latest", tmp_path / "out")
    assert result.code == 0, result.stderr


def test_a_1200_level_tree_ships_and_is_replaced_with_force(app: bytes, tmp_path: Path) -> None:
    members = []
    for depth in range(1200):
        info = tarfile.TarInfo("deep/" + "d/" * depth)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        members.append((info, None))
    layout = Crafted([layer(app, *members)]).layout(tmp_path / "layout")
    out = tmp_path / "out"
    try:
        for extra in ((), ("--force",)):  # the second run removes the first output, 1,200 levels deep
            result = distill_from(f"oci:{layout}:latest", out, "--path", "/deep/**", *extra)
            assert result.code == 0, result.stderr
        assert (out / ("deep/" + "d/" * 1199)).is_dir()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    finally:  # pytest's own clean-up of tmp_path recurses too deep for this tree (or a temporary sibling of it)
        subprocess.run(["rm", "-rf", str(out), *map(str, tmp_path.glob(".out.*"))], check=True)


# -- 3. --debug anywhere ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["first", "after-app", "last"])
def test_debug_is_accepted_in_every_position(app: bytes, tmp_path: Path, where: str) -> None:
    layout = Crafted([layer(app)]).layout(tmp_path / "layout")
    args = ["/usr/bin/app", "--from", f"oci:{layout}:latest", "--out", f"rootfs:{tmp_path / 'out'}", "-q"]
    position = {"first": 0, "after-app": 1, "last": len(args)}[where]
    result = run(*args[:position], "--debug", *args[position:])
    assert result.code == 0, result.stderr


def test_the_internal_error_hint_is_usable(app: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug is simulated (monkeypatched planner: no real input may produce one); rerunning the same command
    with --debug, as the message says, shows the traceback."""
    from distill.planner import Planner

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(Planner, "run", broken)
    layout = Crafted([layer(app)]).layout(tmp_path / "layout")
    args = ["/usr/bin/app", "--from", f"oci:{layout}:latest", "--out", f"rootfs:{tmp_path / 'out'}"]
    first = run(*args)
    assert first.code == 70 and "rerun with --debug" in first.stderr and "Traceback" not in first.stderr
    again = run(*args, "--debug")
    assert again.code == 70
    assert "Traceback (most recent call last)" in again.stderr and "RuntimeError: simulated bug" in again.stderr


# -- 4. writing into an existing layout ------------------------------------------------------------------


@pytest.fixture
def existing(app: bytes, tmp_path: Path) -> tuple[Path, Path]:
    """(source layout, an existing output layout with one image in it)."""
    source = Crafted([layer(app)]).layout(tmp_path / "source")
    out = tmp_path / "out"
    assert run("/usr/bin/app", "--from", f"oci:{source}:latest", "--out", f"oci:{out}:first", "-q").code == 0
    return source, out


@pytest.mark.parametrize(
    "index",
    [b"{", b'{"manifests": 5}', b'{"manifests": [{"digest": "sha256:x", "size": 1}]}'],
    ids=["truncated", "manifests-number", "bad-digest"],
)
def test_a_bad_index_in_an_existing_layout_is_refused_before_anything_is_written(existing: tuple[Path, Path], index: bytes) -> None:
    source, out = existing
    (out / "index.json").write_bytes(index)
    before = snapshot(out)
    result = run("/usr/bin/app", "--from", f"oci:{source}:latest", "--env", "NEW=1", "--out", f"oci:{out}:second", "-q")
    refused(result, 5, "index.json", "not writing into this layout")
    assert snapshot(out) == before


@pytest.mark.parametrize("which", ["blobs", "blobs/sha256"])
def test_a_symlinked_blob_directory_is_refused(existing: tuple[Path, Path], tmp_path: Path, which: str) -> None:
    source, out = existing
    elsewhere = tmp_path / "elsewhere"
    shutil.move(out / which, elsewhere)
    (out / which).symlink_to(elsewhere)
    before, outside = snapshot(out), snapshot(elsewhere)
    result = run("/usr/bin/app", "--from", f"oci:{source}:latest", "--env", "NEW=1", "--out", f"oci:{out}:second", "-q")
    refused(result, 5, f"{which} is a symlink or not a directory")
    assert snapshot(out) == before and snapshot(elsewhere) == outside


def test_an_existing_blob_with_the_right_size_but_wrong_bytes_is_replaced(existing: tuple[Path, Path], tmp_path: Path) -> None:
    source, out = existing
    index = json.loads((out / "index.json").read_text())
    manifest = json.loads((out / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    blob = out / "blobs/sha256" / manifest["layers"][0]["digest"][7:]
    blob.write_bytes(b"\0" * blob.stat().st_size)
    result = run("/usr/bin/app", "--from", f"oci:{source}:latest", "--out", f"oci:{out}:second", "-q")
    assert result.code == 0, result.stderr
    copied = tmp_path / "copied"  # skopeo reads every blob and checks its digest
    subprocess.run(["skopeo", "copy", "-q", f"oci:{out}:second", f"dir:{copied}"], check=True, capture_output=True)
    assert not [n for n in os.listdir(out / "blobs/sha256") if n.startswith(".")]


def test_a_failed_write_into_a_layout_leaves_it_exactly_as_it_was(existing: tuple[Path, Path]) -> None:
    """The new index cannot be written (index.json is a directory now): exit 5, no new blob stays behind."""
    source, out = existing
    (out / "index.json").unlink()
    (out / "index.json").mkdir()
    before = snapshot(out)
    result = run("/usr/bin/app", "--from", f"oci:{source}:latest", "--env", "NEW=1", "--out", f"oci:{out}:second", "-q")
    refused(result, 5)
    assert snapshot(out) == before


# -- 5. the cache -------------------------------------------------------------------------------------------


def test_a_layout_missing_a_blob_is_refused_warm_as_cold(app: bytes, tmp_path: Path) -> None:
    layout = Crafted([layer(app)]).layout(tmp_path / "layout")
    assert distill_from(f"oci:{layout}:latest", tmp_path / "first").code == 0  # warms the cache
    manifest = Crafted([layer(app)]).documents()[2]
    (layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:]).unlink()
    refused(distill_from(f"oci:{layout}:latest", tmp_path / "second"), 3, "is missing or not a regular file")


def test_a_config_naming_another_images_diff_id_does_not_get_its_cached_content(app: bytes, tmp_path: Path) -> None:
    genuine = layer(app)
    assert distill_from(f"oci:{Crafted([genuine]).layout(tmp_path / 'genuine')}:latest", tmp_path / "first").code == 0
    forged_diff_id = "sha256:" + hashlib.sha256(genuine).hexdigest()
    other = layer(app, pax("etc/other", {}))

    def lie(config: Any) -> Any:
        config["rootfs"]["diff_ids"] = [forged_diff_id]
        return config

    forged = Crafted([other], config_hook=lie).layout(tmp_path / "forged")
    refused(distill_from(f"oci:{forged}:latest", tmp_path / "second"), 3, f"does not match diff_id {forged_diff_id}")


def test_a_decompression_bomb_is_refused_and_not_kept(
    app: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_cache: Path
) -> None:
    zeros = tarfile.TarInfo("zeros")
    zeros.size = 16 << 20
    bomb = layer(app, (zeros, b"\0" * zeros.size))
    monkeypatch.setenv("DISTILL_LAYER_MAX", "4M")
    layout = Crafted([bomb]).layout(tmp_path / "layout")
    refused(distill_from(f"oci:{layout}:latest", tmp_path / "out"), 3, "decompresses to more than 4,194,304 bytes (DISTILL_LAYER_MAX)")
    assert not [p for p in private_cache.rglob("*") if p.is_file()]


def test_the_cache_keeps_under_its_cap_by_evicting_the_least_recently_used(
    app: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_cache: Path
) -> None:
    images = []
    for number in range(3):
        padding = tarfile.TarInfo(f"pad{number}")
        padding.size = 300_000
        images.append(Crafted([layer(app, (padding, os.urandom(padding.size)))]).layout(tmp_path / f"image{number}"))
    monkeypatch.setenv("DISTILL_CACHE_MAX", "800K")
    spools: list[Path] = []
    for number, image in enumerate(images):
        assert distill_from(f"oci:{image}:latest", tmp_path / f"out{number}").code == 0
        spools.append(next(p for p in (private_cache / "layers/sha256").glob("*.tar") if p not in spools))
    total = sum(p.stat().st_size for p in private_cache.rglob("*") if p.is_file())
    assert total <= 800 << 10
    assert not spools[0].exists() and spools[2].exists()  # the oldest went first
    result = run("cache", "prune", "--all")
    assert result.code == 0 and "removed" in result.stderr
    assert not [p for p in private_cache.rglob("*") if p.is_file()]


def test_a_bad_cache_size_is_a_usage_error(app: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_CACHE_MAX", "lots")
    layout = Crafted([layer(app)]).layout(tmp_path / "layout")
    refused(distill_from(f"oci:{layout}:latest", tmp_path / "out"), 2, "DISTILL_CACHE_MAX='lots'")


# -- 6. setuid and setgid -------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["strip", "keep"])
def test_setuid_bits_follow_the_profile_and_are_reported(tree: Tree, tmp_path: Path, setting: str) -> None:
    tree.app()
    tree.host("/usr/bin/app").chmod(0o4755)
    profile = tmp_path / "app.yaml"
    profile.write_text(f"schema: distill/v1\nname: app\nextends: [glibc]\nbinaries: [/usr/bin/app]\nsystem: {{setuid: {setting}}}\n")
    out = tmp_path / "out"
    result = run(str(profile), "--from", str(tree.root), "--out", f"rootfs:{out}", "-q")
    assert result.code == 0, result.stderr
    if setting == "strip":
        assert (out / "usr/bin/app").stat().st_mode & 0o7777 == 0o755
        assert "setuid/setgid bits stripped (system.setuid: keep, or a `mode`, keeps them): /usr/bin/app" in result.stderr
    else:
        assert (out / "usr/bin/app").stat().st_mode & 0o7777 == 0o4755
        assert "shipped with setuid/setgid bits: /usr/bin/app" in result.stderr


def test_an_unknown_setuid_setting_is_a_profile_error(tree: Tree, tmp_path: Path) -> None:
    tree.app()
    profile = tmp_path / "app.yaml"
    profile.write_text("schema: distill/v1\nname: app\nbinaries: [/usr/bin/app]\nsystem: {setuid: maybe}\n")
    refused(run(str(profile), "--from", str(tree.root), "--out", f"rootfs:{tmp_path / 'out'}"), 2, "system.setuid: must be strip or keep")


# -- directory source ----------------------------------------------------------------------------------------


def test_a_profile_path_that_is_a_symlink_loop_is_a_source_error(tree: Tree, tmp_path: Path) -> None:
    tree.app()
    tree.symlink("/etc/loop-a", "loop-b")
    tree.symlink("/etc/loop-b", "loop-a")
    result = run("/usr/bin/app", "--from", str(tree.root), "--path", "/etc/loop-a", "--out", f"rootfs:{tmp_path / 'out'}")
    refused(result, 3, "/etc/loop-a: too many levels of symbolic links")
    assert not (tmp_path / "out").exists()
