"""distill's tar header reader (distill/oci/tarindex.py) against the standard library's `tarfile`, the
reader the layer index used before (its code kept as the oracle in tests/helpers/tarfile_index.py): the
same members, notes and errors on real layers, on tars written by GNU tar and by `tarfile` in every
format, on hand-made edge cases and on mutated layers.

Where the two differ on purpose (docs in tarindex.py), the test says so: a sparse file in pax format is
refused instead of misread; a negative size that would send `tarfile` back to an earlier header (it
then loops forever) is refused; where `tarfile` crashes (an IndexError, a RecursionError, an OSError),
distill says SourceError.

distill frames pax records as the patched `tarfile` does (the fix of CVE-2024-6232, in CPython 3.11.10,
3.12.6 and Debian's 3.11.2-6+deb12u4). The suite may run on an unpatched one (pyenv's 3.11.7): there,
where that tarfile reads a pax header of the layer otherwise (a keyword running past its record, a short
length, records that stop silently, a hdrcharset that is not UTF-8), it is no oracle and distill's own
answer is expected (`compare`, and the explicit answers of `test_pax_records_are_framed_by_their_length`)."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.errors import SourceError
from distill.oci import tarindex

from helpers import fat_rootfs
from helpers.images import DEBIAN11_BASE, DEBIAN12_BASE, dev_layout, distroless_layout, fat_layout
from helpers.platforms import index_layout
from helpers.tarfile_index import FRAMES_PAX_RECORDS, tarfile_index, tarfile_stop, unpatched_misreads

WHERE = "layer 1 (test)"
Outcome = tuple[str, object]


def outcome(read: object, spool: Path) -> Outcome:
    try:
        return "ok", read(spool, WHERE)  # type: ignore[operator]
    except SourceError as exc:
        return "refused", str(exc)
    except Exception as exc:  # the oracle's crashes (tarfile raises IndexError, OSError, RecursionError on some inputs)
        return "crashed", f"{type(exc).__name__}: {exc}"


def compare(spool: Path) -> Outcome:
    """Both readers on `spool`: what they agree on. Members and notes must be identical, and so must every
    member-level error; for a stream `tarfile` calls invalid, distill must refuse too (its message names
    the header's offset instead of tarfile's exception)."""
    ours = outcome(tarindex.members, spool)
    if ours[0] == "refused" and "would move the next header back" in str(ours[1]):
        return ours  # tarfile would read the earlier headers again, forever
    theirs = outcome(tarfile_index, spool)
    assert ours[0] != "crashed", ours
    if not FRAMES_PAX_RECORDS and ours != theirs and unpatched_misreads(spool.read_bytes()):
        return ours  # this tarfile lacks the CVE-2024-6232 fix and misreads a pax header of the layer: no oracle
    if ours[0] == "refused" and str(ours[1]).endswith("has an unsupported type: a GNU sparse file"):
        return ours  # tarfile reads it as one file of its whole size over the stored chunks, or trips on its map
    if theirs[0] == "ok" and ours[0] == "refused" and not str(ours[1]).startswith(f"{WHERE}: member "):
        # tarfile ended the archive silently at a block that is not a header (nor the end-of-archive marker),
        # dropping the rest of the layer; distill refuses that block, as Go's archive/tar does
        stop = tarfile_stop(spool)
        assert str(ours[1]).startswith(f"{WHERE}: not a valid tar stream: the header at byte {stop:,} "), (ours, stop)
        assert stop < spool.stat().st_size and spool.read_bytes()[stop : stop + 2 * 512] != bytes(1024), (ours, stop)
    elif theirs[0] == "ok" or ours[0] == "ok":
        assert ours == theirs
    elif theirs[0] == "refused" and "not a valid tar stream" not in str(theirs[1]):
        assert ours == theirs  # a member-level refusal: the same message
    elif theirs[0] == "refused":  # the stream itself: both say so, in their own words
        assert ours[0] == "refused" and str(ours[1]).startswith(WHERE + ": not a valid tar stream: "), (ours, theirs)
    else:  # tarfile crashed
        assert ours[0] == "refused" and str(ours[1]).startswith(WHERE + ": "), (ours, theirs)
    return ours


def both_paths(spool: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """`compare`, then the reader again with its fast loop off (every header through `_Reader.chain`)."""
    result = compare(spool)
    with monkeypatch.context() as patch:
        patch.setattr(tarindex, "_FAST", frozenset())
        assert outcome(tarindex.members, spool) == result
    return result


# -- real layers ------------------------------------------------------------------------------------


def layout_layers(layout: Path) -> list[bytes]:
    """Every gzip layer blob of an OCI layout (of each platform in an index), uncompressed."""
    blobs = sorted((layout / "blobs/sha256").iterdir())
    return [gzip.decompress(blob.read_bytes()) for blob in blobs if blob.read_bytes()[:2] == b"\x1f\x8b"]


LAYOUTS = {
    "fat-nginx-umoci": fat_layout,
    "dev-umoci": dev_layout,
    "distroless12-umoci": lambda: distroless_layout("bookworm", DEBIAN12_BASE),
    "distroless11-umoci": lambda: distroless_layout("bullseye", DEBIAN11_BASE),
    "amd64-arm64-ppc64el-umoci": lambda: index_layout(("amd64", "arm64", "ppc64el")),
}


@pytest.mark.rootfs
@pytest.mark.slow
@pytest.mark.parametrize("name", LAYOUTS)
def test_the_layers_of_the_test_images_read_the_same(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for number, raw in enumerate(layout_layers(LAYOUTS[name]())):
        spool = tmp_path / f"{number}.tar"
        spool.write_bytes(raw)
        kind, (rows, _notes) = both_paths(spool, monkeypatch)  # type: ignore[misc]
        assert kind == "ok" and len(rows) > 10
        spool.unlink()


ROOTS = {
    "bookworm-nginx-gnu": (fat_rootfs, "gnu"),
    "trixie-openssh-posix": (lambda: fat_rootfs(("openssh-server", "openssh-client"), suite="trixie"), "posix"),
}


@pytest.mark.rootfs
@pytest.mark.slow
@pytest.mark.parametrize("name", ROOTS)
def test_fat_roots_packed_by_gnu_tar_read_the_same(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root_of, form = ROOTS[name]
    spool = tmp_path / "layer.tar"
    subprocess.run(["tar", f"--format={form}", "-cf", str(spool), "-C", str(root_of()), "."], check=True)
    kind, (rows, _notes) = both_paths(spool, monkeypatch)  # type: ignore[misc]
    assert kind == "ok" and len(rows) > 1000


# -- GNU tar's formats ------------------------------------------------------------------------------


def odd_tree(root: Path, sparse: bool = False) -> Path:
    """Names of 99, 100, 101, 150, 254, 255, 256 and 300 bytes (in directories of long names too), a long
    link target, non-UTF-8 bytes in a name, an owner past 2^21 (base-256 in the GNU format, a pax record
    in POSIX), times before 1970 and after 2242, hard links, devices, a fifo, setuid bits."""
    root.mkdir()
    deep = root / ("d" * 90) / ("e" * 90) / ("f" * 90)
    deep.mkdir(parents=True)
    for length in (99, 100, 101, 150, 254, 255):
        (root / ("n" * length)).write_text(str(length))
        (deep / ("m" * (length - 100 if length > 150 else length))).write_text("deep")
    os.symlink("t" * 200 + "/target", root / "long-link")
    os.symlink("../" + "x" * 99, root / "link-100")
    (root / "hard-source").write_text("shared")
    os.link(root / "hard-source", root / ("h" * 120))
    os.link(root / "hard-source", deep / "hard")
    os.mknod(root / "char", 0o620 | 0o020000, os.makedev(4, 64))
    os.mknod(root / "block", 0o660 | 0o060000, os.makedev(8, 1))
    os.mkfifo(root / "fifo")
    latin = os.fsencode(root) + b"/caf\xe9-\xff"
    with open(latin, "wb") as out:
        out.write(b"latin-1 name")
    (root / "setuid").write_text("s")
    os.chmod(root / "setuid", 0o4755)
    (root / "big-owner").write_text("o")
    os.chown(root / "big-owner", 3_000_000, 2_500_000)
    (root / "old").write_text("before 1970")
    os.utime(root / "old", (-86_400 * 400, -86_400 * 400))
    (root / "future").write_text("2514")
    os.utime(root / "future", (1 << 34, 1 << 34))
    if sparse:
        with open(root / "sparse", "wb") as out:
            out.seek(3 << 20)
            out.write(b"end")
            out.seek(1 << 20)
            out.write(b"middle")
    return root


FORMATS = ["gnu", "oldgnu", "posix", "ustar", "v7"]


@pytest.fixture(scope="module")
def gnu_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return odd_tree(tmp_path_factory.mktemp("gnu") / "tree")


def gnu_tar(tree: Path, out: Path, form: str, *options: str) -> Path:
    """GNU tar's archive of `tree`; it leaves out what the format cannot hold (and exits 2), which is fine here."""
    result = subprocess.run(["tar", f"--format={form}", *options, "-cf", str(out), "-C", str(tree), "."], capture_output=True)
    assert result.returncode in (0, 2) and out.stat().st_size >= 10_240, result.stderr
    return out


@pytest.mark.parametrize("form", FORMATS)
def test_gnu_tar_formats_read_the_same(gnu_tree: Path, tmp_path: Path, form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kind, (rows, notes) = both_paths(gnu_tar(gnu_tree, tmp_path / "layer.tar", form), monkeypatch)  # type: ignore[misc]
    assert kind == "ok"
    names = {row.name: row for row in rows}
    assert len(rows) > 5
    if form in ("gnu", "oldgnu", "posix"):  # formats that hold every name and owner
        assert any(len(name) > 300 for name in names) and names["/big-owner"].uid == 3_000_000
        assert "/caf\udce9-\udcff" in names and names["/long-link"].linkname.startswith("t" * 200)
        assert names["/" + "h" * 120].type == "hardlink" and names["/char"].type == "char"
        assert any(note.startswith("/old (mtime -") for note in notes)


def test_gnu_tar_sparse_files_are_refused_as_an_unsupported_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = odd_tree(tmp_path / "tree", sparse=True)
    for form in ("gnu", "oldgnu"):  # an `S` header: tarfile reads it, and distill refused its type before too
        kind, message = both_paths(gnu_tar(tree, tmp_path / f"{form}.tar", form, "--sparse"), monkeypatch)
        assert kind == "refused" and "'./sparse' has an unsupported type b'S'" in str(message)
    spool = gnu_tar(tree, tmp_path / "posix.tar", "posix", "--sparse")
    kind, message = outcome(tarindex.members, spool)
    assert kind == "refused" and message == f"{WHERE}: member './sparse' has an unsupported type: a GNU sparse file"
    kind, message = outcome(tarfile_index, spool)  # tarfile: one file of the whole size over the map and chunks stored
    assert kind == "refused" and f"'./sparse' claims {(3 << 20) + 3} bytes past the end of the layer" in str(message)


# -- the standard library's writer, every format ----------------------------------------------------


def python_tar(form: int, global_headers: dict[str, str] | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=form, pax_headers=global_headers) as tar:

        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: object) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode, info.mtime = kind, len(data), 0o644, 1_700_000_000
            for key, value in fields.items():
                setattr(info, key, value)
            with contextlib.suppress(ValueError):  # a field the format cannot hold: tarfile writes nothing of it
                tar.addfile(info, io.BytesIO(data) if data else None)

        add("./etc/", tarfile.DIRTYPE)
        add("etc/passwd", data=b"root:x:0:0\n")
        add("usr/" + "long/" * 40 + "name", data=b"deep")
        add("usr/lib/" + "p" * 120, data=b"over 100")
        add("link", tarfile.SYMTYPE, linkname="l" * 150)
        add("hard", tarfile.LNKTYPE, linkname="etc/passwd")
        add("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)
        add("run/fifo", tarfile.FIFOTYPE)
        add("caf\udce9", data=b"not UTF-8")
        add("d\u00e9j\u00e0-vu", data=b"UTF-8")
        add("owners", data=b"o", uid=3_000_000, gid=(1 << 32) - 2)
        add("too-big-owner", data=b"o", uid=1 << 40)
        add("fraction", data=b"f", mtime=1_700_000_000.75)
        add("before-1970", data=b"b", mtime=-1000)
        add("etc/.wh.motd")
        add("var/.wh..wh..opq")
        add("contiguous", tarfile.CONTTYPE, data=b"7")
    return raw.getvalue()


@pytest.mark.parametrize("form", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["ustar", "gnu", "pax"])
@pytest.mark.parametrize(
    "global_headers", [None, {"comment": "global"}, {"mtime": "1.5", "uid": "7"}], ids=["none", "comment", "mtime-uid"]
)
def test_python_tarfile_formats_read_the_same(
    tmp_path: Path, form: int, global_headers: dict[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "layer.tar"
    spool.write_bytes(python_tar(form, global_headers))
    kind, result = both_paths(spool, monkeypatch)
    if form in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):  # both hold an owner of 2^40: refused by name
        assert kind == "refused" and "'too-big-owner' has uid 1099511627776" in str(result)
        with tarfile.open(spool) as tar:  # where its headers start, pax or long-name ones included
            cut = tar.getmember("too-big-owner").offset
        spool.write_bytes(spool.read_bytes()[:cut])  # the members before it, and no end blocks
        kind, result = both_paths(spool, monkeypatch)
    assert kind == "ok"


# -- edge cases by hand -----------------------------------------------------------------------------


def header(name: bytes, kind: bytes = b"0", size: int = 0, signed: bool = False, **fields: bytes) -> bytes:
    """One ustar header with a correct checksum (`signed`: a sum over signed chars, as Sun's tar wrote)."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108], block[108:116], block[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    block[124:136], block[136:148] = b"%011o\0" % size, b"14000000000\0"
    block[156:157], block[257:265] = kind, b"ustar\x0000"
    offsets = {"mode": 100, "uid": 108, "sizefield": 124, "mtime": 136, "link": 157, "magic": 257, "prefix": 345, "devmajor": 329}
    for field, value in fields.items():
        block[offsets[field] : offsets[field] + len(value)] = value
    block[148:156] = b" " * 8
    total = sum(b - 256 if signed and b >= 128 else b for b in block)
    block[148:156] = b"%06o\0 " % (total & 0o777777)
    return bytes(block)


def data(content: bytes) -> bytes:
    return content + bytes(-len(content) % 512)


def pax(kind: bytes, records: dict[bytes, bytes], raw: bytes = b"") -> bytes:
    body = b""
    for key, value in records.items():
        record = b" " + key + b"=" + value + b"\n"
        length = len(record) + len(str(len(record) + 3))
        length = len(record) + len(str(length))
        body += str(length).encode() + record
    body += raw
    return header(b"PaxHeaders/x", kind, len(body)) + data(body)


FILE = header(b"etc/file", size=5) + data(b"hello")
END = bytes(1024)
CASES = {
    "empty": b"",
    "one-zero-block": bytes(512),
    "no-end-blocks": FILE,
    "trailing-garbage-after-end": FILE + END + b"garbage" * 100,
    "garbage-instead-of-end": FILE + b"\x01" * 512,
    "garbage-at-start": b"\x01" * 512 + FILE,
    "lone-zero-block-then-member": FILE + bytes(512) + FILE + END,
    "one-zero-block-at-the-end": FILE + bytes(512),
    "whiteout-after-garbage": FILE + b"\x01" * 512 + header(b"etc/.wh.motd") + END,
    "half-a-header-at-the-end": FILE + header(b"next")[:300],
    "truncated-data": FILE[:520],
    "truncated-padding": header(b"etc/file", size=5) + b"hello",
    "signed-checksum": header("caf\u00e9".encode("latin-1"), signed=True) + END,
    "bad-checksum": FILE + header(b"x")[:148] + b"0000000\0" + header(b"x")[156:] + END,
    "v7-directory": header(b"olddir/", b"\0") + END,
    "prefix": header(b"name", prefix=b"some/prefix") + END,
    "base-256-size": header(b"big", sizefield=b"\x80" + bytes(10) + b"\x05") + data(b"12345") + END,
    "negative-size-dir": header(b"dir", b"5", sizefield=b"\xff" * 12) + END,
    "spaces-in-numbers": header(b"f", mode=b"  644  \0", uid=b"\x00" * 8) + END,
    "garbage-in-device": header(b"f", devmajor=b"zz\0") + END,
    "garbage-in-device-first": header(b"f", devmajor=b"zz\0") + FILE + END,
    "unknown-type": header(b"volume", b"V", size=5) + data(b"label") + FILE + END,
    "unknown-type-whiteout": header(b"a/.wh.b", b"V", size=5) + data(b"label") + FILE + END,
    "multivolume": header(b"cont", b"M", size=5) + data(b"xxxxx") + END,
    "pax-path-size-mtime": pax(b"x", {b"path": b"pax/name/", b"size": b"3", b"mtime": b"1.25", b"uid": b"12"})
    + header(b"short", size=5)
    + data(b"abc")
    + END,
    "pax-bad-numbers": pax(b"x", {b"size": b"zz", b"mtime": b"nan", b"gid": b"-1"}) + header(b"n", b"5") + END,
    "pax-global-then-member": pax(b"g", {b"mtime": b"1e15"}) + FILE + FILE + END,
    "pax-global-size": pax(b"g", {b"size": b"1"}) + FILE + END,
    "pax-global-path": pax(b"g", {b"path": b"same"}) + FILE + header(b"etc/dir", b"5") + END,
    "pax-x-then-g": pax(b"x", {b"path": b"x-wins"}) + pax(b"g", {b"path": b"g-loses"}) + FILE + END,
    "solaris-x": pax(b"X", {b"path": b"solaris"}) + FILE + END,
    "pax-zero-length-record": FILE + pax(b"x", {}, b"0 path=x\n") + FILE + END,
    "pax-zero-length-record-first": pax(b"x", {}, b"0 path=x\n") + FILE + END,
    "pax-zero-length-nested": FILE + pax(b"x", {b"a": b"b"}) + pax(b"x", {}, b"0 path=x\n") + FILE + END,
    "pax-binary-charset": pax(b"x", {b"hdrcharset": b"BINARY", b"path": b"caf\xe9"}) + FILE + END,
    "pax-charset-not-utf8": pax(b"x", {b"hdrcharset": b"\xff"}) + FILE + END,
    "pax-record-short-length": pax(b"x", {}, b"5 path=abcdef\n") + FILE + END,
    "pax-keyword-past-its-record": pax(b"x", {}, b"2 " * 64 + b"=\n") + FILE + END,
    "pax-keyword-past-its-record-later": FILE + pax(b"x", {}, b"2 " * 64 + b"=\n") + FILE + END,
    "pax-record-past-the-payload": pax(b"x", {}, b"99 path=x\n") + FILE + END,
    "pax-record-without-newline": pax(b"x", {}, b"12 path=abcd") + FILE + END,
    "pax-record-without-equals": pax(b"x", {}, b"8 pathx\n") + FILE + END,
    "pax-record-without-keyword": pax(b"x", {}, b"7 =abc\n") + FILE + END,
    "pax-length-of-21-digits": pax(b"x", {}, b"0" * 19 + b"25 path=x\n") + FILE + END,
    "pax-length-of-20-digits": pax(b"x", {}, b"0" * 18 + b"29 path=x\n") + FILE + END,
    "pax-garbage-after-records": FILE + pax(b"x", {b"path": b"abc"}, b"junk") + FILE + END,
    "pax-nul-after-records": pax(b"x", {b"path": b"abc"}, b"\0junk") + FILE + END,
    "pax-digits-only": pax(b"x", {}, b"1" * 3000) + FILE + END,
    "pax-charset-binary-then-other": pax(b"x", {b"hdrcharset": b"BINARY"}, b"17 hdrcharset=\xff\xfe\n13 path=caf\xe9\n") + FILE + END,
    "pax-huge-uid": pax(b"x", {b"uid": b"9" * 4000}) + FILE + END,
    "pax-huge-size-record": FILE + pax(b"x", {b"size": b"9" * 4000}) + FILE + END,
    "pax-underscored-size-past-the-layer": FILE + header(b"p", b"x", sizefield=b"1_000000202\0") + data(b"2 " * 200 + b"=\n") + FILE + END,
    "pax-length-past-ssize-t": FILE + pax(b"x", {}, b"30 path=x\n" + b"9" * 1000 + b"0 path=x\n") + FILE + END,
    "pax-nul-in-path": pax(b"x", {b"path": b"a\0b"}) + FILE + END,
    "pax-then-end": FILE + pax(b"x", {b"path": b"y"}) + END,
    "pax-then-eof": FILE + pax(b"x", {b"path": b"y"}),
    "pax-negative-size": FILE + header(b"p", b"x", sizefield=b"\xff" * 12) + FILE + END,
    "pax-huge-size": FILE + header(b"p", b"x", sizefield=b"\x80" + b"\xff" * 11) + FILE + END,
    "gnu-longname": header(b"././@LongLink", b"L", 300) + data(b"l" * 299 + b"/") + header(b"short", b"5") + END,
    "gnu-longlink": header(b"././@LongLink", b"K", 200) + data(b"t" * 200) + header(b"hard", b"1") + FILE + END,
    "gnu-longname-then-pax": header(b"x", b"L", 5) + data(b"longn") + pax(b"x", {b"path": b"pax"}) + FILE + END,
    "pax-then-gnu-longname": pax(b"x", {b"path": b"pax"}) + header(b"x", b"L", 5) + data(b"longn") + FILE + END,
    "gnu-longname-at-eof": FILE + header(b"x", b"L", 5) + data(b"longn"),
    "sparse-old-gnu": header(b"s", b"S", 5) + data(b"abcde") + END,
    "sparse-old-gnu-whiteout": header(b".wh.s", b"S", 5) + data(b"abcde") + FILE + END,
    "sparse-pax": pax(b"x", {b"GNU.sparse.major": b"1", b"GNU.sparse.minor": b"0", b"GNU.sparse.name": b"s"})
    + header(b"GNUSparseFile.0/s", size=512)
    + data(b"1\n0\n5\n")
    + END,
    "negative-size-whiteout-first": header(b".wh.gone", b"V", sizefield=b"-0001000000\0") + FILE + END,
    "negative-size-whiteout-later": FILE + header(b".wh.gone", b"V", sizefield=b"-0000001000\0") + FILE + END,
    "dotdot": header(b"../escape") + END,
    "root-as-file": header(b"./", b"0") + END,
    "big-uid": header(b"f", uid=b"\x80\0\0\x01\0\0\0\0") + END,
    "mtime-out-of-range": header(b"f", mtime=b"\xff" * 12) + header(b"g", mtime=b"\x80" + b"\xff" * 11) + END,
    "long-chain-of-pax": b"".join(pax(b"x", {b"path": b"p%d" % n}) for n in range(400)) + FILE + END,
}


@pytest.mark.parametrize("case", CASES)
def test_edge_cases_read_the_same(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = tmp_path / "layer.tar"
    spool.write_bytes(CASES[case])
    kind, result = both_paths(spool, monkeypatch)
    expected = {
        "no-end-blocks": "ok",
        "trailing-garbage-after-end": "ok",
        "garbage-instead-of-end": "refused",  # tarfile: the end of the archive (so below)
        "half-a-header-at-the-end": "refused",
        "bad-checksum": "refused",
        "lone-zero-block-then-member": "refused",
        "whiteout-after-garbage": "refused",  # tarfile: the whiteout is not read, the file it hides comes back
        "one-zero-block-at-the-end": "ok",
        "signed-checksum": "ok",
        "pax-zero-length-record": "refused",
        "pax-then-end": "refused",
        "sparse-pax": "refused",
        "negative-size-whiteout-later": "refused",
        "long-chain-of-pax": "ok",
        "pax-charset-not-utf8": "ok",  # unpatched tarfile: a UnicodeDecodeError
        "pax-record-short-length": "refused",  # unpatched tarfile: an empty path, so "names the root"
        "pax-keyword-past-its-record": "refused",  # unpatched tarfile: 32 records of up to 128-byte keywords
        "pax-keyword-past-its-record-later": "refused",
        "pax-record-past-the-payload": "refused",
        "pax-digits-only": "refused",
        "pax-nul-after-records": "ok",
        "pax-charset-binary-then-other": "ok",
        "pax-huge-uid": "refused",
        "pax-huge-size-record": "refused",
    }
    if case in expected:
        assert kind == expected[case], result


# -- pax records: framed by their length, in linear time and memory --------------------------------


def test_pax_records_are_framed_by_their_length(tmp_path: Path) -> None:
    """distill's answers where an unpatched tarfile (without the fix of CVE-2024-6232) reads otherwise: every
    record must lie within its declared length, end in a newline and hold "keyword="; anything else where
    a record would start is an invalid header, refused (tarfile: at offset 0; past it, the end of the archive)."""
    spool = tmp_path / "layer.tar"
    refused = {
        b"2 " * 64 + b"=\n": "a pax record of a bad length at byte 0",  # unpatched: 32 records of 128-byte keywords
        b"5 path=abcdef\n": "a pax record of a bad length at byte 0",  # unpatched: path "" (then "=abcdef" is skipped)
        b"12 path=abc\n12 path=abcd": "a pax record of a bad length at byte 12",  # unpatched: path "abc"
        b"12 path=abc\nxyz\n": "a pax record without a length at byte 12",  # unpatched: stops silently
        b"8 pathx\n12 path=abc\n": "a pax record without a keyword and '=' at byte 0",  # unpatched: path "abc"
        b"1" * 3000: "a pax record without a length at byte 0",
        b"0" * 19 + b"25 path=x\n": "a pax record without a length at byte 0",  # 21 digits
    }
    for payload, message in refused.items():
        spool.write_bytes(pax(b"x", {}, payload) + FILE + END)
        assert outcome(tarindex.members, spool) == (
            "refused",
            f"{WHERE}: not a valid tar stream: the header at byte 0 has {message} of its data",
        )
        spool.write_bytes(FILE + pax(b"x", {}, payload) + FILE + END)  # past offset 0: tarfile ends the archive
        assert outcome(tarindex.members, spool) == (
            "refused",
            f"{WHERE}: not a valid tar stream: the header at byte 1,024 has {message} of its data",
        )
    spool.write_bytes(pax(b"x", {b"hdrcharset": b"\xff"}, b"12 path=\xe9t\xe9\n\0garbage") + FILE + END)
    kind, (rows, _notes) = outcome(tarindex.members, spool)  # type: ignore[misc]  # unpatched: a UnicodeDecodeError
    assert kind == "ok" and [row.name for row in rows] == ["/\udce9t\udce9"]


def traced_peak(layer: bytes, spool: Path) -> int:
    """The peak of memory allocated by Python while distill indexes `layer` (its answer ignored)."""
    spool.write_bytes(layer)
    tracemalloc.start()
    try:
        outcome(tarindex.members, spool)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_pax_records_cost_memory_linear_in_their_size(tmp_path: Path) -> None:
    """A keyword may not run past its record: `2 2 2 ... =` made n/2 records of n-byte keywords (82 MiB for
    16 KiB; CVE-2024-6232). The peak at 4n must be about 4 times that at n, not 16, for that payload
    (refused once read) and for valid records of long keywords and values (read, the path taken)."""
    spool = tmp_path / "layer.tar"
    layers = (
        lambda n: FILE + pax(b"x", {}, b"2 " * n + b"=\n") + FILE + END,
        lambda n: (
            FILE + pax(b"x", {b"k%d" % i + b"k" * (n // 16): b"1" * (n // 16) for i in range(8)} | {b"path": b"p" * (n // 4)}) + FILE + END
        ),
    )
    for layer in layers:
        small, large = (traced_peak(layer(n), spool) for n in (8 << 10, 32 << 10))
        assert large < 6 * small, (small, large)
    kind, (rows, _notes) = outcome(tarindex.members, spool)  # type: ignore[misc]
    assert kind == "ok" and rows[1].name == "/" + "p" * (8 << 10)


def test_global_records_are_kept_once_not_copied_into_every_extended_header(tmp_path: Path) -> None:
    """Only the records distill reads are kept from a global header: 20,000 comment keys once, not in each of
    the 40 extended headers that follow (each had a copy: a 4 MiB global header and 200 of them took 1.5 GB)."""
    spool = tmp_path / "layer.tar"
    keys = b"".join(b"13 k%07d=\n" % number for number in range(20_000))
    glob = header(b"g", b"g", len(keys)) + data(keys) + pax(b"g", {b"mtime": b"7"})
    one = traced_peak(glob + pax(b"x", {b"uid": b"1"}) + FILE + END, spool)
    chain = traced_peak(glob + b"".join(pax(b"x", {b"uid": b"%d" % n}) for n in range(1, 41)) + FILE + END, spool)
    assert chain < 2 * one, (one, chain)
    kind, (rows, _notes) = compare(spool)  # type: ignore[misc]
    assert kind == "ok" and rows[0][1:6] == ("file", 0o644, 1, 0, 7)  # the outermost extended header wins


def test_numbers_in_messages_are_bounded(tmp_path: Path) -> None:
    """A pax number of 4,000 digits is named by its order of magnitude, not printed whole."""
    spool = tmp_path / "layer.tar"
    for key, message in ((b"uid", "has uid 2^13287 or more, outside"), (b"size", "claims 2^13287 or more bytes past the end")):
        spool.write_bytes(pax(b"x", {key: b"9" * 4000}) + FILE + END)
        kind, text = outcome(tarindex.members, spool)
        assert kind == "refused" and message in str(text) and len(str(text)) < 200, text
    spool.write_bytes(header(b"big", b"x", sizefield=b"\x80" + b"\xff" * 11) + END)
    assert outcome(tarindex.members, spool) == (
        "refused",
        f"{WHERE}: not a valid tar stream: the header at byte 0 has a size of 2^87 or more bytes",
    )
    assert tarindex.shown(-(1 << 64)) == "-2^64 or less" and tarindex.shown((1 << 64) - 1) == str((1 << 64) - 1)


# -- mutations: members or a SourceError, and the same as tarfile -----------------------------------

SEED = (
    pax(b"g", {b"comment": b"seed"})
    + header(b"etc/", b"5")
    + FILE
    + pax(b"x", {b"path": b"usr/lib/" + b"p" * 120, b"mtime": b"1.5"})
    + header(b"p", size=3)
    + data(b"abc")
    + header(b"././@LongLink", b"L", 120)
    + data(b"q" * 120)
    + header(b"q", b"2", link=b"target")
    + header(b"etc/.wh.motd")
    + header(b"hard", b"1", link=b"etc/file")
    + header(b"dev/null", b"3", devmajor=b"0000001\0")
    + END
)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    layer = bytearray(SEED)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(layer) - 1))
        how = draw(st.sampled_from(["byte", "field", "cut", "block"]))
        if how == "byte":
            layer[at] = draw(st.integers(0, 255))
        elif how == "field":
            value = draw(st.sampled_from([b"-1", b"\xff" * 8, b"\x80\0\0\0\0\0\0\x09", b"0", b"77777777777", b" ", b"x", b"V", b"S"]))
            layer[at : at + len(value)] = value
        elif how == "cut":
            del layer[at:]
            if not layer:
                layer += b"\0"
        else:
            start = at // 512 * 512
            layer[start:start] = draw(st.sampled_from([bytes(512), SEED[512:1024], b"\x01" * 512]))
    if draw(st.booleans()):  # most mutations break the checksum; fix it so the field itself is read
        for start in range(0, len(layer) - 511, 512):
            block = layer[start : start + 512]
            if block[257:262] == b"ustar":
                block[148:156] = b" " * 8
                block[148:156] = b"%06o\0 " % sum(block)
                layer[start : start + 512] = block
    return bytes(layer)


@settings(
    max_examples=int(os.environ.get("DISTILL_PROPERTY_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mutations())
def test_a_mutated_layer_gives_members_or_a_source_error_as_tarfile_does(tmp_path: Path, layer: bytes) -> None:
    spool = tmp_path / "layer.tar"
    spool.write_bytes(layer)
    compare(spool)
