"""Checks before writing: the closure resolves in the output and every needed symbol version exists."""

from __future__ import annotations

import subprocess
from pathlib import Path

from distill.checks import FindingKind, check_plan
from distill.loader import Loader
from distill.planner import make_plan
from distill.profile import load_profile
from distill.sources.rootfs import DirView

from helpers.cli import run_distill
from helpers.tree import TRIPLET, Tree, model_list, same_answer

LIBDIR = f"/usr/lib/{TRIPLET}"
V1 = "VERS_1 { global: f1; local: *; };\n"
V2 = "VERS_1 { global: f1; local: *; };\nVERS_2 { global: f2; } VERS_1;\n"


def profile(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "app.yaml"
    path.write_text("schema: distill/v1\nextends: [glibc]\n" + text)
    return load_profile(str(path))


def test_a_library_missing_from_the_output_is_reported_with_who_needs_it(tree: Tree, tmp_path: Path) -> None:
    tree.glibc()
    tree.lib(f"{LIBDIR}/libgone.so.1", soname="libgone.so.1")
    tree.prog("/usr/bin/app", needs=[f"{LIBDIR}/libgone.so.1"])
    plan = make_plan(DirView(tree.root), profile(tmp_path, "binaries: [/usr/bin/app]\nexclude: ['/usr/lib/*/libgone*']\n"))
    errors = check_plan(plan, DirView(tree.root)).errors
    assert [(e.kind, e.path, e.library) for e in errors] == [(FindingKind.MISSING_LIBRARY, "/usr/bin/app", "libgone.so.1")]
    assert str(errors[0]).startswith("libgone.so.1 (needed by /usr/bin/app) is not in the output; searched /lib/x86_64-linux-gnu/libgone.so.1")


def test_a_symbol_version_the_library_lacks_fails_the_check(tree: Tree, tmp_path: Path) -> None:
    tree.glibc()
    tree.write("/build/v2.map", V2)
    tree.write("/build/v1.map", V1)
    newer = tree.lib("/build/new/libv.so.1", soname="libv.so.1", flags=[f"-Wl,--version-script={tree.host('/build/v2.map')}"],
                     source="int f1(void) { return 1; }\nint f2(void) { return 2; }\n")
    tree.lib(f"{LIBDIR}/libv.so.1", soname="libv.so.1", flags=[f"-Wl,--version-script={tree.host('/build/v1.map')}"],
             source="int f1(void) { return 1; }\n")
    tree.prog("/usr/bin/app", flags=[str(newer)], source="int f2(void);\nint main(void) { return f2(); }\n")
    plan = make_plan(DirView(tree.root), profile(tmp_path, "binaries: [/usr/bin/app]\n"))
    errors = check_plan(plan, DirView(tree.root)).errors
    assert [(e.kind, e.library, e.version) for e in errors] == [(FindingKind.MISSING_VERSION, "libv.so.1", "VERS_2")]
    assert [str(e) for e in errors] == [f"/usr/bin/app needs version VERS_2 of libv.so.1, but /lib/{TRIPLET}/libv.so.1 defines versions up to "
                      "VERS_1; ship a libv.so.1 at least as new as the one it was built against"]


def test_glibc_versions_of_the_real_libc_are_satisfied(tree: Tree, tmp_path: Path) -> None:
    tree.glibc()
    tree.prog("/usr/bin/app", source="#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n")
    plan = make_plan(DirView(tree.root), profile(tmp_path, "binaries: [/usr/bin/app]\n"))
    assert check_plan(plan, DirView(tree.root)).errors == []
    needs = Loader(DirView(tree.root)).elf("/usr/bin/app").verneed
    assert any(need.file == "libc.so.6" and need.versions for need in needs)


def test_a_library_found_only_through_ld_so_conf_gets_a_cache(tree: Tree, tmp_path: Path) -> None:
    tree.glibc()
    tree.write("/etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n")
    tree.write("/etc/ld.so.conf.d/local.conf", "/usr/local/lib\n")
    tree.lib("/usr/local/lib/liblocal.so.1", soname="liblocal.so.1")
    tree.prog("/usr/local/bin/app", needs=["/usr/local/lib/liblocal.so.1"])
    tree.ldconfig()
    out = tmp_path / "out"
    result = run_distill("/usr/local/bin/app", "--from", str(tree.root), "--out", f"rootfs:{out}", "-q")
    assert result.code == 0, result.stderr
    assert (out / "etc/ld.so.cache").is_file() and (out / "etc/ld.so.conf.d/local.conf").is_file()
    output = Tree(out)
    closure = Loader(DirView(out)).closure("/usr/local/bin/app")
    assert same_answer(model_list(closure), output.real_list("/usr/local/bin/app"))
    assert output.real_list("/usr/local/bin/app")["liblocal.so.1"] == "/usr/local/lib/liblocal.so.1"
    listed = subprocess.run(["ldconfig", "-p", "-C", str(out / "etc/ld.so.cache")], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert "liblocal.so.1" in names and "libc.so.6" in names
    assert len(names) == len(set(names)) and len(names) < 10  # only what ships, not the source's whole cache
