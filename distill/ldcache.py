"""Write an /etc/ld.so.cache for the output, as `ldconfig` would, listing only what ships.

glibc's loader reads ld.so.conf directories only through this cache. The format is glibc's
"glibc-ld.so.cache1.1": a 48-byte header, 24-byte entries sorted the way ld.so binary-searches them
(`_dl_cache_libcmp`, descending: digit runs compare as numbers and rank above other characters),
then the strings; offsets count from the start of the file. No hwcaps entries and no extension
section: distill ships baseline libraries only.
"""

from __future__ import annotations

import functools
import struct

from distill.elf import EM_386, EM_AARCH64, EM_ARM, EM_X86_64

__all__ = ["cache_flags", "build_ld_cache"]

_MAGIC = b"glibc-ld.so.cache1.1"
_FLAG_ELF_LIBC6 = 0x0003
# the per-architecture flag ldconfig adds to FLAG_ELF_LIBC6 (sysdeps/generic/ldconfig.h)
_ARCH_FLAGS = {(EM_X86_64, 64): 0x0300, (EM_AARCH64, 64): 0x0A00, (EM_386, 32): 0x0000, (EM_ARM, 32): 0x0900}
_LITTLE_ENDIAN = 2


def cache_flags(machine: int, elf_class: int) -> int | None:
    """The entry flags ld.so accepts on this architecture, or None where distill has no table."""
    extra = _ARCH_FLAGS.get((machine, elf_class))
    return None if extra is None else _FLAG_ELF_LIBC6 | extra


def _libcmp(left: str, right: str) -> int:
    """glibc's `_dl_cache_libcmp`."""
    i = j = 0
    while i < len(left):
        a = left[i]
        if a.isdigit():
            if j >= len(right) or not right[j].isdigit():
                return 1
            start = i
            while i < len(left) and left[i].isdigit():
                i += 1
            value_a = int(left[start:i])
            start = j
            while j < len(right) and right[j].isdigit():
                j += 1
            value_b = int(right[start:j])
            if value_a != value_b:
                return value_a - value_b
        elif j < len(right) and right[j].isdigit():
            return -1
        elif j >= len(right) or a != right[j]:
            return ord(a) - (ord(right[j]) if j < len(right) else 0)
        else:
            i += 1
            j += 1
    return 0 - (ord(right[j]) if j < len(right) else 0)


def _newest_name_first(left: tuple[str, str], right: tuple[str, str]) -> int:
    return _libcmp(right[0], left[0])


def build_ld_cache(entries: list[tuple[str, str]], flags: int) -> bytes:
    """A cache mapping each name to its path; `entries` in search-path order (the first of a name wins)."""
    unique: dict[str, str] = {}
    for name, path in entries:
        unique.setdefault(name, path)
    ordered = sorted(unique.items(), key=functools.cmp_to_key(_newest_name_first))
    header_size, entry_size = 48, 24
    strings = bytearray()
    offsets: dict[str, int] = {}
    start = header_size + entry_size * len(ordered)
    for text in (s for pair in ordered for s in pair):
        if text not in offsets:
            offsets[text] = start + len(strings)
            strings += text.encode() + b"\0"
    header = _MAGIC + struct.pack("<IIB3xI12x", len(ordered), len(strings), _LITTLE_ENDIAN, 0)
    body = b"".join(struct.pack("<iIIIQ", flags, offsets[name], offsets[path], 0, 0) for name, path in ordered)
    return header + body + bytes(strings)
