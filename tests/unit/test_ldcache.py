"""The ld.so.cache writer: the same entry order as the host's ldconfig, and a cache ldconfig reads back."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from distill.ldcache import build_ld_cache, cache_flags

HOST_CACHE = Path("/etc/ld.so.cache")


def entries_of(data: bytes) -> list[tuple[int, str, str, int]]:
    """(flags, name, path, hwcap) of every entry of a new-format cache."""
    assert data[:20] == b"glibc-ld.so.cache1.1"
    count = struct.unpack_from("<I", data, 20)[0]

    def text(offset: int) -> str:
        return data[offset : data.index(b"\0", offset)].decode()

    out = []
    for number in range(count):
        flags, key, value, _, hwcap = struct.unpack_from("<iIIIQ", data, 48 + 24 * number)
        out.append((flags, text(key), text(value), hwcap))
    return out


def test_entry_order_matches_the_hosts_ldconfig() -> None:
    host = [(name, path) for flags, name, path, hwcap in entries_of(HOST_CACHE.read_bytes()) if flags == 0x303 and hwcap == 0]
    assert len(host) > 50
    ours = [(name, path) for _, name, path, _ in entries_of(build_ld_cache(list(reversed(host)), 0x303))]
    assert ours == host  # binary search in ld.so depends on exactly this order


def test_ldconfig_reads_a_written_cache(tmp_path: Path) -> None:
    names = ["libz.so.1", "libz3.so.4", "libzstd.so.1", "libfoo10.so.2", "libfoo9.so.2", "ld-linux-x86-64.so.2"]
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes(build_ld_cache([(n, f"/opt/lib/{n}") for n in names] + [("libz.so.1", "/later/libz.so.1")], 0x303))
    listed = subprocess.run(["ldconfig", "-p", "-C", str(cache)], capture_output=True, text=True, check=True).stdout
    assert listed.splitlines()[0] == f"6 libs found in cache `{cache}'"
    assert "\tlibz.so.1 (libc6,x86-64) => /opt/lib/libz.so.1" in listed  # the first directory wins
    assert cache_flags(62, 64) == 0x303 and cache_flags(183, 64) == 0x0A03 and cache_flags(8, 32) is None
