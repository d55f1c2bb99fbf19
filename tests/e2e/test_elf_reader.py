"""distill's own ELF reader against pyelftools, an independent parser, on every ELF file of real Debian
roots (Debian 12 and 13 on amd64; 32-bit armhf and ppc64el): the same interpreter, dynamic names, flags,
version records and section headers.

pyelftools is a test dependency only: distill reads the few records the loader needs with `struct`
(docs/performance.md says why). Files pyelftools itself cannot parse are listed, not skipped quietly."""

from __future__ import annotations

from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection

from distill.elf import ElfInfo, read_elf, sections, undefined_symbols

from helpers import fat_rootfs
from helpers.platforms import platform_root

pytestmark = pytest.mark.rootfs


def reference(stream: object) -> dict[str, object]:
    """What pyelftools reads for the fields ElfInfo carries."""
    elf = ELFFile(stream)  # type: ignore[arg-type]
    facts: dict[str, object] = {"interp": None, "needed": (), "soname": None, "rpath": None, "runpath": None, "flags_1": 0}
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_INTERP":
            facts["interp"] = segment.get_interp_name()
        elif isinstance(segment, DynamicSegment):
            tags = list(segment.iter_tags())
            facts["needed"] = tuple(tag.needed for tag in tags if tag.entry.d_tag == "DT_NEEDED")
            for tag in tags:
                kind = tag.entry.d_tag
                if kind in ("DT_SONAME", "DT_RPATH", "DT_RUNPATH"):
                    facts[kind[3:].lower()] = getattr(tag, kind[3:].lower())
                elif kind == "DT_FLAGS_1":
                    facts["flags_1"] = tag.entry.d_val
    if facts["runpath"] is not None:
        facts["rpath"] = None
    needs, defines = [], set()
    for section in elf.iter_sections():
        if isinstance(section, GNUVerNeedSection):
            for need, auxes in section.iter_versions():
                needs.append((need.name, tuple((aux.name, bool(aux["vna_flags"] & 0x2)) for aux in auxes)))
        elif isinstance(section, GNUVerDefSection):
            for definition, auxes in section.iter_versions():
                if not definition["vd_flags"] & 0x1:
                    defines.add(next(iter(auxes)).name)
    facts["verneed"] = tuple(needs)
    facts["verdef"] = frozenset(defines)
    facts["sections"] = [(s.name, s["sh_offset"], s["sh_size"]) for s in elf.iter_sections()]
    return facts


def ours(info: ElfInfo) -> dict[str, object]:
    return {
        "interp": info.interp,
        "needed": info.needed,
        "soname": info.soname,
        "rpath": info.rpath,
        "runpath": info.runpath,
        "flags_1": info.flags_1,
        "verneed": tuple((need.file, need.versions) for need in info.verneed),
        "verdef": info.verdef,
    }


def elf_files(root: Path) -> list[Path]:
    found = []
    for top in ("usr/bin", "usr/sbin", "usr/lib"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and not path.is_symlink():
                with open(path, "rb") as stream:
                    if stream.read(4) == b"\x7fELF":
                        found.append(path)
    return found


ROOTS = {
    "bookworm-amd64": fat_rootfs,  # the fat nginx root of the differential test
    "trixie-amd64": lambda: fat_rootfs(("openssh-server", "openssh-client"), suite="trixie"),  # test_hints_openssh's
    "bookworm-armhf": lambda: platform_root("armhf"),  # ELFCLASS32 (test_platforms' roots)
    "bookworm-ppc64el": lambda: platform_root("ppc64el"),
}


@pytest.mark.parametrize("name", ROOTS)
def test_the_reader_agrees_with_pyelftools_on_every_debian_elf_file(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    fat_root = ROOTS[name]()
    files = elf_files(fat_root)
    assert len(files) > 100
    disagreements, with_versions, with_runpath = [], 0, 0
    for path in files:
        with open(path, "rb") as stream:
            expected = reference(stream)
            info = read_elf(stream, str(path))
            found_sections = [(s.name, s.offset, s.size) for s in sections(stream, str(path))]
        got = ours(info)
        got["sections"] = found_sections
        for key, value in expected.items():
            if got[key] != value:
                disagreements.append(f"{path.relative_to(fat_root)}: {key}: ours {got[key]!r} != pyelftools {value!r}")
        with_versions += bool(info.verneed)
        with_runpath += info.runpath is not None
    with capsys.disabled():
        print(
            f"\nELF reader, {name} (ELFCLASS{info.elf_class}): {len(files)} files, {with_versions} with version needs, {with_runpath} with DT_RUNPATH, {len(disagreements)} disagreements"
        )
    assert with_versions > len(files) // 2  # the comparison reached the version records, not only empty tuples
    assert not disagreements, "\n".join(disagreements[:20])


def test_undefined_symbols_finds_what_the_symbol_table_imports(fat_root: Path) -> None:
    libc = next(fat_root.glob("usr/lib/x86_64-linux-gnu/libc.so.6"))
    with open(fat_root / "usr/sbin/nginx", "rb") as stream:
        imported = undefined_symbols(stream, "nginx", frozenset({"pthread_exit", "malloc", "no_such_symbol"}))
    assert imported == {"malloc", "pthread_exit"}  # nginx's worker threads exit: why libgcc_s ships
    with open(libc, "rb") as stream:  # libc defines malloc: defined symbols never count
        assert undefined_symbols(stream, "libc", frozenset({"malloc"})) == frozenset()
