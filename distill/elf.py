"""What the dynamic loader reads from an ELF file, as a frozen `ElfInfo`, and the few sections others scan.

The reader follows the loader, not the linker: program headers, then the dynamic segment, whose
string table and version records are found through their addresses in the PT_LOAD segments (so
stripped section headers do not matter). It unpacks only those records with `struct`, bounds-checks
every offset and caps every count, so a truncated or hostile file becomes an `ElfError` naming it.
Section headers are read only by `undefined_symbols` and `sections`, for the scans that need them.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

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
    "Section",
    "section_bytes",
    "sections",
    "undefined_symbols",
    "is_elf",
    "read_elf",
]

ELF_MAGIC = b"\x7fELF"
ET_EXEC, ET_DYN = 2, 3
EM_386, EM_ARM, EM_X86_64, EM_AARCH64 = 3, 40, 62, 183
DF_1_NODEFLIB = 0x800
VER_FLG_WEAK = 0x2
_VER_FLG_BASE = 0x1
_OSABI_SYSV, _OSABI_GNU = 0, 3

_PT_LOAD, _PT_DYNAMIC, _PT_INTERP, _PT_NOTE = 1, 2, 3, 4
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_STRSZ, _DT_SONAME, _DT_RPATH, _DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
_DT_FLAGS_1, _DT_VERDEF, _DT_VERDEFNUM, _DT_VERNEED, _DT_VERNEEDNUM = 0x6FFFFFFB, 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
_STRING_TAGS = (_DT_NEEDED, _DT_SONAME, _DT_RPATH, _DT_RUNPATH)
_SHT_DYNSYM = 11

_MAX_PATH = 4096  # PATH_MAX: the longest interpreter name worth reading
_MAX_TABLE = 64 << 20  # no real dynamic segment, string table or section comes near this
_MAX_NOTE = 1 << 16
_MAX_VERSION_RECORDS = 4096


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


@dataclass(frozen=True)
class Section:
    """One section header: enough to find and read a section's bytes."""

    name: str
    type: int  # sh_type
    offset: int
    size: int
    link: int  # sh_link: for a symbol table, the index of its string table


def _osabi_family(osabi: int) -> int:
    # glibc accepts SYSV and GNU (Linux) objects alike
    return _OSABI_SYSV if osabi in (_OSABI_SYSV, _OSABI_GNU) else osabi


def is_elf(head: bytes) -> bool:
    """True when `head` starts with the ELF magic."""
    return head[:4] == ELF_MAGIC


def _text(raw: bytes) -> str:
    """A name as the file system spells it (the view's paths are decoded the same way)."""
    return os.fsdecode(raw)


class _File:
    """The ELF header's layout and bounds-checked reads of one stream."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.stream = stream
        self.name = name
        stream.seek(0)
        ident = stream.read(64)
        if len(ident) < 52 or not is_elf(ident):
            raise ElfError(f"{name}: not an ELF file or truncated header")
        elf_class = {1: 32, 2: 64}.get(ident[4])
        little = {1: True, 2: False}.get(ident[5])
        if elf_class is None or little is None:
            raise ElfError(f"{name}: invalid ELF class or data encoding in the header")
        if elf_class == 64 and len(ident) < 64:
            raise ElfError(f"{name}: truncated ELF header")
        self.elf_class, self.little, self.osabi = elf_class, little, ident[7]
        self.order = "<" if little else ">"
        word = "Q" if elf_class == 64 else "I"
        self.type, self.machine = struct.unpack_from(self.order + "HH", ident, 16)
        fields = struct.unpack_from(f"{self.order}{word}{word}IHHHHHH", ident, 32 if elf_class == 64 else 28)
        self.phoff, self.shoff, self.e_flags, _, self.phentsize, self.phnum, self.shentsize, self.shnum, self.shstrndx = fields
        stream.seek(0, os.SEEK_END)
        self.size = stream.tell()

    def read(self, offset: int, length: int, what: str) -> bytes:
        """Exactly `length` bytes at `offset`, or an ElfError saying which part lies outside the file."""
        if offset < 0 or length < 0 or length > _MAX_TABLE or offset + length > self.size:
            raise ElfError(f"{self.name}: the {what} lies outside the file; it cannot be loaded as a program or library")
        self.stream.seek(offset)
        return self.stream.read(length)

    def table(self, offset: int, count: int, entsize: int, layout: str, what: str) -> list[tuple[int, ...]]:
        """`count` fixed-size records of `layout` at `offset`, each `entsize` bytes apart."""
        if count == 0:
            return []
        if entsize < struct.calcsize(layout):
            raise ElfError(f"{self.name}: the {what} entries are smaller than the ELF format says; the file is malformed")
        raw = self.read(offset, count * entsize, what)
        return [struct.unpack_from(layout, raw, at) for at in range(0, count * entsize, entsize)]

    def segments(self) -> list[tuple[int, int, int, int, int]]:
        """(p_type, p_offset, p_vaddr, p_filesz, p_align) of every program header."""
        if self.elf_class == 64:
            rows = self.table(self.phoff, self.phnum, self.phentsize, self.order + "IIQQQQQQ", "program header table")
            return [(kind, offset, vaddr, filesz, align) for kind, _, offset, vaddr, _, filesz, _, align in rows]
        rows = self.table(self.phoff, self.phnum, self.phentsize, self.order + "IIIIIIII", "program header table")
        return [(kind, offset, vaddr, filesz, align) for kind, offset, vaddr, _, filesz, _, _, align in rows]


def read_elf(stream: BinaryIO, name: str) -> ElfInfo:
    """Parse the loader-relevant parts of the ELF in `stream`; `name` is used in messages."""
    elf = _File(stream, name)
    try:
        return _read(elf)
    except struct.error as exc:  # a record cut short; the bounds checks make this rare
        raise ElfError(f"{name}: malformed ELF ({exc}); the file cannot be loaded as a program or library") from None


def _read(elf: _File) -> ElfInfo:
    interp = None
    dynamic: tuple[int, int] | None = None
    loads: list[tuple[int, int, int]] = []
    notes: list[DlopenNote] = []
    for kind, offset, vaddr, filesz, align in elf.segments():
        if kind == _PT_INTERP:
            raw = elf.read(offset, min(filesz, _MAX_PATH), "program interpreter (PT_INTERP)")
            if b"\0" not in raw:
                raise ElfError(f"{elf.name}: the program interpreter name (PT_INTERP) is not terminated; the file is malformed")
            interp = _text(raw[: raw.index(b"\0")])
        elif kind == _PT_DYNAMIC:
            dynamic = (offset, filesz)
        elif kind == _PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif kind == _PT_NOTE and offset + filesz <= elf.size:  # notes are advice: one outside the file is skipped
            notes.extend(_dlopen_notes(elf.read(offset, filesz, "note segment"), align, elf.little))
    info = ElfInfo(elf.elf_class, elf.little, elf.machine, elf.osabi, elf.type, elf.e_flags, interp=interp, dlopen=tuple(notes))
    if dynamic is None:
        return info
    return _Dynamic(elf, loads, *dynamic).facts(info)


class _Dynamic:
    """The dynamic segment's tags, and the names and version records they point to by address."""

    def __init__(self, elf: _File, loads: list[tuple[int, int, int]], offset: int, filesz: int) -> None:
        self.elf = elf
        self.loads = loads
        layout = elf.order + ("qQ" if elf.elf_class == 64 else "iI")
        entsize = struct.calcsize(layout)
        raw = elf.read(offset, filesz - filesz % entsize, "dynamic segment (PT_DYNAMIC)")
        self.tags: list[tuple[int, int]] = []
        for tag, value in struct.iter_unpack(layout, raw):
            if tag == _DT_NULL:
                break
            self.tags.append((tag, value))
        self.last = dict(self.tags)  # the last of a repeated tag wins
        self.strings = b""
        self.strings_at = 0
        if _DT_STRTAB in self.last:
            start = self._offset(self.last[_DT_STRTAB])
            if start is None:
                raise ElfError(f"{elf.name}: DT_STRTAB points outside the file's loadable segments; the loader cannot read its names")
            length = min(self.last.get(_DT_STRSZ, elf.size - start), elf.size - start, _MAX_TABLE)
            self.strings = elf.read(start, length, "dynamic string table (DT_STRTAB)")
            self.strings_at = start
        elif any(tag in _STRING_TAGS for tag, _ in self.tags):
            raise ElfError(f"{elf.name}: names libraries or paths but has no DT_STRTAB; the loader cannot read them")

    def facts(self, info: ElfInfo) -> ElfInfo:
        needed = tuple(self._name(value, "DT_NEEDED") for tag, value in self.tags if tag == _DT_NEEDED)
        named = {
            tag: self._name(self.last[tag], name)
            for tag, name in ((_DT_SONAME, "DT_SONAME"), (_DT_RPATH, "DT_RPATH"), (_DT_RUNPATH, "DT_RUNPATH"))
            if tag in self.last
        }
        runpath = named.get(_DT_RUNPATH)
        return ElfInfo(
            info.elf_class,
            info.little_endian,
            info.machine,
            info.osabi,
            info.type,
            info.flags,
            interp=info.interp,
            dynamic=True,
            soname=named.get(_DT_SONAME),
            needed=needed,
            rpath=None if runpath is not None else named.get(_DT_RPATH),
            runpath=runpath,
            flags_1=self.last.get(_DT_FLAGS_1, 0),
            verneed=self._needs(),
            verdef=self._defines(),
            dlopen=info.dlopen,
        )

    def _offset(self, address: int) -> int | None:
        for vaddr, offset, filesz in self.loads:
            if vaddr <= address < vaddr + filesz:
                return offset + address - vaddr
        return None

    def _at(self, index: int) -> bytes | None:
        """The NUL-terminated string at `index` of the string table, or None when there is none."""
        end = self.strings.find(b"\0", index) if index < len(self.strings) else -1
        if end >= 0:
            return self.strings[index:end]
        # past DT_STRSZ: ld.so reads names from memory without that bound, so a short DT_STRSZ still loads
        offset = self.strings_at + index
        if not self.strings or offset >= self.elf.size:
            return None
        raw = self.elf.read(offset, min(_MAX_PATH, self.elf.size - offset), "string")
        return raw[: raw.index(b"\0")] if b"\0" in raw else None

    def _name(self, index: int, tag: str) -> str:
        found = self._at(index)
        if found is None:
            raise ElfError(f"{self.elf.name}: a {tag} name lies outside the file or is not terminated; the file is malformed")
        return _text(found)

    def _string(self, index: int) -> str:
        """A version name: a bad offset gives an empty name, which matches no definition."""
        return _text(self._at(index) or b"")

    def _record(self, offset: int, fmt: str) -> tuple[int, ...] | None:
        size = struct.calcsize(self.elf.order + fmt)
        if offset < 0 or offset + size > self.elf.size:
            return None
        return struct.unpack(self.elf.order + fmt, self.elf.read(offset, size, "version record"))

    def _chain(self, start: int | None, count: int, fmt: str, next_field: int) -> list[tuple[int, tuple[int, ...]]]:
        """(offset, fields) of up to `count` records linked by their `next` field; capped, so no loop."""
        out: list[tuple[int, tuple[int, ...]]] = []
        offset = start
        for _ in range(min(count, _MAX_VERSION_RECORDS)):
            if offset is None or (fields := self._record(offset, fmt)) is None:
                break
            out.append((offset, fields))
            if fields[next_field] == 0:
                break
            offset += fields[next_field]
        return out

    def _table(self, tag: int) -> int | None:
        return self._offset(self.last[tag]) if tag in self.last else None

    def _needs(self) -> tuple[VersionNeed, ...]:
        out = []
        for offset, (_, count, file, aux, _) in self._chain(self._table(_DT_VERNEED), self.last.get(_DT_VERNEEDNUM, 0), "HHIII", 4):
            versions = tuple(
                (self._string(name), bool(flags & VER_FLG_WEAK))
                for _, (_, flags, _, name, _) in self._chain(offset + aux, count, "IHHII", 4)
            )
            out.append(VersionNeed(self._string(file), versions))
        return tuple(out)

    def _defines(self) -> frozenset[str]:
        out = set()
        for offset, (_, flags, _, count, _, aux, _) in self._chain(self._table(_DT_VERDEF), self.last.get(_DT_VERDEFNUM, 0), "HHHHIII", 6):
            names = self._chain(offset + aux, count, "II", 1)
            # the first aux names the version; VER_FLG_BASE marks the file's own name, not a version
            if names and not flags & _VER_FLG_BASE:
                out.add(self._string(names[0][1][0]))
        return frozenset(out)


_FDO_DLOPEN = 0x407C0C0A


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


# -- sections: for the scans that need them, not for the loader ----------------------------------------


def sections(stream: BinaryIO, name: str) -> list[Section]:
    """The file's section headers, named from its section-name table (empty when it has none)."""
    elf = _File(stream, name)
    try:
        return _sections(elf)
    except struct.error as exc:
        raise ElfError(f"{name}: malformed section headers ({exc})") from None


_SHN_XINDEX = 0xFFFF


def _sections(elf: _File) -> list[Section]:
    layout = elf.order + ("IIQQQQIIQQ" if elf.elf_class == 64 else "IIIIIIIIII")
    count, names_at = elf.shnum, elf.shstrndx
    if elf.shoff and (count == 0 or names_at == _SHN_XINDEX):
        # extended numbering (over 65,279 sections): section 0 holds the count (sh_size) and the name table's index (sh_link)
        (first,) = elf.table(elf.shoff, 1, elf.shentsize, layout, "section header table")
        count = count or first[5]
        names_at = first[6] if names_at == _SHN_XINDEX else names_at
    rows = elf.table(elf.shoff, count, elf.shentsize, layout, "section header table") if elf.shoff else []
    headers = [(name, kind, offset, size, link) for name, kind, _, _, offset, size, link, _, _, _ in rows]
    names = b""
    if 0 < names_at < len(headers):
        _, _, offset, size, _ = headers[names_at]
        names = elf.read(offset, size, "section name table")
    out = []
    for index, kind, offset, size, link in headers:
        end = names.find(b"\0", index)
        label = names[index:end].decode("latin-1") if 0 <= index < len(names) and end >= 0 else ""
        out.append(Section(label, kind, offset, size, link))
    return out


def section_bytes(stream: BinaryIO, name: str, section: Section) -> bytes:
    """The bytes of `section` (from `sections` of the same stream)."""
    return _File(stream, name).read(section.offset, section.size, f"section {section.name or '(unnamed)'}")


def undefined_symbols(stream: BinaryIO, name: str, wanted: frozenset[str]) -> frozenset[str]:
    """Which of `wanted` the object imports (undefined in .dynsym), e.g. to see who calls pthread_cancel.

    Reads the raw symbol table: the string table is checked for the names first, so most objects
    cost one read of the dynamic string table.
    """
    elf = _File(stream, name)
    try:
        headers = _sections(elf)
        table = next((s for s in headers if s.type == _SHT_DYNSYM), None)
        if table is None or table.link >= len(headers):
            return frozenset()
        strings = elf.read(headers[table.link].offset, headers[table.link].size, "dynamic symbols' string table")
        if not any(w.encode() + b"\0" in strings for w in wanted):
            return frozenset()
        layout, size = (elf.order + "IBBHQQ", 24) if elf.elf_class == 64 else (elf.order + "IIIBBH", 16)
        symbols = elf.read(table.offset, table.size, "dynamic symbol table")
        found = set()
        for fields in struct.iter_unpack(layout, symbols[: len(symbols) // size * size]):
            offset, shndx = (fields[0], fields[3]) if elf.elf_class == 64 else (fields[0], fields[5])
            if shndx == 0 and offset < len(strings):
                symbol = strings[offset : strings.find(b"\0", offset)].decode("utf-8", "replace")
                if symbol in wanted:
                    found.add(symbol)
        return frozenset(found)
    except struct.error as exc:
        raise ElfError(f"{name}: malformed symbol table ({exc})") from None
