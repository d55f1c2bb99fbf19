"""What the dynamic loader reads from an ELF file, as a frozen `ElfInfo`.

The identity fields come from the fixed-layout header (checked by hand, so a truncated or
lying header is refused before pyelftools sees it); the program interpreter, dynamic tags and
symbol versions come from pyelftools. Any parse failure becomes an `ElfError` naming the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import BinaryIO

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import Section

from distill.errors import ElfError

__all__ = [
    "ELF_MAGIC",
    "ET_EXEC",
    "ET_DYN",
    "DF_1_NODEFLIB",
    "EM_386",
    "EM_ARM",
    "EM_X86_64",
    "EM_AARCH64",
    "VersionNeed",
    "ElfInfo",
    "is_elf",
    "read_elf",
]

ELF_MAGIC = b"\x7fELF"
ET_EXEC, ET_DYN = 2, 3
EM_386, EM_ARM, EM_X86_64, EM_AARCH64 = 3, 40, 62, 183
DF_1_NODEFLIB = 0x800
VER_FLG_WEAK = 0x2
_OSABI_SYSV, _OSABI_GNU = 0, 3


@dataclass(frozen=True)
class VersionNeed:
    """One DT_VERNEED record: versions this object needs from the library named `file`."""

    file: str
    versions: tuple[tuple[str, bool], ...]  # (version name, weak)


@dataclass(frozen=True)
class ElfInfo:
    """The loader-relevant facts of one ELF object."""

    elf_class: int  # 32 or 64
    little_endian: bool
    machine: int  # e_machine
    osabi: int
    type: int  # e_type
    flags: int  # e_flags
    interp: str | None = None
    dynamic: bool = False
    soname: str | None = None
    needed: tuple[str, ...] = ()
    rpath: str | None = None  # DT_RPATH, already dropped when DT_RUNPATH exists (as glibc does)
    runpath: str | None = None
    flags_1: int = 0
    verneed: tuple[VersionNeed, ...] = ()
    verdef: frozenset[str] = frozenset()

    def compatible_with(self, other: ElfInfo) -> bool:
        """Whether the loader would accept this object as a dependency of `other`."""
        return (
            self.elf_class == other.elf_class
            and self.little_endian == other.little_endian
            and self.machine == other.machine
            and _osabi_family(self.osabi) == _osabi_family(other.osabi)
        )

    @property
    def nodeflib(self) -> bool:
        return bool(self.flags_1 & DF_1_NODEFLIB)


def _osabi_family(osabi: int) -> int:
    # glibc accepts SYSV and GNU (Linux) objects alike
    return _OSABI_SYSV if osabi in (_OSABI_SYSV, _OSABI_GNU) else osabi


def is_elf(head: bytes) -> bool:
    """True when `head` starts with the ELF magic."""
    return head[:4] == ELF_MAGIC


def _header(stream: BinaryIO, name: str) -> tuple[int, bool, int, int, int, int]:
    ident = stream.read(64)
    if len(ident) < 52 or not is_elf(ident):
        raise ElfError(f"{name}: not an ELF file or truncated header")
    elf_class = {1: 32, 2: 64}.get(ident[4])
    little = {1: True, 2: False}.get(ident[5])
    if elf_class is None or little is None:
        raise ElfError(f"{name}: invalid ELF class or data encoding in the header")
    if elf_class == 64 and len(ident) < 64:
        raise ElfError(f"{name}: truncated ELF header")
    order = "<" if little else ">"
    e_type, e_machine = struct.unpack_from(order + "HH", ident, 16)
    flags_at = 48 if elf_class == 64 else 36
    (e_flags,) = struct.unpack_from(order + "I", ident, flags_at)
    return elf_class, little, ident[7], e_type, e_machine, e_flags


def read_elf(stream: BinaryIO, name: str) -> ElfInfo:
    """Parse the loader-relevant parts of the ELF in `stream`; `name` is used in messages."""
    elf_class, little, osabi, e_type, machine, e_flags = _header(stream, name)
    base = ElfInfo(elf_class, little, machine, osabi, e_type, e_flags)
    stream.seek(0)
    try:
        return _read_dynamic(ELFFile(stream), base)
    except ElfError:
        raise
    except Exception as exc:  # pyelftools raises many types on malformed input
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ElfError(f"{name}: malformed ELF ({detail}); the file cannot be loaded as a program or library") from None


def _read_dynamic(elf: ELFFile, base: ElfInfo) -> ElfInfo:
    interp = None
    dynamic = None
    for segment in elf.iter_segments():
        kind = segment["p_type"]
        if kind == "PT_INTERP":
            interp = segment.get_interp_name()
        elif kind == "PT_DYNAMIC":
            dynamic = segment
    if dynamic is None:
        return replace(base, interp=interp)
    needed: list[str] = []
    soname = rpath = runpath = None
    flags_1 = 0
    for tag in dynamic.iter_tags():
        kind = tag.entry.d_tag
        if kind == "DT_NEEDED":
            needed.append(tag.needed)
        elif kind == "DT_SONAME":
            soname = tag.soname
        elif kind == "DT_RPATH":
            rpath = tag.rpath
        elif kind == "DT_RUNPATH":
            runpath = tag.runpath
        elif kind == "DT_FLAGS_1":
            flags_1 = tag.entry.d_val
        elif kind == "DT_NULL":
            break
    verneed, verdef = _versions(elf)
    return replace(
        base,
        interp=interp,
        dynamic=True,
        soname=soname,
        needed=tuple(needed),
        rpath=None if runpath is not None else rpath,
        runpath=runpath,
        flags_1=flags_1,
        verneed=verneed,
        verdef=verdef,
    )


def _versions(elf: ELFFile) -> tuple[tuple[VersionNeed, ...], frozenset[str]]:
    needs: list[VersionNeed] = []
    defs: set[str] = set()
    for section in elf.iter_sections():
        kind = section["sh_type"]
        if kind == "SHT_GNU_verneed":
            needs.extend(_verneed(section))
        elif kind == "SHT_GNU_verdef":
            for verdef, aux in section.iter_versions():
                names = [entry.name for entry in aux]
                # the first aux names the version itself; later ones name its parents
                if names and not verdef["vd_flags"] & 0x1:  # VER_FLG_BASE names the file, not a version
                    defs.add(names[0])
    return tuple(needs), frozenset(defs)


def _verneed(section: Section) -> list[VersionNeed]:
    out = []
    for verneed, aux in section.iter_versions():
        versions = tuple((entry.name, bool(entry["vna_flags"] & VER_FLG_WEAK)) for entry in aux)
        out.append(VersionNeed(verneed.name, versions))
    return out


