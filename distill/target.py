"""Facts about a target architecture that the loader model needs, keyed by ELF identity.

Everything here describes the *target* (the image), never the machine distill runs on:
`$PLATFORM` is the baseline AT_PLATFORM of the architecture, not what this CPU reports.
"""

from __future__ import annotations

import platform as host_platform
from dataclasses import dataclass

from distill.elf import EM_386, EM_AARCH64, EM_ARM, EM_X86_64, ElfInfo
from distill.errors import UsageError

__all__ = ["Arch", "arch_of", "arch_named", "foreign_arch", "ARCHES", "Platform"]

EM_PPC64, EM_S390, EM_RISCV = 21, 22, 243


@dataclass(frozen=True)
class Arch:
    """One architecture's conventions, for glibc and musl."""

    name: str  # OCI architecture name
    triplet: str  # Debian multiarch triplet
    platform: str | None  # $PLATFORM (None: glibc leaves it unset, so the element is dropped)
    glibc_interp: str  # the standard PT_INTERP of glibc programs
    musl_arch: str  # the `<arch>` in /lib/ld-musl-<arch>.so.1


# (e_machine, class, little endian) -> Arch
ARCHES: dict[tuple[int, int, bool], Arch] = {
    (EM_X86_64, 64, True): Arch("amd64", "x86_64-linux-gnu", "x86_64", "/lib64/ld-linux-x86-64.so.2", "x86_64"),
    (EM_AARCH64, 64, True): Arch("arm64", "aarch64-linux-gnu", "aarch64", "/lib/ld-linux-aarch64.so.1", "aarch64"),
    (EM_386, 32, True): Arch("386", "i386-linux-gnu", "i686", "/lib/ld-linux.so.2", "i386"),
    (EM_ARM, 32, True): Arch("arm", "arm-linux-gnueabihf", "v7l", "/lib/ld-linux-armhf.so.3", "armhf"),
    (EM_PPC64, 64, True): Arch("ppc64le", "powerpc64le-linux-gnu", "power8", "/lib64/ld64.so.2", "powerpc64le"),
    (EM_S390, 64, False): Arch("s390x", "s390x-linux-gnu", "z900", "/lib/ld64.so.1", "s390x"),
    (EM_RISCV, 64, True): Arch("riscv64", "riscv64-linux-gnu", None, "/lib/ld-linux-riscv64-lp64d.so.1", "riscv64"),
}


def arch_of(info: ElfInfo) -> Arch | None:
    """The Arch of an ELF object, or None for an architecture distill has no table for."""
    return ARCHES.get((info.machine, info.elf_class, info.little_endian))


def arch_named(architecture: str, variant: str | None = None) -> Arch | None:
    """The Arch of an OCI platform (`arm64`, `arm` + `v7`), or None when distill has no table for it."""
    if architecture == "arm" and variant not in (None, "v7"):
        return None  # armel (v5, v6) uses another triplet and loader
    return next((arch for arch in ARCHES.values() if arch.name == architecture), None)


def foreign_arch(path: str, target: Arch) -> Arch | None:
    """The other architecture whose multiarch directory or loader `path` names, if any.

    `/usr/lib/x86_64-linux-gnu/libfoo.so.1` in a profile applied to an arm64 image names a
    directory that image does not have; the profile should say `$MULTIARCH` instead.
    """
    parts = path.split("/")
    for arch in ARCHES.values():
        if arch is target:
            continue
        if arch.triplet in parts or path == arch.glibc_interp or f"ld-musl-{arch.musl_arch}.so.1" in parts:
            return arch
    return None


@dataclass(frozen=True)
class Platform:
    """An OCI platform (os/architecture/variant): what an image, and so the loader it carries, targets."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"--platform {text}: write os/arch or os/arch/variant, e.g. linux/arm64")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def parse_list(cls, text: str) -> tuple[Platform, ...]:
        """`linux/amd64,linux/arm64`: each platform once, in the order given."""
        out: list[Platform] = []
        for part in text.split(","):
            platform = cls.parse(part.strip())
            if platform in out:
                raise UsageError(f"--platform {text}: {platform} is named twice")
            out.append(platform)
        return tuple(out)

    @classmethod
    def any(cls) -> Platform:
        """Matches every platform: opens the first image of an index (to learn what else it offers)."""
        return cls("*", "*")

    @classmethod
    def host(cls) -> Platform:
        machine = host_platform.machine().lower()
        arch = {
            "x86_64": "amd64",
            "aarch64": "arm64",
            "armv7l": "arm",
            "i686": "386",
            "ppc64le": "ppc64le",
            "s390x": "s390x",
            "riscv64": "riscv64",
        }.get(machine, machine)
        return cls("linux", arch, "v7" if arch == "arm" else None)

    def matches(self, os: str, architecture: str, variant: str | None) -> bool:
        if self.architecture == "*":
            return True
        if (os, architecture) != (self.os, self.architecture):
            return False
        if self.variant is None or self.variant == variant:
            return True
        return architecture == "arm64" and {self.variant, variant} <= {"v8", None}

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)
