"""What the dynamic loader reads from an ELF file, as a frozen `ElfInfo`.

The identity fields come from the fixed-layout header (checked by hand, so a truncated or
lying header is refused before pyelftools sees it); the program interpreter, dynamic tags and
symbol versions come from pyelftools. Any parse failure becomes an `ElfError` naming the file.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, replace
from typing import IO, BinaryIO, cast

from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

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
    "DlopenNote",
    "ElfInfo",
    "undefined_symbols",
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
class DlopenNote:
    """One entry of a `.note.dlopen` ELF note (FDO spec): libraries the object may dlopen."""

    feature: str
    sonames: tuple[str, ...]
    priority: str  # required | recommended | suggested


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
    dlopen: tuple[DlopenNote, ...] = ()

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
        return _read_dynamic(ELFFile(stream), base, name)
    except ElfError:
        raise
    except Exception as exc:  # pyelftools raises many types on malformed input
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ElfError(f"{name}: malformed ELF ({detail}); the file cannot be loaded as a program or library") from None


def _read_dynamic(elf: ELFFile, base: ElfInfo, name: str) -> ElfInfo:
    interp = None
    dynamic = None
    loads: list[tuple[int, int, int]] = []
    notes: list[DlopenNote] = []
    for segment in elf.iter_segments():
        kind = segment["p_type"]
        if kind == "PT_INTERP":
            interp = cast(InterpSegment, segment).get_interp_name()
        elif kind == "PT_DYNAMIC":
            dynamic = cast(DynamicSegment, segment)
        elif kind == "PT_LOAD":
            loads.append((segment["p_vaddr"], segment["p_offset"], segment["p_filesz"]))
        elif kind == "PT_NOTE":
            notes.extend(_dlopen_notes(segment.data(), segment["p_align"], base.little_endian))
    if dynamic is None:
        return replace(base, interp=interp, dlopen=tuple(notes))
    needed: list[str] = []
    soname = rpath = runpath = None
    flags_1 = 0
    addresses: dict[str, int] = {}
    for tag in dynamic.iter_tags():
        kind = tag.entry.d_tag
        if kind == "DT_NEEDED":
            needed.append(vars(tag)["needed"])  # pyelftools sets the decoded string as an attribute
        elif kind == "DT_SONAME":
            soname = vars(tag)["soname"]
        elif kind == "DT_RPATH":
            rpath = vars(tag)["rpath"]
        elif kind == "DT_RUNPATH":
            runpath = vars(tag)["runpath"]
        elif kind == "DT_FLAGS_1":
            flags_1 = tag.entry.d_val
        elif kind in _VERSION_TAGS:
            addresses[kind] = tag.entry.d_val
        elif kind == "DT_NULL":
            break
    reader = _Versions(elf.stream, loads, addresses, little=base.little_endian)
    if "DT_STRTAB" in addresses and reader.strings_offset is None:
        raise ElfError(f"{name}: DT_STRTAB points outside the file's loadable segments; the loader cannot read its names")
    return replace(
        base,
        interp=interp,
        dynamic=True,
        soname=soname,
        needed=tuple(needed),
        rpath=None if runpath is not None else rpath,
        runpath=runpath,
        flags_1=flags_1,
        verneed=reader.needs(),
        verdef=reader.defines(),
        dlopen=tuple(notes),
    )


_FDO_DLOPEN = 0x407C0C0A
_MAX_NOTE = 1 << 16


def _dlopen_notes(data: bytes, align: int, little: bool) -> list[DlopenNote]:
    """`FDO` notes of type 0x407c0c0a: a JSON list of {feature, soname: [...], priority}."""
    order = "<" if little else ">"
    step = 8 if align == 8 else 4
    out: list[DlopenNote] = []
    at = 0
    while at + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from(order + "III", data, at)
        name_at = at + 12
        desc_at = name_at + -(-namesz // step) * step
        end = desc_at + -(-descsz // step) * step
        if descsz > _MAX_NOTE or end > len(data) or end <= at:
            break
        if kind == _FDO_DLOPEN and data[name_at : name_at + namesz].rstrip(b"\0") == b"FDO":
            out.extend(_parse_dlopen(data[desc_at : desc_at + descsz]))
        at = end
    return out


def _parse_dlopen(raw: bytes) -> list[DlopenNote]:
    try:
        entries = json.loads(raw.rstrip(b"\0").decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    out = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        sonames = entry.get("soname")
        if isinstance(sonames, list) and all(isinstance(n, str) and n and "/" not in n for n in sonames):
            priority = entry.get("priority", "recommended")
            out.append(
                DlopenNote(
                    str(entry.get("feature", "")),
                    tuple(sonames),
                    priority if priority in ("required", "recommended", "suggested") else "recommended",
                )
            )
    return out


def undefined_symbols(stream: BinaryIO, name: str, wanted: frozenset[str]) -> frozenset[str]:
    """Which of `wanted` the object imports (undefined in .dynsym), e.g. to see who calls pthread_cancel.

    Reads the raw symbol table: the string table is checked for the names first, so most objects
    cost one read of .dynstr.
    """
    try:
        stream.seek(0)
        elf = ELFFile(stream)
        table = elf.get_section_by_name(".dynsym")
        if table is None or table["sh_link"] >= elf.num_sections():
            return frozenset()
        strings = elf.get_section(table["sh_link"]).data()
        if not any(w.encode() + b"\0" in strings for w in wanted):
            return frozenset()
        order = "<" if elf.little_endian else ">"
        layout, size = (order + "IBBHQQ", 24) if elf.elfclass == 64 else (order + "IIIBBH", 16)
        found = set()
        for fields in struct.iter_unpack(layout, table.data()[: len(table.data()) // size * size]):
            offset, shndx = (fields[0], fields[3]) if elf.elfclass == 64 else (fields[0], fields[5])
            if shndx == 0 and offset < len(strings):
                symbol = strings[offset : strings.find(b"\0", offset)].decode("utf-8", "replace")
                if symbol in wanted:
                    found.add(symbol)
        return frozenset(found)
    except Exception as exc:  # pyelftools raises many types on malformed input
        raise ElfError(f"{name}: malformed symbol table ({type(exc).__name__})") from None


_VERSION_TAGS = ("DT_STRTAB", "DT_STRSZ", "DT_VERNEED", "DT_VERNEEDNUM", "DT_VERDEF", "DT_VERDEFNUM")
_MAX_VERSION_RECORDS = 4096


class _Versions:
    """DT_VERNEED and DT_VERDEF records, read through the dynamic segment's addresses.

    Reading from the dynamic tags rather than section headers works on stripped files too;
    every offset is bounds-checked and every chain is capped, so a hostile file cannot loop.
    """

    def __init__(self, stream: IO[bytes], loads: list[tuple[int, int, int]], tags: dict[str, int], *, little: bool) -> None:
        self.stream = stream
        self.loads = loads
        self.tags = tags
        self.order = "<" if little else ">"
        stream.seek(0, 2)
        self.size = stream.tell()
        self.strings = b""
        self.strings_offset = strtab = self._offset(tags.get("DT_STRTAB"))
        if strtab is not None:
            length = min(tags.get("DT_STRSZ", 0), self.size - strtab)
            stream.seek(strtab)
            self.strings = stream.read(max(length, 0))

    def _offset(self, address: int | None) -> int | None:
        if address is None:
            return None
        for vaddr, offset, filesz in self.loads:
            if vaddr <= address < vaddr + filesz:
                return offset + address - vaddr
        return None

    def _read(self, offset: int, fmt: str) -> tuple[int, ...] | None:
        size = struct.calcsize(self.order + fmt)
        if offset < 0 or offset + size > self.size:
            return None
        self.stream.seek(offset)
        return struct.unpack(self.order + fmt, self.stream.read(size))

    def _string(self, index: int) -> str:
        end = self.strings.find(b"\0", index)
        return self.strings[index : end if end >= 0 else len(self.strings)].decode("utf-8", "replace")

    def _chain(self, start: int | None, count: int, fmt: str, next_field: int) -> list[tuple[int, tuple[int, ...]]]:
        """(offset, fields) of up to `count` records linked by their `next` field."""
        out: list[tuple[int, tuple[int, ...]]] = []
        offset = start
        for _ in range(min(count, _MAX_VERSION_RECORDS)):
            if offset is None or (fields := self._read(offset, fmt)) is None:
                break
            out.append((offset, fields))
            if fields[next_field] == 0:
                break
            offset += fields[next_field]
        return out

    def needs(self) -> tuple[VersionNeed, ...]:
        out = []
        for offset, (_, count, file, aux, _) in self._chain(
            self._offset(self.tags.get("DT_VERNEED")), self.tags.get("DT_VERNEEDNUM", 0), "HHIII", 4
        ):
            versions = tuple(
                (self._string(name), bool(flags & VER_FLG_WEAK))
                for _, (_, flags, _, name, _) in self._chain(offset + aux, count, "IHHII", 4)
            )
            out.append(VersionNeed(self._string(file), versions))
        return tuple(out)

    def defines(self) -> frozenset[str]:
        out = set()
        for offset, (_, flags, _, count, _, aux, _) in self._chain(
            self._offset(self.tags.get("DT_VERDEF")), self.tags.get("DT_VERDEFNUM", 0), "HHHHIII", 6
        ):
            names = self._chain(offset + aux, count, "II", 1)
            # the first aux names the version; VER_FLG_BASE marks the file's own name, not a version
            if names and not flags & 0x1:
                out.add(self._string(names[0][1][0]))
        return frozenset(out)
