"""Runtime collectors, whole packages and package records, on trees of real compiled files.

The package databases here are written by the tests in dpkg's and apk's own formats (the fat Debian
rootfs of tests/e2e/test_apps.py covers a real dpkg database end to end)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from distill.errors import ProfileError
from distill.plan import Plan
from distill.planner import make_plan
from distill.profile import load_profile
from distill.transports.rootfs import DirView

from helpers.tree import HOST_LIBC, TRIPLET, Tree

LIBDIR = f"/usr/lib/{TRIPLET}"
HOST_LIBGCC = Path(os.path.realpath(f"/lib/{TRIPLET}/libgcc_s.so.1"))


def plan_for(tree: Tree, tmp_path: Path, text: str) -> Plan:
    profile = tmp_path / "p.yaml"
    profile.write_text("schema: distill/v1\n" + text)
    return make_plan(DirView(tree.root), load_profile(str(profile)))


@pytest.fixture
def base(tree: Tree) -> Tree:
    tree.app()
    return tree


def test_nss_modules_come_from_the_outputs_nsswitch(base: Tree, tmp_path: Path) -> None:
    base.lib(f"{LIBDIR}/libnss_compat.so.2", soname="libnss_compat.so.2")
    base.lib(f"{LIBDIR}/libnss_files.so.2", soname="libnss_files.so.2")
    base.write("/etc/nsswitch.conf", "passwd: compat\ngroup: files [NOTFOUND=return] compat\nhosts: files dns myhostname\n")
    source = plan_for(
        base, tmp_path, "binaries: [/usr/bin/app]\npaths:\n  /etc/nsswitch.conf: {}\nruntime: {nss: auto}\nsystem: {nsswitch: no}\n"
    )
    assert f"{LIBDIR}/libnss_compat.so.2" in source.entries
    assert f"{LIBDIR}/libnss_files.so.2" not in source.entries  # built into glibc 2.36's libc
    assert any("libnss_myhostname.so.2 is not in" in w for w in source.warnings)
    ours = plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {nss: auto}\n")  # distill's nsswitch: files, dns
    assert not [p for p in ours.entries if "libnss_" in p]


def test_libgcc_s_ships_when_a_program_cancels_threads(base: Tree, tmp_path: Path) -> None:
    base.copy(HOST_LIBGCC, f"{LIBDIR}/libgcc_s.so.1")
    base.prog("/usr/bin/threads", source="#include <pthread.h>\nint main(void) { return pthread_cancel(pthread_self()); }\n")
    with_cancel = plan_for(base, tmp_path, "binaries: [/usr/bin/threads]\nruntime: {libgcc-s: auto}\n")
    entry = with_cancel.entries[f"{LIBDIR}/libgcc_s.so.1"]
    assert entry.reasons[0].detail.startswith("runtime.libgcc-s: /usr/bin/threads cancels or exits threads")
    without = plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {libgcc-s: auto}\n")
    assert f"{LIBDIR}/libgcc_s.so.1" not in without.entries


NOTE = r"""
#define JSON "[{\"feature\":\"compression\",\"soname\":[\"libextra.so.1\"],\"priority\":\"recommended\"}," \
             "{\"feature\":\"fancy\",\"soname\":[\"libfancy.so.1\"],\"priority\":\"suggested\"}]"
__attribute__((section(".note.dlopen"), used, aligned(4)))
static const struct { unsigned namesz, descsz, type; char name[4]; char desc[(sizeof(JSON) + 3) & ~3]; } note =
    { 4, sizeof(JSON), 0x407c0c0a, "FDO", JSON };
int main(void) { return 0; }
"""


def test_dlopen_notes_ship_what_they_name(base: Tree, tmp_path: Path) -> None:
    base.lib(f"{LIBDIR}/libextra.so.1", soname="libextra.so.1")
    base.prog("/usr/bin/noted", source=NOTE)
    from distill.loader import Loader

    notes = Loader(DirView(base.root)).elf("/usr/bin/noted").dlopen
    assert [(n.feature, n.sonames, n.priority) for n in notes] == [
        ("compression", ("libextra.so.1",), "recommended"),
        ("fancy", ("libfancy.so.1",), "suggested"),
    ]
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/noted]\nruntime: {dlopen-notes: recommended}\n")
    assert f"{LIBDIR}/libextra.so.1" in plan.entries
    off = plan_for(base, tmp_path, "binaries: [/usr/bin/noted]\n")
    assert f"{LIBDIR}/libextra.so.1" not in off.entries
    suggested = plan_for(base, tmp_path, "binaries: [/usr/bin/noted]\nruntime: {dlopen-notes: suggested}\n")
    assert any("libfancy.so.1 is not in" in w for w in suggested.warnings)  # only a missing `required` one fails


def test_gconv_modules_by_charset(base: Tree, tmp_path: Path) -> None:
    gconv = f"{LIBDIR}/gconv"
    base.write(
        f"{gconv}/gconv-modules",
        "alias UTF16// UTF-16//\nmodule UTF-16// INTERNAL UTF-16 1\n"
        "module INTERNAL UTF-16// UTF-16 1\nmodule ISO-8859-1// INTERNAL ISO8859-1 1\n",
    )
    base.lib(f"{gconv}/UTF-16.so")
    base.lib(f"{gconv}/ISO8859-1.so")
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {gconv: [utf16]}\n")
    assert f"{gconv}/UTF-16.so" in plan.entries and f"{gconv}/gconv-modules" in plan.entries
    assert f"{gconv}/ISO8859-1.so" not in plan.entries
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {gconv: [EBCDIC-XX]}\n")
    assert "no gconv module converts EBCDIC-XX" in caught.value.message


def test_locales_and_zones_on_request(base: Tree, tmp_path: Path) -> None:
    base.write("/usr/lib/locale/C.utf8/LC_CTYPE", "ctype")
    base.write("/usr/share/zoneinfo/Asia/Tokyo", "TZif")
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {locales: [C.UTF-8], tzdata: [Asia/Tokyo]}\n")
    assert "/usr/lib/locale/C.utf8/LC_CTYPE" in plan.entries and "/usr/share/zoneinfo/Asia/Tokyo" in plan.entries
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {locales: [fr_FR.UTF-8]}\n")
    assert "locale 'fr_FR.UTF-8' is not compiled in the source" in caught.value.message


def dpkg_database(tree: Tree) -> None:
    tree.write(
        "/var/lib/dpkg/status",
        "Package: tool\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.2-3\nSource: tools\n\n"
        "Package: other\nStatus: install ok installed\nArchitecture: all\nVersion: 9\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
    )
    tree.write(
        "/var/lib/dpkg/info/tool:amd64.list",
        "/.\n/usr\n/usr/bin\n/usr/bin/tool\n/usr/share/tool\n/usr/share/tool/data\n"
        "/usr/share/doc/tool\n/usr/share/doc/tool/copyright\n/usr/share/man/man1/tool.1\n",
    )
    tree.write(
        "/var/lib/dpkg/info/tool:amd64.md5sums",
        "00000000000000000000000000000000  usr/bin/tool\n"
        "11111111111111111111111111111111  usr/share/tool/data\n"
        "22222222222222222222222222222222  usr/share/man/man1/tool.1\n",
    )
    tree.write("/var/lib/dpkg/info/other.list", "/usr/share/other/file\n")
    tree.copy(tree.host("/usr/bin/app"), "/usr/bin/tool")
    tree.write("/usr/share/tool/data", "data")
    tree.write("/usr/share/doc/tool/copyright", "MIT")
    tree.write("/usr/share/man/man1/tool.1", ".TH tool")
    tree.write("/usr/share/other/file", "x")


def test_packages_ship_whole_packages_and_their_records(base: Tree, tmp_path: Path) -> None:
    dpkg_database(base)
    plan = plan_for(base, tmp_path, "packages: [tool]\n")
    assert {"/usr/bin/tool", "/usr/share/tool/data", "/usr/share/doc/tool/copyright"} <= set(plan.entries)
    assert "/usr/share/man/man1/tool.1" not in plan.entries  # documentation stays behind
    assert "/usr/bin/tool" in plan.roots  # an ELF of a package gets its closure
    status = plan.entries["/var/lib/dpkg/status.d/tool"].data
    assert status == b"Package: tool\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.2-3\nSource: tools\n"
    assert plan.entries["/var/lib/dpkg/status.d/tool.md5sums"].data == (
        b"00000000000000000000000000000000  usr/bin/tool\n11111111111111111111111111111111  usr/share/tool/data\n"
    )
    assert "/var/lib/dpkg/status.d/other" not in plan.entries  # it contributed nothing
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "packages: [gone, {name: maybe, optional: true}]\n")
    assert caught.value.issues == [
        f"{tmp_path}/p.yaml: packages[0]: package 'gone' is not installed in rootfs:{base.root}; check the name or mark it optional"
    ]


def test_apk_packages(base: Tree, tmp_path: Path) -> None:
    # written through the tree's /lib -> usr/lib link
    base.write(
        "/lib/apk/db/installed",
        "C:Q1abc=\nP:tool\nV:1.0-r0\nA:x86_64\no:tools\nF:usr/bin\nR:tool\n\nP:other\nV:2\nA:x86_64\nF:usr/share/other\nR:file\n\n",
    )
    base.copy(base.host("/usr/bin/app"), "/usr/bin/tool")
    base.write("/usr/share/other/file", "x")
    plan = plan_for(base, tmp_path, "packages: [tool]\n")
    assert "/usr/bin/tool" in plan.entries and "/usr/share/other/file" not in plan.entries
    assert plan.entries["/usr/lib/apk/db/installed"].data == b"C:Q1abc=\nP:tool\nV:1.0-r0\nA:x86_64\no:tools\nF:usr/bin\nR:tool\n\n"


def test_package_metadata_can_be_switched_off(base: Tree, tmp_path: Path) -> None:
    dpkg_database(base)
    plan = plan_for(base, tmp_path, "packages: [tool]\nsystem: {package-metadata: no}\n")
    assert not [p for p in plan.entries if p.startswith("/var/lib/dpkg")]


def test_host_libc_is_the_fixture_glibc() -> None:
    assert HOST_LIBC.exists() and shutil.which("gcc")


def test_nsswitch_no_means_no_file_and_no_modules(base: Tree, tmp_path: Path) -> None:
    base.lib(f"{LIBDIR}/libnss_myhostname.so.2", soname="libnss_myhostname.so.2")
    base.write("/etc/nsswitch.conf", "hosts: files myhostname\n")
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {nss: auto}\nsystem: {nsswitch: no}\n")
    assert "/etc/nsswitch.conf" not in plan.entries and not [p for p in plan.entries if "libnss_" in p]
    shipped = plan_for(
        base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {nss: auto}\nsystem: {nsswitch: no}\npaths:\n  /etc/nsswitch.conf: {}\n"
    )
    assert "/etc/nsswitch.conf" in shipped.entries and f"{LIBDIR}/libnss_myhostname.so.2" in shipped.entries


def test_tzdata_all_on_a_source_without_zones_warns(base: Tree, tmp_path: Path) -> None:
    plan = plan_for(base, tmp_path, "extends: [tzdata]\nbinaries: [/usr/bin/app]\n")
    assert any(w.startswith("runtime.tzdata: the source has no time-zone database") and "zoneinfo has no zones" in w for w in plan.warnings)
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {tzdata: [Europe/Paris]}\n")
    assert caught.value.issues == ["runtime.tzdata: zone 'Europe/Paris' is not in the source's /usr/share/zoneinfo"]


def test_shadow_is_generated_for_the_shipped_accounts_locked(base: Tree, tmp_path: Path) -> None:
    base.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nother:x:1001:1001::/:/bin/sh\n")
    base.write("/etc/group", "root:x:0:\nshadow:x:42:\napp:x:1000:other\nother:x:1001:\n")
    base.write("/etc/shadow", "root:$6$salt$secrethash:19000:0:99999:7:::\napp:$y$j9T$anotherhash:19000:0:99999:7:::\n", 0o640)
    base.lib(f"{LIBDIR}/security/pam_unix.so")
    none = plan_for(base, tmp_path, "binaries: [/usr/bin/app]\naccounts: {users: [app]}\n")
    assert "/etc/shadow" not in none.entries  # auto, and nothing reads it
    plan = plan_for(base, tmp_path, f"binaries: [/usr/bin/app, {LIBDIR}/security/pam_unix.so]\naccounts: {{users: [app]}}\n")
    shadow, gshadow = plan.entries["/etc/shadow"], plan.entries["/etc/gshadow"]
    assert shadow.data == b"root:*:::::::\napp:*:::::::\n" and (shadow.mode, shadow.uid, shadow.gid) == (0o640, 0, 42)
    assert gshadow.data == b"root:*::\nshadow:*::\napp:*::other\n"
    assert shadow.reasons[0].detail == f"system.shadow: auto ({LIBDIR}/security/pam_unix.so reads it), every account locked"
    assert b"shadow:x:42:" in plan.entries["/etc/group"].data
    off = plan_for(base, tmp_path, f"binaries: [/usr/bin/app, {LIBDIR}/security/pam_unix.so]\nsystem: {{shadow: no}}\n")
    assert "/etc/shadow" not in off.entries


def test_a_glob_over_etc_never_ships_the_sources_shadow(base: Tree, tmp_path: Path) -> None:
    base.write("/etc/shadow", "root:$6$salt$secrethash:19000:0:99999:7:::\n", 0o640)
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/app]\npaths:\n  /etc/**: {}\nsystem: {shadow: no}\n")
    assert "/etc/shadow" not in plan.entries and "/etc/passwd" in plan.entries
    assert (
        "/etc/shadow: not shipped: the source's /etc/shadow holds password hashes (system.shadow writes a locked one "
        "for the shipped accounts)" in plan.warnings
    )
    base.symlink("/etc/innocent", "shadow")
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "binaries: [/usr/bin/app]\npaths:\n  /etc/copy: {copy: /etc/innocent}\n")
    assert caught.value.issues[0].endswith(
        "paths['/etc/copy'].copy: /etc/shadow holds password hashes and never ships; "
        "set `system.shadow: yes` for one with the shipped accounts, locked"
    )


def test_shadow_on_a_base_keeps_the_bases_lines_and_adds_ours(base: Tree, tmp_path: Path) -> None:
    from distill.layering import rebase_plan

    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nsystem: {shadow: yes}\n")
    image_base = Tree(tmp_path / "base")
    image_base.write("/etc/shadow", "nonroot:*:18000:0:99999:7:::\n", 0o640)
    layer, report = rebase_plan(plan, DirView(base.root), DirView(image_base.root))
    assert layer.entries["/etc/shadow"].data == b"nonroot:*:18000:0:99999:7:::\nroot:*:::::::\n"
    assert "/etc/shadow" in report.merged


def test_package_depends_are_followed_except_essential_and_closure_libraries(base: Tree, tmp_path: Path) -> None:
    base.lib(f"{LIBDIR}/libapp.so.1", soname="libapp.so.1")
    base.lib(f"{LIBDIR}/libother.so.1", soname="libother.so.1")
    base.prog("/usr/bin/appbin", needs=[f"{LIBDIR}/libapp.so.1", f"{LIBDIR}/libother.so.1"])
    stanzas = {
        "app": "Depends: libapp1 (>= 1.0), libother1, data-a | data-b, virtual-thing, ess, missing (>= 2)",
        "libapp1": "Source: app\nDepends: app-data",
        "libother1": "Source: other\nDepends: other-data",
        "data-b": "",
        "prov": "Provides: virtual-thing (= 1)",
        "ess": "Essential: yes",
        "app-data": "",
        "other-data": "",
    }
    base.write(
        "/var/lib/dpkg/status",
        "\n\n".join(
            f"Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n{extra}".strip()
            for name, extra in stanzas.items()
        )
        + "\n",
    )
    files = {"app": "/usr/bin/appbin", "libapp1": f"{LIBDIR}/libapp.so.1", "libother1": f"{LIBDIR}/libother.so.1"}
    for name in stanzas:
        path = files.get(name, f"/usr/share/{name}/file")
        if name not in files:
            base.write(path, name)
        base.write(f"/var/lib/dpkg/info/{name}.list", f"{path}\n")
    plan = plan_for(base, tmp_path, "packages: [{name: app, depends: true}]\n")
    shipped = {p.split("/")[3] for p in plan.entries if p.startswith("/usr/share/") and p.endswith("/file")}
    assert shipped == {"data-b", "prov", "app-data"}  # not ess (essential), not other-data (libother1 is another source's library)
    reason = plan.entries["/usr/share/app-data/file"].reasons[0].detail
    assert reason == f"{tmp_path}/p.yaml: packages[0]: app-data, which libapp1 depends on (app-data)"
    assert f"{tmp_path}/p.yaml: packages[0]: app depends on missing (>= 2), which rootfs:{base.root} does not have" in plan.warnings
    plain = plan_for(base, tmp_path, "packages: [app]\n")
    assert not [p for p in plain.entries if p.endswith("/file")]
