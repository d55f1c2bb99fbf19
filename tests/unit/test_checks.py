"""Checks before writing: the closure resolves in the output and every needed symbol version exists."""

from __future__ import annotations

import subprocess
from pathlib import Path

from distill.checks import FindingKind, check_plan
from distill.loader import Loader
from distill.planner import make_plan
from distill.profile import load_profile
from distill.transports.rootfs import DirView

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
    assert str(errors[0]).startswith(
        "libgone.so.1 (needed by /usr/bin/app) is not in the output; searched /lib/x86_64-linux-gnu/libgone.so.1"
    )


def test_a_symbol_version_the_library_lacks_fails_the_check(tree: Tree, tmp_path: Path) -> None:
    tree.glibc()
    tree.write("/build/v2.map", V2)
    tree.write("/build/v1.map", V1)
    newer = tree.lib(
        "/build/new/libv.so.1",
        soname="libv.so.1",
        flags=[f"-Wl,--version-script={tree.host('/build/v2.map')}"],
        source="int f1(void) { return 1; }\nint f2(void) { return 2; }\n",
    )
    tree.lib(
        f"{LIBDIR}/libv.so.1",
        soname="libv.so.1",
        flags=[f"-Wl,--version-script={tree.host('/build/v1.map')}"],
        source="int f1(void) { return 1; }\n",
    )
    tree.prog("/usr/bin/app", flags=[str(newer)], source="int f2(void);\nint main(void) { return f2(); }\n")
    plan = make_plan(DirView(tree.root), profile(tmp_path, "binaries: [/usr/bin/app]\n"))
    errors = check_plan(plan, DirView(tree.root)).errors
    assert [(e.kind, e.library, e.version) for e in errors] == [(FindingKind.MISSING_VERSION, "libv.so.1", "VERS_2")]
    assert [str(e) for e in errors] == [
        f"/usr/bin/app needs version VERS_2 of libv.so.1, but /lib/{TRIPLET}/libv.so.1 defines versions up to "
        "VERS_1; ship a libv.so.1 at least as new as the one it was built against"
    ]


def test_glibc_versions_of_the_real_libc_are_satisfied(tree: Tree, tmp_path: Path) -> None:
    tree.glibc()
    tree.prog("/usr/bin/app", source='#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
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


def test_a_shipped_symlink_brings_its_target_or_fails_naming_it(tree: Tree, tmp_path: Path) -> None:
    """A `**` rule over a directory link takes the target's tree; a literal rule takes the target itself;
    a target left out fails the check naming the link, unless `dangling` allows it."""
    tree.app()
    tree.write("/usr/share/pack/de/page", "Seite")
    tree.symlink("/usr/share/pack/de-de", "de")
    tree.symlink("/usr/share/app/errors", "../pack")
    tree.symlink("/usr/share/app/gone", "/nowhere")
    view = DirView(tree.root)
    plan = make_plan(view, profile(tmp_path, "binaries: [/usr/bin/app]\npaths:\n  /usr/share/app/**: {}\n"))
    assert {"/usr/share/pack/de/page", "/usr/share/pack/de-de"} <= set(plan.entries)
    assert (
        plan.entries["/usr/share/pack/de/page"].reasons[0].describe()
        == "in /usr/share/pack, the target of a shipped symlink <- /usr/share/app/errors"
    )
    assert not [w for w in plan.warnings if "/nowhere" in w]  # it dangles in the source alike, and no rule named it
    named = make_plan(view, profile(tmp_path, "binaries: [/usr/bin/app]\npaths:\n  /usr/share/app/gone: {}\n"))
    assert (
        f"{tmp_path}/app.yaml: paths['/usr/share/app/gone']: /usr/share/app/gone is a symlink to /nowhere, "
        "which the source does not have" in named.warnings
    )
    assert check_plan(named, view).errors == []
    assert check_plan(plan, view).errors == []
    literal = make_plan(view, profile(tmp_path, "binaries: [/usr/bin/app]\npaths:\n  /usr/share/app/errors: {}\n"))
    assert "/usr/share/pack" in literal.entries and "/usr/share/pack/de/page" not in literal.entries
    cut = make_plan(view, profile(tmp_path, "binaries: [/usr/bin/app]\npaths:\n  /usr/share/app/errors: {}\nexclude: [/usr/share/pack]\n"))
    assert [(f.kind, str(f)) for f in check_plan(cut, view).errors] == [
        (
            FindingKind.DANGLING_LINK,
            "/usr/share/app/errors: symlink to ../pack, but /usr/share/pack is not in the output (excluded by the profile); "
            "ship it, or list the link under `dangling` if it may point at nothing",
        )
    ]
    allowed = make_plan(
        view,
        profile(
            tmp_path,
            "binaries: [/usr/bin/app]\npaths:\n  /usr/share/app/errors: {}\nexclude: [/usr/share/pack]\ndangling: [/usr/share/app/*]\n",
        ),
    )
    assert check_plan(allowed, view).errors == []


def test_plugins_of_a_host_are_checked_in_its_process(tree: Tree, tmp_path: Path) -> None:
    tree.glibc()
    tree.lib("/opt/host/lib/libhost.so", soname="libhost.so")
    tree.prog("/opt/host/bin/host", needs=["/opt/host/lib/libhost.so"], flags=["-Wl,-rpath,$ORIGIN/../lib"])
    tree.lib("/opt/host/lib/server/libcore.so", soname="libcore.so")
    for name in ("a", "b"):
        tree.lib(
            f"/opt/host/lib/lib{name}.so", soname=f"lib{name}.so", needs=["/opt/host/lib/libhost.so", "/opt/host/lib/server/libcore.so"]
        )
    view = DirView(tree.root)
    alone = make_plan(view, profile(tmp_path, "binaries: [/opt/host/bin/host]\npaths:\n  /opt/host/lib/**: {}\n"))
    errors = check_plan(alone, view).errors
    assert sorted(str(e).split(" is not")[0] for e in errors) == [
        "libcore.so (needed by /opt/host/lib/liba.so)",
        "libcore.so (needed by /opt/host/lib/libb.so)",
        "libhost.so (needed by /opt/host/lib/liba.so)",
        "libhost.so (needed by /opt/host/lib/libb.so)",
    ]
    assert any(
        str(e).endswith(
            "; /opt/host/lib/server/libcore.so ships, off its search path: if one program loads both, list "
            "/opt/host/lib/liba.so under runtime.plugins with that program as the host"
        )
        for e in errors
    )
    hosted = make_plan(view, profile(tmp_path, "runtime:\n  plugins: [{host: /opt/host/bin/*, paths: ['/opt/host/lib/**/*.so']}]\n"))
    assert hosted.hosts["/opt/host/lib/liba.so"][0] == "/opt/host/bin/host"
    assert check_plan(hosted, view).errors == []
    core = hosted.entries["/opt/host/lib/server/libcore.so"]
    assert core.reasons[0].describe() == "runtime.plugins: /opt/host/bin/*: a plugin /opt/host/bin/host loads"
