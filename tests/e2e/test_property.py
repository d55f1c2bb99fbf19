"""Property: whatever one field of a small image says, distill answers with a documented exit code.

Hypothesis mutates one JSON field of one image document (index.json, manifest, config, a
docker-archive's manifest.json), by type (null, booleans, huge and negative numbers, NaN,
odd strings, lists, objects, or the field removed), or one header field of one tar member
(raw bytes in any ustar field, checksum fixed or not, or a PAX record) of the image's layer or of
the docker-archive around it. Every run must end with 0, 2, 3, 4 or 5, print no traceback, leave
no half-written destination, and write nothing outside its destination and the cache.
The examples are derandomized and bounded, so `make test` stays quick and repeatable."""

from __future__ import annotations

import copy
import io
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers.crafted import DELETE, Crafted, app_members, paths_of, run, set_at, snapshot, tar_bytes, tiny_static_app

ALLOWED = {0, 2, 3, 4, 5}
SETTINGS = settings(
    max_examples=int(os.environ.get("DISTILL_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ODD_STRINGS = [
    "",
    "\ud800",
    "a\x00b",
    "../../etc/passwd",
    "/",
    ".",
    "sha256:" + "0" * 64,
    "sha256:xyz",
    "latest",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "1e400",
    "x" * 5000,
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**32 - 1, 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(ODD_STRINGS),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=8), SCALARS, max_size=3),
    st.just(DELETE),
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_static_app(tmp_path_factory.mktemp("app") / "app")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for every example (a warm cache must be as strict as a cold one); restored afterwards."""
    cache = tmp_path_factory.mktemp("cache")
    saved = {name: os.environ.get(name) for name in ("XDG_CACHE_HOME", "DISTILL_CACHE_MAX", "DISTILL_LAYER_MAX")}
    os.environ.update({"XDG_CACHE_HOME": str(cache), "DISTILL_CACHE_MAX": "64M", "DISTILL_LAYER_MAX": "16M"})
    try:
        yield cache
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check(crafted: Crafted, kind: str, outer: Any = None) -> None:
    """Write the image, distill it into an OCI layout and a rootfs, and hold the run to the property."""
    with tempfile.TemporaryDirectory(prefix="distill-property-") as work:
        root = Path(work)
        if kind == "oci":
            source = f"oci:{crafted.layout(root / 'image')}:latest"
        else:
            archive = crafted.docker_archive(root / "image.tar")
            if outer is not None:
                archive.write_bytes(outer(archive.read_bytes()))
            source = f"docker-archive:{archive}"
        before = snapshot(root)
        result = run("/usr/bin/app", "--from", source, "--out", f"oci:{root / 'out'}:x", "--out", f"rootfs:{root / 'rootfs'}", "-q")
        event(f"exit {result.code}")  # pytest --hypothesis-show-statistics shows the spread
        assert result.code in ALLOWED, result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
        if result.code != 0:
            assert result.stderr.count("distill: error: ") >= 1, result.stderr
            assert not (root / "out").exists() and not (root / "rootfs").exists()
        after = {k: v for k, v in snapshot(root).items() if not k.startswith(("out", "rootfs"))}
        assert after == before  # the source is untouched and nothing else appeared


# -- documents -----------------------------------------------------------------------------------------


def _base_documents(app: bytes) -> dict[str, Any]:
    crafted = Crafted([tar_bytes(app_members(app))])
    _, config, manifest, index = crafted.documents()
    archive = [{"Config": "x.json", "RepoTags": ["app:1"], "Layers": ["0/layer.tar"]}]
    return {"config": config, "manifest": manifest, "index": index, "archive": archive}


@st.composite
def document_mutations(draw: st.DrawFn, documents: dict[str, Any]) -> tuple[str, tuple[Any, ...], Any]:
    which = draw(st.sampled_from(sorted(documents)))
    path = draw(st.sampled_from(paths_of(documents[which])))
    value = draw(VALUES)
    if value is DELETE and not path:
        value = None
    return which, path, value


DOCUMENTS = _base_documents(b"placeholder")  # only the shape matters for choosing a path


@SETTINGS
@given(document_mutations(DOCUMENTS))
def test_any_one_field_of_any_document(app: bytes, shared_cache: Path, mutation: tuple[str, tuple[Any, ...], Any]) -> None:
    which, path, value = mutation

    def hook(document: Any) -> Any:
        return set_at(copy.deepcopy(document), path, value)

    layer = tar_bytes(app_members(app))
    if which == "archive":
        check(Crafted([layer], archive_hook=hook), "docker-archive")
    else:
        check(Crafted([layer], **{f"{which}_hook": hook}), "oci")
        if which == "config":  # a config reaches distill through an archive too
            check(Crafted([layer], config_hook=hook), "docker-archive")


# -- tar headers ---------------------------------------------------------------------------------------------

USTAR_FIELDS = {
    "name": (0, 100),
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "chksum": (148, 8),
    "typeflag": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 6),
    "version": (263, 2),
    "uname": (265, 32),
    "gname": (297, 32),
    "devmajor": (329, 8),
    "devminor": (337, 8),
    "prefix": (345, 155),
}
PAX_KEYS = ["path", "linkpath", "mtime", "atime", "uid", "gid", "size", "uname", "gname", "GNU.sparse.size", "comment"]
PAX_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["nan", "inf", "-1", "1e15", "1e400", str(2**40), str(2**64), "../../x", "/", ".", "a\x00b", "", "0", "4294967295"]),
)


def _fix_checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % (sum(header[:512]) & 0o777777)


def mutate_headers(data: bytes, member: int, field: str, raw: bytes, fix: bool) -> bytes:
    """`data` (a tar) with one ustar field of its `member`-th header overwritten."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        offsets = [info.offset for info in tar.getmembers()]
    start, length = USTAR_FIELDS[field]
    offset = offsets[member % len(offsets)]
    header = bytearray(data[offset : offset + 512])
    header[start : start + length] = raw[:length].ljust(length, b"\0")
    if fix and field != "chksum":
        _fix_checksum(header)
    return data[:offset] + bytes(header) + data[offset + 512 :]


@st.composite
def header_mutations(draw: st.DrawFn) -> tuple[str, Any]:
    if draw(st.booleans()):
        field = draw(st.sampled_from(sorted(USTAR_FIELDS)))
        length = USTAR_FIELDS[field][1]
        raw = draw(
            st.one_of(
                st.binary(min_size=1, max_size=length),
                st.sampled_from(
                    [
                        b"77777777777",
                        b"-1",
                        b"\x80" + b"\xff" * 7,
                        b"\xff" * 8,
                        b"../x",
                        b"/",
                        b"0000000",
                        b"7",
                        b"x\x00y",
                        b"1",
                        b"2",
                        b"3",
                        b"4",
                        b"5",
                        b"6",
                        b"K",
                        b"L",
                        b"x",
                        b"g",
                        b"S",
                    ]
                ),
            )
        )
        return "ustar", (draw(st.integers(0, 20)), field, raw, draw(st.booleans()))
    return "pax", (draw(st.integers(0, 20)), draw(st.sampled_from(PAX_KEYS)), draw(PAX_VALUES))


def _with_pax(app: bytes, member: int, key: str, value: str) -> bytes:
    members = app_members(app)
    info, _data = members[member % len(members)]
    info.pax_headers = {key: value}
    try:
        return tar_bytes(members)
    except (ValueError, UnicodeError):  # tarfile itself will not write it: nothing to test
        return tar_bytes(app_members(app))


@SETTINGS
@given(header_mutations(), st.sampled_from(["layer", "archive"]))
def test_any_one_tar_header_field(app: bytes, shared_cache: Path, mutation: tuple[str, Any], target: str) -> None:
    how, args = mutation
    plain = tar_bytes(app_members(app))
    if target == "layer":
        layer = _with_pax(app, *args) if how == "pax" else mutate_headers(plain, *args)
        check(Crafted([layer]), "oci")
    elif how == "ustar":
        check(Crafted([plain]), "docker-archive", outer=lambda data: mutate_headers(data, *args))
    else:
        check(Crafted([_with_pax(app, *args)]), "docker-archive")
