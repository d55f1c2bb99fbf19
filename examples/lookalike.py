#!/usr/bin/env python3
"""Build (once) and cache look-alikes of the official Docker images that do not use Debian's package for
the app: CPython and redis built from source into /usr/local on a Debian 13 base, node laid out under
/usr/local. Offline apart from the Debian mirror: the sources are Debian's source packages' upstream
(orig) tarballs, fetched with `apt-get source` through a deb-src line written inside the build root.

Each build runs inside a throwaway mmdebstrap root (customize hooks), leaves a tarball of /usr/local in
the cache keyed by everything that goes into it, and the look-alike root is a cached fat root
(examples/fatroot.py) with that tarball unpacked: the official images' runtime libraries, no Debian
python3/redis/nodejs package.

    examples/lookalike.py python|redis|node
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fatroot import cache_dir, fat_rootfs

SUITE = "trixie"
BASE = ("ca-certificates", "netbase", "tzdata")

# A deb-src line for each deb line of the build root's own sources (mmdebstrap's mirror), in a list of
# its own inside the build root: the host's apt sources are never touched. The release's own version
# (`/trixie`); only the upstream (orig) tarball is used, checked by apt against the Sources index, so a
# mirror that lacks the .dsc or the Debian diff of a point release does not stop the build.
DEB_SRC = """
set -e
sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/distill-src.list
apt-get update -q
mkdir -p /src /dest && cd /src
apt-get source -q --download-only "$SOURCE_PACKAGE/$SUITE" || echo "only the upstream tarball is needed"
tar xf "$(ls ./*.orig.tar.* | head -n1)"
cd "$(find . -mindepth 1 -maxdepth 1 -type d | head -n1)"
"""

# The official python image's build (docker-library/python, Dockerfile for -slim-trixie), without
# --enable-optimizations (PGO) and --with-lto: those double a build on two shared cores and change no
# file layout. tkinter is left out (tk-dev pulls X).
PYTHON_SCRIPT = (
    DEB_SRC
    + r"""
gnuArch="$(dpkg-architecture --query DEB_BUILD_GNU_TYPE)"
if ls Lib/ensurepip/_bundled/*.whl >/dev/null 2>&1; then pip=--with-ensurepip; else pip=--without-ensurepip; fi
./configure --build="$gnuArch" --enable-loadable-sqlite-extensions --enable-option-checking=fatal \
    --enable-shared "$pip" --prefix=/usr/local >/dev/null
EXTRA_CFLAGS="$(dpkg-buildflags --get CFLAGS)"
LDFLAGS="$(dpkg-buildflags --get LDFLAGS)"
LDFLAGS="${LDFLAGS:--Wl},--strip-all"
make -s -j "$(nproc)" "EXTRA_CFLAGS=$EXTRA_CFLAGS" "LDFLAGS=$LDFLAGS" >/dev/null
rm python
make -s -j "$(nproc)" "EXTRA_CFLAGS=$EXTRA_CFLAGS" "LDFLAGS=${LDFLAGS:--Wl},-rpath='\$\$ORIGIN/../lib'" python >/dev/null
make -s install DESTDIR=/dest >/dev/null
cd /dest/usr/local
find . -depth \( \( -type d -a \( -name test -o -name tests -o -name idle_test \) \) \
    -o \( -type f -a \( -name '*.pyc' -o -name '*.pyo' -o -name 'libpython*.a' \) \) \) -exec rm -rf '{}' +
for src in idle3 pip3 pydoc3 python3 python3-config; do
    [ -e "bin/$src" ] && ln -svT "$src" "bin/$(echo "$src" | tr -d 3)"
done
true
"""
)
PYTHON_BUILD = (
    "gcc",
    "make",
    "libc6-dev",
    "dpkg-dev",
    "pkgconf",
    "xz-utils",
    "libbz2-dev",
    "libffi-dev",
    "libgdbm-dev",
    "liblzma-dev",
    "libncurses-dev",
    "libreadline-dev",
    "libsqlite3-dev",
    "libssl-dev",
    "uuid-dev",
    "zlib1g-dev",
)
# What the official image keeps installed after purging its build dependencies (found there by ldd).
PYTHON_RUNTIME = (
    "libbz2-1.0",
    "libffi8",
    "libgdbm6t64",
    "liblzma5",
    "libncursesw6",
    "libreadline8t64",
    "libsqlite3-0",
    "libssl3t64",
    "libuuid1",
    "zlib1g",
)

# The official redis image's build (docker-library/redis): TLS on, protected mode off, no modules.
REDIS_SCRIPT = (
    DEB_SRC
    + r"""
grep -E '^ *createBoolConfig[(]"protected-mode",.*, *1 *,.*[)],$' src/config.c
sed -ri 's!^( *createBoolConfig[(]"protected-mode",.*, *)1( *,.*[)],)$!\10\2!' src/config.c
make -s -j "$(nproc)" BUILD_TLS=yes all >/dev/null
make -s install BUILD_TLS=yes PREFIX=/dest/usr/local >/dev/null
"""
)
REDIS_BUILD = ("gcc", "g++", "make", "libc6-dev", "dpkg-dev", "pkgconf", "xz-utils", "libssl-dev")
REDIS_RUNTIME = ("libssl3t64", "passwd")  # passwd: groupadd and useradd, as debian:trixie-slim has them
# the official image's account and data directory
REDIS_ACCOUNT = 'chroot "$1" sh -c "groupadd -r -g 999 redis && useradd -r -g redis -u 999 redis && mkdir /data && chown redis:redis /data"'

# No source build of node: it takes hours on two cores. Debian's nodejs is moved into the layout the
# official image has (/usr/local/bin/node, its library under /usr/local/lib) and its package records are
# purged, so only the libraries it links stay Debian packages, as in the official image.
NODE_HOOKS = (
    'mkdir -p "$1/usr/local/bin" "$1/usr/local/lib"',
    'mv "$1/usr/bin/node" "$1/usr/local/bin/node"; rm -f "$1/usr/bin/nodejs"',
    'mv "$1"/usr/lib/*-linux-gnu/libnode.so.* "$1/usr/local/lib/"',
    'chroot "$1" sh -c \'dpkg --purge --force-depends nodejs $(dpkg-query -W -f="\\${Package}\\n" "libnode*")\'',
)


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def build_tarball(name: str, source_package: str, build: tuple[str, ...], script: str) -> Path:
    """A tarball of /usr/local as `script` leaves it in a throwaway root of `build` packages (cached)."""
    home = cache_dir() / "lookalike"
    home.mkdir(parents=True, exist_ok=True)
    key = _key(SUITE, source_package, ",".join(sorted(build)), script)
    final = home / f"{name}-{key}.tar"
    with open(home / f"{name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.exists():
            return final
        work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=home))
        try:
            (work / "build.sh").write_text(script)
            command = [
                "mmdebstrap",
                "--variant=apt",
                f"--include={','.join(build)}",
                f'--customize-hook=cp {work / "build.sh"} "$1/build.sh"',
                f'--customize-hook=chroot "$1" env SOURCE_PACKAGE={source_package} SUITE={SUITE} sh -e /build.sh',
                f'--customize-hook=tar -C "$1/dest" --sort=name --numeric-owner -cf {work / "out.tar"} usr',
                SUITE,
                str(work / "root"),
            ]
            print(f"building {name} look-alike (long): {' '.join(command)}", file=sys.stderr)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            (work / "out.tar").rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def _root(tarball: Path, runtime: tuple[str, ...], hooks: tuple[str, ...] = ()) -> Path:
    """A cached trixie root with `runtime` packages and `tarball` unpacked at / (then ldconfig, then `hooks`)."""
    return fat_rootfs(BASE + runtime, suite=SUITE, hooks=(f'tar -C "$1" -xf {tarball}', 'chroot "$1" ldconfig', *hooks))


def python_root() -> Path:
    return _root(build_tarball("python", "python3.13", PYTHON_BUILD, PYTHON_SCRIPT), PYTHON_RUNTIME)


def redis_root() -> Path:
    return _root(build_tarball("redis", "redis", REDIS_BUILD, REDIS_SCRIPT), REDIS_RUNTIME, (REDIS_ACCOUNT,))


def node_root() -> Path:
    return fat_rootfs((*BASE, "nodejs"), suite=SUITE, hooks=(*NODE_HOOKS, 'chroot "$1" ldconfig'))


BUILDERS = {"python": python_root, "redis": redis_root, "node": node_root}

if __name__ == "__main__":
    print(BUILDERS[sys.argv[1]]())
