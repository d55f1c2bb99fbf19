"""The ELF reader on files the tests compile with gcc and then break one field at a time: every break
is an ElfError naming the file, never another exception, a hang or a silent wrong answer."""

from __future__ import annotations

import io
import struct
import subprocess

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.elf import read_elf, sections, undefined_symbols
from distill.errors import ElfError

SOURCE = r"""
#include <pthread.h>
#include <stdio.h>
__asm__(".symver old_f, f@VER_1");
int old_f(void) { return 1; }
int g(void) { puts("x"); pthread_exit(0); return 2; }
"""
VERSIONS = "VER_1 { global: f; local: *; };\nVER_2 { global: g; } VER_1;\n"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("elf")
    (work / "l.c").write_text(SOURCE)
    (work / "v.map").write_text(VERSIONS)
    out = work / "libl.so.1"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libl.so.1", "-Wl,--version-script", str(work / "v.map"), "-Wl,-rpath,$ORIGIN/x",
         "-Wl,--enable-new-dtags", "-Wl,-z,nodefaultlib", "-o", str(out), str(work / "l.c"), "-lpthread"],
        check=True,
    )  # fmt: skip
    return out.read_bytes()


def parse(data: bytes) -> object:
    return read_elf(io.BytesIO(data), "/usr/lib/libl.so.1")


def dynamic_entry(data: bytes, tag: int) -> int:
    """The file offset of the first dynamic entry with `tag` (found by pyelftools, not by the reader under test)."""
    dynamic = ELFFile(io.BytesIO(data)).get_section_by_name(".dynamic")
    for at in range(dynamic["sh_offset"], dynamic["sh_offset"] + dynamic["sh_size"], 16):
        if struct.unpack_from("<q", data, at)[0] == tag:
            return at
    raise AssertionError(f"no dynamic tag {tag}")


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_what_the_loader_needs_is_read(library: bytes) -> None:
    info = read_elf(io.BytesIO(library), "libl")
    assert info.soname == "libl.so.1" and info.runpath == "$ORIGIN/x" and info.rpath is None
    assert "libc.so.6" in info.needed and info.nodeflib
    assert info.verdef == {"VER_1", "VER_2"}
    assert any(need.file == "libc.so.6" and ("GLIBC_2.2.5", False) in need.versions for need in info.verneed)
    assert undefined_symbols(io.BytesIO(library), "libl", frozenset({"pthread_exit", "f"})) == {"pthread_exit"}
    assert {".dynsym", ".dynstr", ".rodata"} <= {section.name for section in sections(io.BytesIO(library), "libl")}


@pytest.mark.parametrize(
    ("field", "fmt", "value", "says"),
    [
        (32, "<Q", 1 << 40, "program header table lies outside the file"),  # e_phoff
        (56, "<H", 0xFFFF, "program header table lies outside the file"),  # e_phnum
        (54, "<H", 8, "smaller than the ELF format says"),  # e_phentsize
    ],
)
def test_a_broken_header_is_refused_by_name(library: bytes, field: int, fmt: str, value: int, says: str) -> None:
    with pytest.raises(ElfError, match=f"^/usr/lib/libl.so.1: .*{says}"):
        parse(patched(library, field, fmt, value))


def test_a_name_outside_the_file_is_refused(library: bytes) -> None:
    at = dynamic_entry(library, 1)  # DT_NEEDED
    with pytest.raises(ElfError, match="^/usr/lib/libl.so.1: a DT_NEEDED name lies outside the file"):
        parse(patched(library, at + 8, "<Q", 1 << 30))


def test_a_short_string_table_size_still_gives_the_names(library: bytes) -> None:
    """ld.so reads names from memory without bounding them by DT_STRSZ, so the file loads: read it the same."""
    at = dynamic_entry(library, 10)  # DT_STRSZ
    assert parse(patched(library, at + 8, "<Q", 1)) == parse(library)


def test_a_string_table_outside_the_loaded_segments_is_refused(library: bytes) -> None:
    at = dynamic_entry(library, 5)  # DT_STRTAB
    with pytest.raises(ElfError, match="DT_STRTAB points outside the file's loadable segments"):
        parse(patched(library, at + 8, "<Q", 0xDEADBEEF000))


def test_a_huge_version_count_reads_only_the_linked_records(library: bytes) -> None:
    at = dynamic_entry(library, 0x6FFFFFFD)  # DT_VERDEFNUM: the chain's vd_next = 0 ends it, not the count
    assert parse(patched(library, at + 8, "<Q", 1 << 40)) == parse(library)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_corruption_is_an_answer_or_an_elf_error(library: bytes, data: st.DataObject) -> None:
    raw = bytearray(library)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        for read in (read_elf, sections, lambda stream, name: undefined_symbols(stream, name, frozenset({"pthread_exit"}))):
            try:
                read(io.BytesIO(candidate), "x")
            except ElfError as error:
                assert str(error).startswith("x: ")


def test_extended_section_numbering_is_followed(library: bytes) -> None:
    """Over 65,279 sections, e_shnum is 0 and e_shstrndx SHN_XINDEX; section 0 holds the real values (gABI)."""
    shoff, shnum, shstrndx = struct.unpack_from("<Q", library, 40)[0], *struct.unpack_from("<HH", library, 60)
    extended = patched(patched(library, 60, "<H", 0), 62, "<H", 0xFFFF)
    extended = patched(patched(extended, shoff + 32, "<Q", shnum), shoff + 40, "<I", shstrndx)  # section 0: sh_size, sh_link
    assert sections(io.BytesIO(extended), "x")[1:] == sections(io.BytesIO(library), "x")[1:]  # section 0 carries the counts
    assert undefined_symbols(io.BytesIO(extended), "x", frozenset({"pthread_exit"})) == {"pthread_exit"}
