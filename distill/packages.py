"""The source's package database (dpkg or apk): which files a package installed, who owns a path,
and the records scanners read. Read through the View, like everything else from the source."""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass, field

from distill import paths
from distill.view import View

__all__ = ["DbKind", "Package", "PackageDb", "open_package_db"]

_LIMIT = 64 << 20
_DPKG = "/var/lib/dpkg"
_APK = "/lib/apk/db/installed"
_MD5 = re.compile(r"[0-9a-f]{32}")


class DbKind(enum.StrEnum):
    """The package manager whose database a source holds."""

    DPKG = "dpkg"
    APK = "apk"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str
    source: str | None  # dpkg Source: (the source package), apk o: (origin)
    record: str  # the package's stanza, verbatim
    info_name: str  # dpkg: the info file stem (`libc6:amd64` or `base-files`)


@dataclass
class PackageDb:
    """Installed packages of one source."""

    kind: DbKind
    view: View
    packages: dict[str, Package]
    _files: dict[str, list[str]] = field(default_factory=dict)
    _provides: dict[str, Package] | None = None

    def get(self, name: str) -> Package | None:
        return self.packages.get(name) or self.packages.get(name.split(":", 1)[0])

    def match(self, pattern: str) -> list[str]:
        """Installed package names `pattern` names: itself, or every match of a glob (`libpython3.*-stdlib`),
        so a profile need not name the release a versioned package belongs to."""
        if not paths.is_glob(pattern):
            package = self.get(pattern)
            return [package.name] if package else []
        name, _, arch = pattern.partition(":")
        return [
            p.name
            for key, p in sorted(self.packages.items())
            if fnmatch.fnmatchcase(key, name) and (not arch or p.architecture in (arch, "all"))
        ]

    def files(self, name: str) -> list[str]:
        """Paths the package installed, as its list spells them (directories included)."""
        package = self.get(name)
        if package is None:
            return []
        if package.name not in self._files:
            if self.kind is DbKind.DPKG:
                text = _read(self.view, f"{_DPKG}/info/{package.info_name}.list")
                self._files[package.name] = [line for line in text.splitlines() if line.startswith("/")]
            else:
                self._files[package.name] = _apk_files(package.record)
        return self._files[package.name]

    def essential(self, name: str) -> bool:
        """dpkg's `Essential: yes` (always present on the system, never a dependency worth following)."""
        package = self.get(name)
        return package is not None and self.kind == "dpkg" and _field(package.record, "Essential") == "yes"

    def depends(self, name: str) -> list[tuple[str, Package | None]]:
        """Each Pre-Depends and Depends relation of `name` as written (`a | b`), with the installed
        package that satisfies it (the first alternative installed, directly or by Provides), or None.
        Versions are not compared: dpkg let the installed set through already."""
        package = self.get(name)
        if package is None:
            return []
        if self.kind == "dpkg":
            text = ", ".join(f for f in (_field(package.record, "Pre-Depends"), _field(package.record, "Depends")) if f)
            relations = [r.strip() for r in text.split(",") if r.strip()]
        else:  # apk: D: tokens; so:, cmd: and pc: name what ELF files or commands provide
            relations = [t for t in (_field(package.record, "D", ":") or "").split() if not t.startswith("!")]
        out = []
        for relation in relations:
            alternatives = [_relation_name(a) for a in relation.split("|")]
            out.append((relation, next((p for a in alternatives if (p := self._provider(a)) is not None), None)))
        return out

    def _provider(self, name: str) -> Package | None:
        if name in self.packages:
            return self.packages[name]
        if self._provides is None:
            self._provides = {}
            for package in self.packages.values():
                field_name, separator = ("Provides", ": ") if self.kind == "dpkg" else ("p", ":")
                text = _field(package.record, field_name, separator) or ""
                for item in text.replace(",", " ").split():
                    if item and item[0] not in "(=<>":
                        self._provides.setdefault(_relation_name(item), package)
        return self._provides.get(name)

    def md5sums(self, name: str) -> list[tuple[str, str]]:
        """(md5, path) pairs dpkg recorded for the package's files."""
        package = self.get(name)
        if package is None or self.kind is not DbKind.DPKG:
            return []
        out = []
        for line in _read(self.view, f"{_DPKG}/info/{package.info_name}.md5sums").splitlines():
            digest, _, relpath = line.partition("  ")
            if _MD5.fullmatch(digest) and relpath:
                out.append((digest, "/" + relpath.lstrip("/")))
        return out

    def owners(self, paths_wanted: set[str]) -> dict[str, str]:
        """Canonical path -> owning package, for the paths asked about (directories, shared between
        packages, belong to none). Only listed paths whose base name matches one asked about are resolved."""
        names = {p.rsplit("/", 1)[-1] for p in paths_wanted}
        parents: dict[str, str] = {}
        owners: dict[str, str] = {}
        for name in sorted(self.packages):
            listed_files = self.files(name)
            candidates = [listed for listed in listed_files if listed.rsplit("/", 1)[-1] in names]
            directories: set[str] | None = None  # made only for a package that owns something asked about
            for listed in candidates:  # most packages have none, or only a name such as `copyright` elsewhere
                path = self.canonical(listed, parents)
                if path not in paths_wanted:
                    continue
                if directories is None:
                    directories = {paths.parent(p) for p in listed_files}  # a directory in the package (even if a link here)
                if listed not in directories:
                    owners.setdefault(path, name)
        return owners

    def canonical(self, listed: str, memo: dict[str, str] | None = None) -> str:
        """Where a listed path really is (its directories resolved through the source's symlinks)."""
        parent = paths.parent(listed)
        memo = memo if memo is not None else {}
        if parent not in memo:
            memo[parent] = self.view.resolve(parent).path
        return paths.join(memo[parent], listed.rsplit("/", 1)[1]) if listed != "/" else "/"


def _read(view: View, path: str) -> str:
    try:
        return view.read_bytes(path, _LIMIT).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _stanzas(text: str) -> list[str]:
    return [block.strip("\n") for block in re.split(r"\n\s*\n", text) if block.strip()]


def _field(record: str, name: str, separator: str = ": ") -> str | None:
    for line in record.splitlines():
        if line.startswith(name + separator):
            return line[len(name) + len(separator) :].strip()
    return None


def _relation_name(text: str) -> str:
    """`libc6 (>= 2.34)`, `python3:any`, `foo [amd64] <!nocheck>`, apk's `so:libc.musl-x86_64.so.1>=1` -> the name."""
    name = re.split(r"[\s(\[<>=~]", text.strip(), maxsplit=1)[0]
    return name.split(":", 1)[0] if not name.startswith(("so:", "cmd:", "pc:")) else name


def _apk_files(record: str) -> list[str]:
    out, directory = [], ""
    for line in record.splitlines():
        if line.startswith("F:"):
            directory = line[2:].strip("/")
            out.append("/" + directory)
        elif line.startswith("R:"):
            out.append("/" + "/".join(p for p in (directory, line[2:]) if p))
    return out


def open_package_db(view: View) -> PackageDb | None:
    """The dpkg or apk database of the source, or None when it has neither."""
    status = _read(view, f"{_DPKG}/status")
    if status:
        packages: dict[str, Package] = {}
        for record in _stanzas(status):
            name, state = _field(record, "Package"), _field(record, "Status") or ""
            if not name or not state.endswith(" installed"):
                continue
            arch = _field(record, "Architecture") or ""
            qualified = f"{name}:{arch}"
            info = qualified if view.stat(f"{_DPKG}/info/{qualified}.list") else name
            source = (_field(record, "Source") or "").split(" ")[0] or None
            packages[name] = Package(name, _field(record, "Version") or "", arch, source, record, info)
        return PackageDb(DbKind.DPKG, view, packages)
    installed = _read(view, _APK)
    if installed:
        packages = {}
        for record in _stanzas(installed):
            name = _field(record, "P", ":")
            if name:
                packages[name] = Package(
                    name, _field(record, "V", ":") or "", _field(record, "A", ":") or "", _field(record, "o", ":"), record, name
                )
        return PackageDb(DbKind.APK, view, packages)
    return None
