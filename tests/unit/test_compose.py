"""The output image's config, history and annotations; times that never come from the clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import distill
from distill.oci.digest import sha256_of

from helpers.cli import run_distill
from helpers.layouts import tree_members, write_layout
from helpers.tree import TRIPLET, Tree

SOURCE_CONFIG = {
    "created": "2024-05-01T12:00:00Z",
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "APP_MODE=fat"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Cmd": ["app", "--serve"],
        "Labels": {"maintainer": "someone"},
        "Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost/"]},
        "OnBuild": ["RUN make"],
        "Shell": ["/bin/sh", "-c"],
        "StopSignal": "SIGTERM",
        "ExposedPorts": {"8080/tcp": {}},
    },
    "history": [{"created_by": "fat layer"}],
}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    tree = Tree(tmp_path / "tree")
    tree.app()
    return write_layout(tmp_path / "layout", [tree_members(tree.root)], SOURCE_CONFIG)


def image_config(layout: Path, ref: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    raw = json.loads(
        subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:{ref}"], check=True, capture_output=True, text=True).stdout
    )
    config = json.loads(
        subprocess.run(["skopeo", "inspect", "--config", f"oci:{layout}:{ref}"], check=True, capture_output=True, text=True).stdout
    )
    return raw, config


def test_config_falls_back_to_the_source_and_drops_shell_features(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_distill(
        "/usr/bin/app", "--from", f"oci:{source}:latest", "--out", f"oci:{out}:app", "--env", "APP_MODE=slim", "--expose", "80", "-q"
    )
    assert result.code == 0, result.stderr
    for key in ("Healthcheck", "OnBuild", "Shell"):
        assert f"warning: image config: {key} dropped" in result.stderr
    manifest, config = image_config(out, "app")
    runtime = config["config"]
    assert runtime["Entrypoint"] == ["/usr/bin/app"] and "Cmd" not in runtime  # a new entrypoint resets the command
    assert "APP_MODE=slim" in runtime["Env"] and any(e.startswith("PATH=") for e in runtime["Env"])
    assert runtime["Labels"] == {"maintainer": "someone"} and runtime["StopSignal"] == "SIGTERM"
    assert runtime["ExposedPorts"] == {"80/tcp": {}}
    assert not {"Healthcheck", "OnBuild", "Shell"} & set(runtime)
    assert config["created"] == "2024-05-01T12:00:00Z"  # the source image's time, not the clock
    last = config["history"][-1]
    assert last["created_by"].startswith(f"distill {distill.__version__} app (profile sha256:")
    assert len(config["rootfs"]["diff_ids"]) == 1 == len(manifest["layers"])


def test_source_date_epoch_sets_every_time(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_distill(
        "/usr/bin/app", "--from", f"oci:{source}:latest", "--out", f"oci:{out}:app", "-q", env={"SOURCE_DATE_EPOCH": "1700000000"}
    )
    assert result.code == 0, result.stderr
    _, config = image_config(out, "app")
    assert config["created"] == config["history"][-1]["created"] == "2023-11-14T22:13:20Z"


def test_base_history_is_kept_and_annotations_name_the_base(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_distill(
        "/usr/bin/app", "--from", f"oci:{source}:latest", "--base", f"oci:{source}:latest", "--out", f"oci:{out}:app", "--json", "-q"
    )
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    manifest, config = image_config(out, "app")
    assert next(h.get("created_by") for h in config["history"]) == "fat layer"
    assert manifest["annotations"]["org.opencontainers.image.base.name"] == f"oci:{source}:latest"
    assert manifest["annotations"]["org.opencontainers.image.base.digest"] == report["base"]["digest"]
    assert f"/lib/{TRIPLET}/libc.so.6" in report["base"]["provided_by_base"]
    shown = run_distill(
        "/usr/bin/app", "--from", f"oci:{source}:latest", "--base", f"oci:{source}:latest", "--out", f"oci:{tmp_path / 'again'}:app"
    )
    assert f"distill: base oci:{source}:latest: 2 libraries come from the base" in shown.stderr


def test_without_out_an_oci_layout_is_written_here(source: Path, tmp_path: Path) -> None:
    result = run_distill("/usr/bin/app", "--from", f"oci:{source}:latest", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert (tmp_path / "app-distilled/index.json").is_file()
    assert "no --out given: wrote oci:app-distilled:latest" in result.stderr
    assert "skopeo copy oci:app-distilled:latest docker-daemon:app-distilled:latest" in result.stderr


def test_a_layout_gains_images_and_keeps_the_others(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for tag in ("one", "two", "one"):
        result = run_distill(
            "/usr/bin/app", "--from", f"oci:{source}:latest", "--out", f"oci:{out}:{tag}", "-q", "--tz", "none" if tag == "two" else "UTC"
        )
        assert result.code == 0, result.stderr
    index = json.loads((out / "index.json").read_text())
    names = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    assert names == ["one", "two"]


def test_platform_selection_skips_attestations(source: Path, tmp_path: Path) -> None:
    index_path = source / "index.json"
    index = json.loads(index_path.read_text())
    entry = index["manifests"][0]
    index["manifests"] = [
        {**entry, "annotations": {}, "platform": {"os": "unknown", "architecture": "unknown"}},
        {**entry, "annotations": {}, "platform": {"os": "linux", "architecture": "amd64"}},
    ]
    multi = tmp_path / "multi"
    subprocess.run(["cp", "-a", str(source), str(multi)], check=True)
    data = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index["manifests"]}
    ).encode()
    (multi / "blobs/sha256" / sha256_of(data).split(":")[1]).write_bytes(data)
    (multi / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "digest": sha256_of(data),
                        "size": len(data),
                        "annotations": {"org.opencontainers.image.ref.name": "latest"},
                    }
                ],
            }
        )
    )
    ok = run_distill("/usr/bin/app", "--from", f"oci:{multi}:latest", "--out", f"rootfs:{tmp_path / 'r'}", "-q")
    assert ok.code == 0, ok.stderr
    missing = run_distill(
        "/usr/bin/app", "--from", f"oci:{multi}:latest", "--platform", "linux/arm64", "--out", f"rootfs:{tmp_path / 'r2'}", "-q"
    )
    assert missing.code == 3
    assert "no image for platform linux/arm64; the index offers linux/amd64 (use --platform)" in missing.stderr


def test_the_images_ld_library_path_is_part_of_the_loader_model(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "tree").app()
    tree.lib("/opt/app/lib/libpriv.so.1", soname="libpriv.so.1")
    tree.prog("/opt/app/bin/tool", needs=["/opt/app/lib/libpriv.so.1"])
    layout = write_layout(tmp_path / "layout", [tree_members(tree.root)], {"config": {"Env": ["LD_LIBRARY_PATH=/opt/app/lib"]}})
    result = run_distill("/opt/app/bin/tool", "--from", f"oci:{layout}:latest", "--out", f"rootfs:{tmp_path / 'out'}", "--json", "-q")
    assert result.code == 0, result.stderr
    entries = {e["path"]: e for e in json.loads(result.stdout)["entries"]}
    assert entries["/opt/app/lib/libpriv.so.1"]["reasons"][0]["rule"] == "LD_LIBRARY_PATH: /opt/app/lib"
    unset = run_distill(
        "/opt/app/bin/tool", "--from", f"oci:{layout}:latest", "--env", "LD_LIBRARY_PATH=", "--out", f"rootfs:{tmp_path / 'out2'}", "-q"
    )
    assert unset.code == 4 and "libpriv.so.1 (needed by /opt/app/bin/tool) is not in the output" in unset.stderr


def test_the_output_gzip_is_reused_from_the_cache_only_when_it_is_intact(source: Path, tmp_path: Path) -> None:
    """The first run keeps its compressed layer in the cache under the diff_id; a second run copies it (the
    same inode is not rewritten); a damaged cached blob is noticed by its digest and compressed again. The
    output is the same bytes every time."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "SOURCE_DATE_EPOCH": "1700000000"}

    def distill_once(name: str) -> tuple[str, Path]:
        out = tmp_path / name
        result = run_distill("/usr/bin/app", "--from", f"oci:{source}:latest", "--out", f"oci:{out}:app", "-q", env=env)
        assert result.code == 0, result.stderr
        (entry,) = json.loads((out / "index.json").read_text())["manifests"]
        layer = json.loads((out / "blobs/sha256" / entry["digest"].removeprefix("sha256:")).read_text())["layers"][-1]["digest"]
        return layer, tmp_path / "cache/distill/blobs/sha256" / layer.removeprefix("sha256:")

    layer, cached = distill_once("first")
    (record,) = (tmp_path / "cache/distill/layers/gzip").glob("*/*")
    assert record.read_text() == layer and sha256_of(cached.read_bytes()) == layer
    inode = cached.stat().st_ino
    assert distill_once("second") == (layer, cached)
    assert cached.stat().st_ino == inode  # reused, not compressed and stored again
    cached.write_bytes(cached.read_bytes()[:-1] + b"\0")  # damaged in place
    assert distill_once("third") == (layer, cached)
    assert sha256_of(cached.read_bytes()) == layer  # compressed again and replaced


def test_a_directory_source_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "tree")
    tree.app()
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = run_distill("/usr/bin/app", "--from", f"rootfs:{tree.root}", "--out", f"oci:{tmp_path / 'out'}:app", "-q", env=env)
    assert result.code == 0, result.stderr
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_cached_gzip_of_another_layer_is_not_used(source: Path, tmp_path: Path) -> None:
    """A record that names an intact blob of a different layer (swapped, or written by a buggy run): the blob
    is decompressed on the way and its diff_id checked (a record by tar key names its key), so the run
    compresses again and the image is right."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "SOURCE_DATE_EPOCH": "1700000000"}
    records = tmp_path / "cache/distill/layers"
    other = Tree(tmp_path / "other")
    other.app().write("/etc/motd", "one more file, so another layer\n")
    other_source = write_layout(tmp_path / "other-layout", [tree_members(other.root)], SOURCE_CONFIG)

    def distill_once(name: str, layout: Path, *extra: str) -> str:
        out = tmp_path / name
        result = run_distill("/usr/bin/app", "--from", f"oci:{layout}:latest", *extra, "--out", f"oci:{out}:app", "-q", env=env)
        assert result.code == 0, result.stderr
        (entry,) = json.loads((out / "index.json").read_text())["manifests"]
        return json.loads((out / "blobs/sha256" / entry["digest"].removeprefix("sha256:")).read_text())["layers"][-1]["digest"]

    plain = distill_once("plain", source)
    plain_records = {record.parent.parent.name: record for record in records.glob("gzip*/*/*")}
    with_motd = distill_once("motd", other_source, "--path", "/etc/motd")
    assert with_motd != plain
    motd_records = {record.parent.parent.name: record for record in set(records.glob("gzip*/*/*")) - set(plain_records.values())}
    assert sorted(motd_records) == sorted(plain_records) == ["gzip", "gzip-of-tar"]
    for kind, record in motd_records.items():  # the motd layer's records now name the plain layer's (intact) gzip
        record.write_text(plain_records[kind].read_text())
    assert distill_once("again", other_source, "--path", "/etc/motd") == with_motd
    assert motd_records["gzip-of-tar"].read_text().split()[0] == with_motd  # written again


def test_a_read_only_cache_costs_a_compression_not_the_run(source: Path, tmp_path: Path) -> None:
    """The output gzip is kept in the cache best-effort: on a read-only cache (a real read-only bind mount
    in a private mount namespace) the run succeeds and writes the same image."""
    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(cache), "SOURCE_DATE_EPOCH": "1700000000"}
    first = run_distill("/usr/bin/app", "--from", f"oci:{source}:latest", "--out", f"oci:{tmp_path / 'first'}:app", "-q", env=env)
    assert first.code == 0, first.stderr
    for record in (cache / "distill/layers").glob("gzip*/*/*"):
        record.unlink()  # as after an upgrade that changes the gzip key: nothing to reuse, something to keep
    script = (
        f"mount --bind -o ro {cache} {cache} && exec {sys.executable} -m distill /usr/bin/app "
        f"--from oci:{source}:latest --out oci:{tmp_path / 'second'}:app -q"
    )
    second = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env={**os.environ, **env})
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "first/index.json").read_bytes() == (tmp_path / "second/index.json").read_bytes()
