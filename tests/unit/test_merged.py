"""The merged view of an image equals what umoci unpacks from the same layout: whiteouts, opaque
directories, replaced directories, hard links, members written through a symlinked parent."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from distill.errors import SourceError
from distill.oci import layers as layers_module
from distill.oci import merged as merged_module
from distill.oci.image import Descriptor, Platform
from distill.oci.layers import Cache
from distill.oci.merged import open_image_view
from distill.transports.oci import DirStore, layout_image
from distill.view import Node, View

from helpers.layouts import member, write_layout
from helpers.registry import build_image_layout
from helpers.tree import Tree


def view_dump(view: View) -> dict[str, str]:
    out = {}
    for node in view.walk("/"):
        if node.is_file:
            with view.open(node.path) as stream:
                body = hashlib.sha256(stream.read()).hexdigest()[:12]
        else:
            body = node.target if node.is_symlink else node.type.value
        out[node.path] = f"{node.type.value} {node.mode:04o} {node.uid}:{node.gid} {body}"
    return out


def disk_dump(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kind = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}[stat.S_IFMT(st.st_mode)]
        if kind == "file":
            body = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        else:
            body = os.readlink(path) if kind == "symlink" else "dir"
        mode = 0o777 if kind == "symlink" else stat.S_IMODE(st.st_mode)
        out["/" + str(path.relative_to(root))] = f"{kind} {mode:04o} {st.st_uid}:{st.st_gid} {body}"
    return out


def umoci_rootfs(layout: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)], check=True, capture_output=True)
    return bundle / "rootfs"


def merged(layout: Path, tmp_path: Path) -> View:
    image = layout_image(DirStore(str(layout), f"oci:{layout}"), "latest", Platform.host())
    return open_image_view(image, Cache(tmp_path / "cache"))


def test_umoci_whiteouts_match(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "src")
    tree.write("/etc/motd", "hello\n")
    tree.write("/etc/keep", "keep\n")
    tree.write("/usr/bin/tool", "#!/bin/sh\n", mode=0o755)
    tree.write("/var/empty/.placeholder", "")
    tree.write("/opt/dir/a", "a")
    tree.symlink("/opt/link", "dir/a")

    def change(root: Path) -> None:
        (root / "etc/motd").unlink()
        (root / "usr/bin/tool").unlink()
        (root / "usr/bin/tool").mkdir()
        (root / "usr/bin/tool/inside").write_text("now a directory")
        for child in (root / "opt/dir").iterdir():
            child.unlink()
        (root / "opt/dir/b").write_text("b")
        os.link(root / "opt/dir/b", root / "opt/b-link")

    build_image_layout(tree.root, tmp_path / "layout", "latest", extra_layer=change)
    ours = view_dump(merged(tmp_path / "layout", tmp_path))
    theirs = disk_dump(umoci_rootfs(tmp_path / "layout", tmp_path))
    assert ours == theirs
    assert "/etc/motd" not in ours and "/usr/bin/tool/inside" in ours and "/opt/dir/a" not in ours


def test_handcrafted_layers_match_umoci(tmp_path: Path) -> None:
    layout = write_layout(
        tmp_path / "layout",
        [
            [
                member("etc", tarfile.DIRTYPE, mode=0o755),
                member("etc/a", data=b"a"),
                member("etc/sub", tarfile.DIRTYPE, mode=0o755),
                member("etc/sub/x", data=b"x"),
                member("data", tarfile.DIRTYPE, mode=0o755),
                member("data/real", tarfile.DIRTYPE, mode=0o755),
                member("data/link", tarfile.SYMTYPE, link="real"),
                member("usr/lib/deep/file", data=b"implicit parents"),
            ],
            [
                member("etc/.wh..wh..opq", data=b""),
                member("etc/b", data=b"b"),
                member("data/link/through", data=b"via link"),
                member("usr/lib/.wh.deep", data=b""),
                member("hard", tarfile.LNKTYPE, link="etc/b"),
                member("etc/a-dir", tarfile.DIRTYPE, mode=0o750),
            ],
        ],
    )
    ours = view_dump(merged(layout, tmp_path))
    theirs = disk_dump(umoci_rootfs(layout, tmp_path))
    assert ours == theirs
    assert "/data/real/through" in ours and "/etc/a" not in ours and "/etc/sub" not in ours


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../escape", "climbs out of the root with '..'"),
        ("etc/../../escape", "climbs out of the root with '..'"),
        ("etc/.wh.", "names no entry"),
    ],
)
def test_hostile_member_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    layout = write_layout(tmp_path / "layout", [[member("etc", tarfile.DIRTYPE, mode=0o755), member(name, data=b"x")]])
    with pytest.raises(SourceError) as caught:
        merged(layout, tmp_path)
    assert message in caught.value.message


def test_layers_are_spooled_concurrently_and_merged_in_order(tmp_path: Path) -> None:
    """Three layers whose blobs each wait at a barrier for the other two: a serial pull would never get past
    the first (the barrier's timeout turns that into a failure, not a timing). The merge still applies them
    bottom to top: the top layer's /etc/a wins."""
    layout = write_layout(tmp_path / "layout", [[member("etc/a", data=f"layer {n}".encode())] for n in range(3)])
    image = layout_image(DirStore(str(layout), f"oci:{layout}"), "latest", Platform.host())
    barrier, opened = threading.Barrier(3, timeout=30), image.open_blob

    def open_blob(descriptor: Descriptor) -> BinaryIO:
        if descriptor in image.layers:
            barrier.wait()
        return opened(descriptor)

    image.open_blob = open_blob
    view = open_image_view(image, Cache(tmp_path / "cache"))
    with view.open("/etc/a") as stream:
        assert stream.read() == b"layer 2"


def test_a_bad_layer_fails_as_in_a_serial_pull_and_keeps_nothing(tmp_path: Path) -> None:
    """Layer 2 of 3 does not match its digest: the error names it (not layer 3, which may be spooled by then),
    and no spool or blob of layer 2 stays in the cache."""
    layout = write_layout(tmp_path / "layout", [[member(f"etc/{n}", data=b"x" * 1000)] for n in range(3)])
    blobs = layout / "blobs/sha256"
    manifest = json.loads((blobs / json.loads((layout / "index.json").read_text())["manifests"][0]["digest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    bad, bad_diff_id = manifest["layers"][1]["digest"].removeprefix("sha256:"), config["rootfs"]["diff_ids"][1].removeprefix("sha256:")
    blob = blobs / bad
    data = bytearray(blob.read_bytes())
    data[-9] ^= 1  # inside the gzip trailer: the stream still ends, its digest does not match
    blob.write_bytes(bytes(data))
    with pytest.raises(SourceError) as caught:
        merged(layout, tmp_path)
    assert f"sha256:{bad[:12]}" in caught.value.message  # the blob of layer 2
    cache = tmp_path / "cache"
    assert not [p for p in cache.rglob("*") if bad in p.name or bad_diff_id in p.name or p.name.startswith(".")]


def test_the_merge_makes_nodes_only_for_what_is_looked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer of 2,000 members merges into rows; a Node is made when a reader asks for a path (here: the hard
    link's target and the parents on the way), so a warm run pays for what the planner touches. Listing,
    totals and reads come from the rows, and a hard link still shares its original's file_id."""
    made: list[str] = []

    class CountedNode(Node):
        def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
            made.append(path)
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(merged_module, "Node", CountedNode)
    members = [member(f"usr/share/doc/pkg{n}/copyright", data=f"{n}\n".encode()) for n in range(2000)]
    members.append(member("usr/share/doc/pkg1999/again", tarfile.LNKTYPE, link="usr/share/doc/pkg1999/copyright"))
    view = merged(write_layout(tmp_path / "layout", [members]), tmp_path)
    looked_up = ["/usr", "/usr/share", "/usr/share/doc", "/usr/share/doc/pkg1999", "/usr/share/doc/pkg1999/copyright"]
    assert made == looked_up  # by the hard link, resolved while it was merged
    assert view.file_totals() == (2001, sum(len(f"{n}\n") for n in range(2000)) + len("1999\n"))
    assert len(view.listdir("/usr/share/doc")) == 2000 and made == looked_up
    node, link = view.stat("/usr/share/doc/pkg1999/copyright"), view.lstat("/usr/share/doc/pkg1999/again")
    assert node is not None and link is not None and node.file_id == link.file_id is not None
    assert view.read_bytes("/usr/share/doc/pkg1999/again") == b"1999\n"
    assert len(made) < 10, made


def kept_dump(view: View) -> dict[str, object]:
    """Everything a reader of the view can see: every node (the root included), listings, data, totals, notes."""
    root = view.lstat("/")
    dump: dict[str, object] = {"/": root, "totals": view.file_totals(), "warnings": list(getattr(view, "warnings", []))}
    for node in view.walk("/"):
        dump[node.path] = (node, view.content_key(node.path), view.read_bytes(node.path) if node.is_file else None)
        if node.is_dir:
            dump[node.path + " listing"] = view.listdir(node.path)
    return dump


HANDCRAFTED = [
    [
        member("etc", tarfile.DIRTYPE, mode=0o755),
        member("etc/a", data=b"a"),
        member("etc/sub/x", data=b"x"),
        member("data/real", tarfile.DIRTYPE, mode=0o750),
        member("data/link", tarfile.SYMTYPE, link="real"),
        member("usr/lib/deep/file", data=b"implicit parents"),
        member("empty", tarfile.DIRTYPE, mode=0o700),
    ],
    [
        member("etc/.wh..wh..opq", data=b""),
        member("etc/b", data=b"b"),
        member("data/link/through", data=b"via link"),
        member("usr/lib/.wh.deep", data=b""),
        member("hard", tarfile.LNKTYPE, link="etc/b"),
    ],
]


def open_kept(layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> View:
    """The view of `layout` again, with every layer index and merge refused: only a kept view can answer."""
    with monkeypatch.context() as patched:
        patched.setattr(merged_module, "layer_members", lambda *_: pytest.fail("a layer was indexed and merged again"))
        return merged(layout, tmp_path)


def test_a_kept_view_is_the_merged_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first run merges and keeps the view; the next reads it (no index, no merge) and sees the same tree,
    the root's own metadata, data, content keys, totals and the notes on clamped times included."""
    layers = [[member("./", tarfile.DIRTYPE, mode=0o711), *HANDCRAFTED[0], member("etc/old", data=b"old")], HANDCRAFTED[1]]
    layers[0][0][0].mtime = 1234567890  # the root's own metadata
    layers[0][-1][0].mtime = -5  # clamped to 0, and noted
    layout = write_layout(tmp_path / "layout", layers)
    first = kept_dump(merged(layout, tmp_path))
    assert any("clamped" in warning for warning in first["warnings"])  # type: ignore[attr-defined]
    assert len(list((tmp_path / "cache/layers/sha256").glob("*.merged-*"))) == 1
    assert kept_dump(open_kept(layout, tmp_path, monkeypatch)) == first


def test_a_damaged_kept_view_is_merged_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One flipped bit in the body (its digest), a truncated file, a header of another chain or of another
    merge code: each is merged again from the verified layers, and the file is written again."""
    layout = write_layout(tmp_path / "layout", HANDCRAFTED)
    expected = kept_dump(merged(layout, tmp_path))
    (kept,) = (tmp_path / "cache/layers/sha256").glob("*.merged-*")
    intact = kept.read_bytes()
    other_chain = intact.replace(b'"diff_ids":["sha256:', b'"diff_ids":["sha256:0', 1)  # the body still intact
    other_merger = intact.replace(b'"merger":"', b'"merger":"0', 1)  # as after a change to the merge's code
    assert intact not in (other_chain, other_merger)
    flipped = intact[:-60] + bytes([intact[-60] ^ 1]) + intact[-59:]
    for damaged in (flipped, intact[: len(intact) // 2], other_chain, other_merger):
        kept.write_bytes(damaged)
        assert kept_dump(merged(layout, tmp_path)) == expected
        assert kept.read_bytes() == intact
    assert kept_dump(open_kept(layout, tmp_path, monkeypatch)) == expected


def test_a_kept_view_belongs_to_its_chain_of_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same top layer over another lower layer is another chain: its own kept view, never the other's."""
    top = [member("etc/b", data=b"b")]
    two = write_layout(tmp_path / "two", [[member("etc/a", data=b"a")], top])
    one = write_layout(tmp_path / "one", [top])
    merged(two, tmp_path)
    (kept_two,) = (tmp_path / "cache/layers/sha256").glob("*.merged-*")
    view = merged(one, tmp_path)
    assert view.lstat("/etc/a") is None
    kept = set((tmp_path / "cache/layers/sha256").glob("*.merged-*"))
    assert len(kept) == 2
    (kept_one,) = kept - {kept_two}
    kept_one.write_bytes(kept_two.read_bytes())  # the two-layer view under the one-layer chain's name
    view = merged(one, tmp_path)
    assert view.lstat("/etc/a") is None and view.read_bytes("/etc/b") == b"b"
    assert open_kept(one, tmp_path, monkeypatch).lstat("/etc/a") is None
    cache, diff_ids = Cache(tmp_path / "cache"), [f"sha256:{'1' * 64}"]
    name = cache.merged_path(diff_ids)
    monkeypatch.setattr(layers_module, "_INDEX_VERSION", layers_module._INDEX_VERSION + 1)
    assert cache.merged_path(diff_ids) != name  # what another indexer reads is merged again


def test_a_kept_view_checks_its_layers_concurrently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm run still checks that the image holds each layer's blob (a registry's HEAD): for three layers
    whose checks each wait at a barrier for the other two, as a merge's fetches do. The kept view answers."""
    layout = write_layout(tmp_path / "layout", [[member("etc/a", data=f"layer {n}".encode())] for n in range(3)])
    merged(layout, tmp_path)
    image = layout_image(DirStore(str(layout), f"oci:{layout}"), "latest", Platform.host())
    barrier, check = threading.Barrier(3, timeout=30), image.check_blob

    def check_blob(descriptor: Descriptor) -> None:
        barrier.wait()
        check(descriptor)

    monkeypatch.setattr(image, "check_blob", check_blob)
    monkeypatch.setattr(merged_module, "layer_members", lambda *_: pytest.fail("a layer was indexed and merged again"))
    view = open_image_view(image, Cache(tmp_path / "cache"))
    assert view.read_bytes("/etc/a") == b"layer 2"
