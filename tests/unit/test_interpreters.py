"""Interpreters as a closure (distill.interpreters), package name patterns, and no silent empty match, on
trees of real compiled files (the dpkg database is written here in dpkg's own format). Debian's python3
on Debian 12 and 13, and a CPython built into /usr/local, are covered end to end by tests/e2e/test_apps.py
and tests/e2e/test_lookalikes.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.elf import ElfInfo
from distill.errors import ProfileError
from distill.interpreters import python_version
from distill.plan import Plan
from distill.planner import make_plan
from distill.profile import load_profile
from distill.transports.rootfs import DirView

from helpers.tree import Tree


def plan_for(tree: Tree, tmp_path: Path, text: str) -> Plan:
    profile = tmp_path / "p.yaml"
    profile.write_text("schema: distill/v1\n" + text)
    return make_plan(DirView(tree.root), load_profile(str(profile)))


def dpkg_database(tree: Tree) -> None:
    """Two installed packages (tool, with a program; other, with a file) and one removed (gone)."""
    tree.write(
        "/var/lib/dpkg/status",
        "Package: tool\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\n"
        "Package: other\nStatus: install ok installed\nArchitecture: all\nVersion: 9\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
    )
    tree.write("/var/lib/dpkg/info/tool:amd64.list", "/usr\n/usr/bin\n/usr/bin/tool\n")
    tree.write("/var/lib/dpkg/info/other.list", "/usr/share/other/file\n")
    tree.copy(tree.host("/usr/bin/app"), "/usr/bin/tool")
    tree.write("/usr/share/other/file", "x")


@pytest.fixture
def base(tree: Tree) -> Tree:
    tree.app()
    return tree


def stdlib(tree: Tree, directory: str) -> None:
    """The files getpath.py looks for, a C extension module, and what a running program never imports."""
    tree.write(f"{directory}/os.py", "# landmark\n")
    tree.write(f"{directory}/encodings/__init__.py", "")
    tree.write(f"{directory}/__pycache__/os.cpython-313.pyc", b"\0")
    tree.write(f"{directory}/test/test_os.py", "")
    tree.write(f"{directory}/site-packages/pip/__init__.py", "")
    tree.lib(f"{directory}/lib-dynload/_ssl.cpython-313-x86_64-linux-gnu.so")


def test_version_from_name_needed_and_soname() -> None:
    info = ElfInfo(64, True, 62, 0, 3, 0)
    assert python_version("/usr/bin/python3.11", info) == "3.11"
    assert python_version("/usr/bin/python3.13t", info) == "3.13t"
    assert python_version("/usr/local/bin/embed", ElfInfo(64, True, 62, 0, 3, 0, needed=("libpython3.13.so.1.0",))) == "3.13"
    assert python_version("/usr/bin/app", info) is None and python_version("/usr/bin/python3", info) is None


def test_debian_layout_ships_the_standard_library(base: Tree, tmp_path: Path) -> None:
    base.prog("/usr/bin/python3.13")
    base.symlink("/usr/bin/python3", "python3.13")
    stdlib(base, "/usr/lib/python3.13")
    base.symlink("/usr/lib/python3.13/sitecustomize.py", "/etc/python3.13/sitecustomize.py")
    base.write("/etc/python3.13/sitecustomize.py", "")
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/python3]\n")
    assert {"/usr/lib/python3.13/os.py", "/usr/lib/python3.13/encodings/__init__.py", "/etc/python3.13/sitecustomize.py"} <= set(
        plan.entries
    )
    module = "/usr/lib/python3.13/lib-dynload/_ssl.cpython-313-x86_64-linux-gnu.so"
    assert module in plan.roots  # extension modules get their closures
    assert not [p for p in plan.entries if "__pycache__" in p or "/test/" in p or "site-packages" in p]
    assert plan.entries["/usr/lib/python3.13/os.py"].reasons[0].detail == (
        "runtime.python: the standard library of Python 3.13 (/usr/lib/python3.13/os.py found walking up from /usr/bin)"
    )
    assert not [
        p
        for p in plan_for(base, tmp_path, "binaries: [/usr/bin/python3]\nruntime: {python: no}\n").entries
        if p.startswith("/usr/lib/python3.13/")
    ]


def test_usr_local_build_found_from_libpython(base: Tree, tmp_path: Path) -> None:
    base.lib("/usr/local/lib/libpython3.13.so.1.0", soname="libpython3.13.so.1.0")
    base.prog("/usr/local/bin/embedder", needs=["/usr/local/lib/libpython3.13.so.1.0"], flags=["-Wl,-rpath,$ORIGIN/../lib"])
    stdlib(base, "/usr/local/lib/python3.13")
    plan = plan_for(base, tmp_path, "binaries: [/usr/local/bin/embedder]\n")
    assert {"/usr/local/lib/python3.13/os.py", "/usr/local/lib/libpython3.13.so.1.0"} <= set(plan.entries)


def test_virtual_environment_takes_its_home_and_its_packages(base: Tree, tmp_path: Path) -> None:
    base.prog("/usr/local/bin/python3.13")
    stdlib(base, "/usr/local/lib/python3.13")
    base.symlink("/opt/venv/bin/python", "/usr/local/bin/python3.13")
    base.write("/opt/venv/pyvenv.cfg", "home = /usr/local/bin\ninclude-system-site-packages = false\n")
    base.write("/opt/venv/lib/python3.13/site-packages/app/__init__.py", "")
    plan = plan_for(base, tmp_path, "binaries: [/opt/venv/bin/python]\n")
    assert {"/opt/venv/pyvenv.cfg", "/opt/venv/lib/python3.13/site-packages/app/__init__.py", "/usr/local/lib/python3.13/os.py"} <= set(
        plan.entries
    )
    assert "/usr/local/lib/python3.13/site-packages/pip/__init__.py" not in plan.entries


def test_an_interpreter_without_its_standard_library_is_an_error(base: Tree, tmp_path: Path) -> None:
    base.prog("/usr/bin/python3.12")
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "binaries: [/usr/bin/python3.12]\n")
    assert caught.value.issues == [
        f"runtime.python: /usr/bin/python3.12 (Python 3.12) could not start: no lib/python3.12/os.py "
        f"in /usr/bin or any directory above it in rootfs:{base.root}; install its standard library "
        "there, or set runtime.python: no"
    ]
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {python: yes}\n")
    assert "runtime.python: yes, but no shipped program is a Python interpreter" in caught.value.issues[0]


def test_package_patterns_match_installed_names(base: Tree, tmp_path: Path) -> None:
    dpkg_database(base)
    plan = plan_for(base, tmp_path, "packages: ['to?l', 'oth*']\n")
    assert {"/usr/bin/tool", "/usr/share/other/file"} <= set(plan.entries)
    assert plan.entries["/usr/bin/tool"].reasons[0].detail == f"{tmp_path}/p.yaml: packages[0]: tool (matches to?l)"
    assert "/var/lib/dpkg/status.d/gone" not in plan.entries  # removed packages match no pattern
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "packages: ['libpython3.*-stdlib']\n")
    assert caught.value.issues == [
        f"{tmp_path}/p.yaml: packages[0]: package 'libpython3.*-stdlib' matches no package "
        f"installed in rootfs:{base.root}; check the name or mark it optional"
    ]


def test_optional_entries_that_all_match_nothing_are_reported(base: Tree, tmp_path: Path) -> None:
    dpkg_database(base)
    plan = plan_for(
        base,
        tmp_path,
        "binaries: [/usr/bin/app]\npackages: [{name: libpython3.11-stdlib, optional: true}, "
        "{name: 'python3.11-*', optional: true}]\npaths: {/etc/app.conf: {optional: true}}\n",
    )
    assert [w for w in plan.warnings if "nothing matched" in w] == [
        f"{tmp_path}/p.yaml: packages: nothing matched in rootfs:{base.root} for package libpython3.11-stdlib, "
        "package python3.11-*; the output lacks what they name (check the names against the source)",
        f"{tmp_path}/p.yaml: paths: nothing matched in rootfs:{base.root} for /etc/app.conf; the output lacks what "
        "they name (check the names against the source)",
    ]
    # a fragment's optional entries are taken when present, without a word when not
    (tmp_path / "fragment.yaml").write_text("schema: distill/v1\npaths: {/etc/gai.conf: {optional: true}}\n")
    plan = plan_for(base, tmp_path, "extends: [./fragment.yaml]\nbinaries: [/usr/bin/app]\n")
    assert not [w for w in plan.warnings if "nothing matched" in w]
    # alternatives of which one matched stay quiet
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/app]\npackages: [{name: tool, optional: true}, {name: tool2, optional: true}]\n")
    assert not [w for w in plan.warnings if "nothing matched" in w]
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "binaries: [{path: /usr/local/bin/app, optional: true}, {path: /opt/app, optional: true}]\n")
    assert caught.value.issues == [
        f"{tmp_path}/p.yaml: binaries: none of /usr/local/bin/app, /opt/app is in rootfs:{base.root}; "
        "check the paths, or name the app's program with --binary"
    ]
