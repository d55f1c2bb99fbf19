"""Sinks: rootfs and layer outputs agree, keep metadata, are reproducible and atomic."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from distill.errors import DestinationError, SourceError
from distill.plan import Plan
from distill.planner import make_plan
from distill.profile import load_profile
from distill.refs import Ref
from distill.staging import check_destination
from distill.tarstream import GzipWriter
from distill.transports import write_plan
from distill.transports.rootfs import DirView

from helpers.tree import TRIPLET, Tree

LIBDIR = f"/usr/lib/{TRIPLET}"


def dump(root: Path) -> dict[str, str]:
    """Every object under `root` as one comparable line (type, mode, owner, mtime, content or target)."""
    out = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        rel = "/" + str(path.relative_to(root)) if path != root else "/"
        if stat.S_ISLNK(st.st_mode):
            body = "-> " + os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            body = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        else:
            body = "dir"
        mode = "" if stat.S_ISLNK(st.st_mode) else f"{stat.S_IMODE(st.st_mode):04o}"
        mtime = "" if stat.S_ISLNK(st.st_mode) else str(int(st.st_mtime))
        out[rel] = f"{mode} {st.st_uid}:{st.st_gid} {mtime} {body}"
    return out


@pytest.fixture
def planned(tree: Tree, tmp_path: Path) -> tuple[Plan, DirView]:
    tree.glibc()
    tree.lib(f"{LIBDIR}/libapp.so.1", soname="libapp.so.1")
    tree.prog("/usr/bin/app", needs=[f"{LIBDIR}/libapp.so.1"])
    os.link(tree.host("/usr/bin/app"), tree.host("/usr/bin/app-link"))
    tree.write("/etc/app/secret.conf", "k=v\n", mode=0o640)
    os.chown(tree.host("/etc/app/secret.conf"), 33, 33)
    tree.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n")
    tree.write("/etc/group", "root:x:0:\nwww-data:x:33:\n")
    profile_file = tmp_path / "app.yaml"
    profile_file.write_text(
        "schema: distill/v1\nextends: [glibc]\nbinaries: [/usr/bin/app, /usr/bin/app-link]\n"
        "paths:\n  /etc/app/**: {}\n  /srv/www/: {make: true, mode: '2775', owner: www-data}\n"
        "  /usr/bin/su-helper: {text: x, mode: '4755'}\n"
    )
    view = DirView(tree.root)
    return make_plan(view, load_profile(str(profile_file)), epoch=1_700_000_000), view


def write(plan: Plan, view: DirView, ref: str) -> None:
    transport, _, path = ref.partition(":")
    write_plan(plan, view, Ref(transport, path))


def test_rootfs_keeps_owners_modes_links_and_times(planned: tuple[Plan, DirView], tmp_path: Path) -> None:
    plan, view = planned
    out = tmp_path / "out"
    write(plan, view, f"rootfs:{out}")
    tree = dump(out)
    assert tree["/etc/app/secret.conf"].startswith("0640 33:33 1700000000 ")
    assert tree["/srv/www"] == "2775 33:33 1700000000 dir"
    assert tree["/usr/bin/su-helper"].startswith("4755 0:0 ")
    assert tree["/lib"] == " 0:0  -> usr/lib"
    assert os.stat(out / "usr/bin/app").st_ino == os.stat(out / "usr/bin/app-link").st_ino
    assert not (out / "etc/shadow").exists()


def test_a_rootfs_output_on_another_filesystem_holds_the_same_tree(planned: tuple[Plan, DirView], tmp_path: Path) -> None:
    """Files are copied in the kernel (copy_file_range); from a tmpfs to this disk the kernel refuses (EXDEV)
    and the copy goes through a buffer instead: the same bytes, owners, modes and times either way."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    plan, view = planned
    write(plan, view, f"rootfs:{tmp_path / 'same-fs'}")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        out = mount / "out"
        write(plan, view, f"rootfs:{out}")  # the source on this disk, the output on the tmpfs
        assert dump(out) == dump(tmp_path / "same-fs")
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _refusing(error: int | None) -> object:
    """copy_file_range as a kernel that will not copy: an errno, or 0 bytes (None)."""

    def copy_file_range(*args: object) -> int:
        if error is None:
            return 0
        raise OSError(error, os.strerror(error))

    return copy_file_range


@pytest.mark.parametrize("error", [errno.EPERM, errno.ENOSYS, None], ids=["EPERM", "ENOSYS", "zero-bytes"])
def test_a_kernel_that_will_not_copy_leaves_the_copy_to_a_buffer(
    planned: tuple[Plan, DirView], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int | None
) -> None:
    """A fake kernel, because no real part here refuses this way: container seccomp profiles answer
    copy_file_range with EPERM, old kernels with ENOSYS, some filesystems copy 0 bytes. (EXDEV is real:
    the tmpfs test above.)"""
    plan, view = planned
    write(plan, view, f"rootfs:{tmp_path / 'kernel'}")
    monkeypatch.setattr(os, "copy_file_range", _refusing(error))
    write(plan, view, f"rootfs:{tmp_path / 'buffer'}")
    assert dump(tmp_path / "buffer") == dump(tmp_path / "kernel")


def test_a_copy_that_fails_part_way_is_an_error(planned: tuple[Plan, DirView], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the kernel has written part of a file, an error is real (here a faked EIO): exit 5, nothing left."""
    plan, view = planned
    copied: list[int] = []
    real = os.copy_file_range

    def failing(source: int, target: int, count: int) -> int:
        if copied:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        copied.append(real(source, target, 1))
        return copied[0]

    monkeypatch.setattr(os, "copy_file_range", failing)
    with pytest.raises(DestinationError, match=r"cannot write /\S+: Input/output error"):
        write(plan, view, f"rootfs:{tmp_path / 'out'}")
    assert not (tmp_path / "out").exists()


def test_layer_and_rootfs_outputs_hold_the_same_tree(planned: tuple[Plan, DirView], tmp_path: Path) -> None:
    plan, view = planned
    write(plan, view, f"rootfs:{tmp_path / 'tree'}")
    write(plan, view, f"layer:{tmp_path / 'layer.tar'}")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(tmp_path / "layer.tar"), "-C", str(unpacked)], check=True)
    os.utime(unpacked, (1_700_000_000, 1_700_000_000))
    assert dump(unpacked) == dump(tmp_path / "tree")


def test_layer_format_is_canonical(planned: tuple[Plan, DirView], tmp_path: Path) -> None:
    plan, view = planned
    layer = tmp_path / "layer.tar"
    write(plan, view, f"layer:{layer}")
    with tarfile.open(layer) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "."
    assert names[1:] == sorted(names[1:], key=lambda n: [part.encode() for part in n.split("/")])
    seen = {"."}
    for member in members[1:]:
        parent = member.name.rsplit("/", 1)[0] if "/" in member.name else "."
        assert parent in seen, f"{member.name} comes before its parent"
        seen.add(member.name)
        assert (member.uname, member.gname) == ("", "")
        assert member.type in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE)
        assert not member.name.split("/")[-1].startswith(".wh.")
    link = next(m for m in members if m.name == "usr/bin/app-link")
    assert (link.type, link.linkname) == (tarfile.LNKTYPE, "usr/bin/app")
    assert layer.read_bytes()[257:263] == b"ustar\x00"  # POSIX (PAX) headers, not GNU


def test_gzip_layer_has_no_time_or_name_and_is_reproducible(planned: tuple[Plan, DirView], tmp_path: Path) -> None:
    plan, view = planned
    write(plan, view, f"layer:{tmp_path / 'a.tar.gz'}")
    write(plan, view, f"layer:{tmp_path / 'b.tar.gz'}")
    data = (tmp_path / "a.tar.gz").read_bytes()
    assert data == (tmp_path / "b.tar.gz").read_bytes()
    assert data[3] & 0x08 == 0, "FNAME flag set"
    assert data[4:8] == b"\0\0\0\0", "MTIME set"
    assert gzip.decompress(data)[257:263] == b"ustar\x00"


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, (3 << 20) + 12345])
def test_parallel_gzip_is_one_valid_member_whatever_the_threads(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks on either side of the 1 MiB boundaries: GNU gzip (the peer) and Python's gzip read back the
    input, and one thread or four, and any cut of the input into writes, give the same bytes."""
    seed = hashlib.sha256(str(size).encode()).digest()
    data = b"".join(hashlib.sha256(seed + bytes([n % 7])).digest() for n in range(size // 32 + 1))[:size]  # compressible
    outputs = []
    for cores, piece in ((1, len(data) or 1), (4, 4096), (4, 777_777)):  # the threads, and how the input is cut into writes
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        out = io.BytesIO()
        with GzipWriter(out) as writer:  # type: ignore[arg-type]
            for at in range(0, len(data), piece):
                writer.write(data[at : at + piece])
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    assert gzip.decompress(outputs[0]) == data
    peer = subprocess.run(["gzip", "-dc"], input=outputs[0], capture_output=True, check=True)
    assert peer.stdout == data


def test_a_gzip_layer_file_is_the_images_layer_blob(tmp_path: Path) -> None:
    """`layer:X.tar.gz` and an image destination of the same run hold the same compressed bytes."""
    tree = Tree(tmp_path / "src")
    tree.app()
    outputs = ["--out", f"layer:{tmp_path / 'layer.tar.gz'}", "--out", f"oci:{tmp_path / 'oci'}:app"]
    command = [sys.executable, "-m", "distill", "/usr/bin/app", "--from", f"rootfs:{tree.root}", "-q", *outputs]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    blobs = tmp_path / "oci/blobs/sha256"
    (entry,) = json.loads((tmp_path / "oci/index.json").read_text())["manifests"]
    layer = json.loads((blobs / entry["digest"].removeprefix("sha256:")).read_text())["layers"][-1]["digest"]
    assert (blobs / layer.removeprefix("sha256:")).read_bytes() == (tmp_path / "layer.tar.gz").read_bytes()


def test_a_run_with_an_image_and_a_gzip_layer_file_compresses_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer file is the image's layer blob, copied: the plan is compressed once per run, not once per sink."""
    from distill import cli, tarstream

    tree = Tree(tmp_path / "src")
    tree.app()
    compressions = []
    original = tarstream.GzipWriter.__init__

    def counted(self: tarstream.GzipWriter, *args: object, **kwargs: object) -> None:
        compressions.append(1)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tarstream.GzipWriter, "__init__", counted)
    outputs = [
        "--out",
        f"layer:{tmp_path / 'layer.tar.gz'}",
        "--out",
        f"oci:{tmp_path / 'oci'}:app",
        "--out",
        f"layer:{tmp_path / 'b.tgz'}",
        "--out",
        f"layer:{tmp_path / 'c.tar'}",  # a plain tar: written from the plan, the same tar
    ]
    with pytest.raises(SystemExit) as exited:
        cli.main(["/usr/bin/app", "--from", f"rootfs:{tree.root}", "-q", *outputs])
    assert exited.value.code == 0
    assert len(compressions) == 1
    assert (tmp_path / "layer.tar.gz").read_bytes() == (tmp_path / "b.tgz").read_bytes()
    assert gzip.decompress((tmp_path / "layer.tar.gz").read_bytes()) == (tmp_path / "c.tar").read_bytes()
    with tarfile.open(tmp_path / "c.tar") as tar:
        assert tar.getnames()  # a tar with members, not an empty file


def test_a_non_empty_destination_is_refused_without_force(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(DestinationError) as caught:
        check_destination(Ref("rootfs", str(dest)), source_root=None, force=False)
    assert caught.value.message == f"rootfs:{dest}: already exists and is not empty; use --force to replace it"
    check_destination(Ref("rootfs", str(dest)), source_root=None, force=True)
    (tmp_path / "empty").mkdir()
    check_destination(Ref("rootfs", str(tmp_path / "empty")), source_root=None, force=False)


@pytest.mark.parametrize("where", ["inside", "around", "same"])
def test_writing_into_the_source_is_refused(tmp_path: Path, where: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    dest = {"inside": source / "out", "around": tmp_path, "same": source}[where]
    with pytest.raises(DestinationError) as caught:
        check_destination(Ref("rootfs", str(dest)), source_root=str(source), force=True)
    assert "overlaps the source" in caught.value.message


def test_a_failed_write_leaves_the_destination_as_it_was(planned: tuple[Plan, DirView], tmp_path: Path) -> None:
    plan, view = planned
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old").write_text("previous output")
    os.unlink(os.path.join(view.root, "etc/app/secret.conf"))  # vanishes between planning and writing
    for ref in (f"rootfs:{dest}", f"layer:{tmp_path / 'x.tar'}"):
        with pytest.raises(SourceError):
            write(plan, view, ref)
    assert (dest / "old").read_text() == "previous output" and sorted(os.listdir(dest)) == ["old"]
    assert sorted(os.listdir(tmp_path)) == ["app.yaml", "out", "root"]  # no temporary siblings left


def test_force_replaces_a_previous_output(planned: tuple[Plan, DirView], tmp_path: Path) -> None:
    plan, view = planned
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale").write_text("x")
    write(plan, view, f"rootfs:{dest}")
    assert not (dest / "stale").exists() and (dest / "usr/bin/app").is_file()
    assert [n for n in os.listdir(tmp_path) if ".distill-" in n] == []


# -- the rootfs source: reads stay inside the root ---------------------------------------------------


def _read(view: DirView, path: str) -> bytes:
    with view.open(path) as stream:
        return stream.read()


def test_a_directory_view_never_opens_through_a_linked_directory(tmp_path: Path) -> None:
    """DirView.open takes canonical paths; a directory that is a symlink (to the host) is refused, not followed."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host file")
    tree = Tree(tmp_path / "root")
    tree.write("/etc/inside", "inside")
    tree.symlink("/etc/out", str(host))
    view = DirView(tree.root)
    assert _read(view, "/etc/inside") == b"inside"
    with pytest.raises(SourceError, match="cannot open /etc/out/secret"):
        _read(view, "/etc/out/secret")


def test_a_directory_swapped_for_a_link_after_a_read_is_not_followed(tmp_path: Path) -> None:
    """A hostile source changing under distill: a directory swapped for a symlink to the host after a
    first read leads no later read outside the root."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "a").write_text("host file")
    tree = Tree(tmp_path / "root")
    tree.write("/var/lib/a", "before")
    view = DirView(tree.root)
    assert _read(view, "/var/lib/a") == b"before"
    os.rename(tree.host("/var/lib"), tree.host("/var/old"))
    tree.symlink("/var/lib", str(host))
    with pytest.raises(SourceError, match="cannot open /var/lib/a"):
        _read(view, "/var/lib/a")


def test_the_directory_totals_count_regular_files_only(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "root")
    tree.write("/a/one", "1")
    tree.write("/a/b/two", "22")
    tree.symlink("/a/link", "one")
    tree.symlink("/c", "/a")  # a linked directory is not walked twice
    view = DirView(tree.root)
    assert view.file_totals() == (2, 3) == view.file_totals_ahead()()
