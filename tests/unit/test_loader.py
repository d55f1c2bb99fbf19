"""The loader model, one rule per fixture: real ELF files compiled here, the exact path asserted,
and (where the host can run them) the same answer from glibc's own ld.so inside the tree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from distill.loader import Closure, Loader, LoaderEnv
from distill.transports.rootfs import DirView

from helpers import require
from helpers.tree import TRIPLET, Tree, model_list, same_answer

LIBDIR = f"/usr/lib/{TRIPLET}"
MUSL_LDSO = Path("/lib/ld-musl-x86_64.so.1").resolve()
ARM_SYSROOT = Path("/usr/aarch64-linux-gnu/lib")


@pytest.fixture
def musl() -> None:
    require(MUSL_LDSO.exists() and shutil.which("musl-gcc") is not None, "musl-tools (musl-gcc, ld-musl-x86_64.so.1)")


@pytest.fixture
def aarch64() -> None:
    require(
        (ARM_SYSROOT / "libc.so.6").exists() and shutil.which("aarch64-linux-gnu-gcc") is not None,
        "gcc-aarch64-linux-gnu and libc6-dev-arm64-cross",
    )


def closure(tree: Tree, path: str) -> Closure:
    return Loader(DirView(tree.root)).closure(path)


def link(found: Closure, name: str):  # type: ignore[no-untyped-def]
    return next(ln for ln in found.links if ln.name == name)


def agrees_with_real_loader(tree: Tree, path: str, found: Closure) -> None:
    model, real = model_list(found), tree.real_list(path)
    assert same_answer(model, real), (model, real)


def retag(path: Path, old_tag: int, new_tag: int) -> None:
    """Rewrite one dynamic tag in place (to build an object carrying both DT_RPATH and DT_RUNPATH)."""
    from elftools.elf.elffile import ELFFile

    with open(path, "r+b") as stream:
        dynamic = ELFFile(stream).get_section_by_name(".dynamic")
        offset, size = dynamic["sh_offset"], dynamic["sh_size"]
        stream.seek(offset)
        data = bytearray(stream.read(size))
        for at in range(0, len(data), 16):
            if int.from_bytes(data[at : at + 8], "little") == old_tag:
                data[at : at + 8] = new_tag.to_bytes(8, "little")
                break
        else:
            raise AssertionError("tag not found")
        stream.seek(offset)
        stream.write(data)


def test_pt_interp_is_kept_at_its_exact_path(tree: Tree) -> None:
    tree.glibc()
    tree.prog("/usr/bin/app")
    found = closure(tree, "/usr/bin/app")
    interp = link(found, "/lib64/ld-linux-x86-64.so.2")
    assert (interp.rule, interp.path) == ("PT_INTERP", "/lib64/ld-linux-x86-64.so.2")
    assert link(found, "libc.so.6").path == f"/lib/{TRIPLET}/libc.so.6"
    assert link(found, "libc.so.6").rule == "default path"  # no ld.so.cache in this tree
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_needed_with_a_slash_is_used_as_a_path(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/x/libslash.so", soname="/opt/x/libslash.so")
    tree.prog("/usr/bin/app", needs=["/opt/x/libslash.so"])
    found = closure(tree, "/usr/bin/app")
    hit = link(found, "/opt/x/libslash.so")
    assert (hit.rule, hit.path) == ("DT_NEEDED path", "/opt/x/libslash.so")
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_rpath_is_inherited_from_the_executable(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/a/libb.so.1", soname="libb.so.1")
    tree.lib("/opt/a/liba.so.1", soname="liba.so.1", needs=["/opt/a/libb.so.1"])
    tree.prog("/usr/bin/app", needs=["/opt/a/liba.so.1"], flags=["-Wl,--disable-new-dtags,-rpath,/opt/a"])
    found = closure(tree, "/usr/bin/app")
    inherited = link(found, "libb.so.1")
    assert (inherited.requester, inherited.path, inherited.rule, inherited.detail) == (
        "/opt/a/liba.so.1",
        "/opt/a/libb.so.1",
        "DT_RPATH",
        "/usr/bin/app",
    )
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_runpath_applies_to_direct_dependencies_only(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/a/libb.so.1", soname="libb.so.1")
    tree.lib("/opt/a/liba.so.1", soname="liba.so.1", needs=["/opt/a/libb.so.1"])
    tree.prog("/usr/bin/app", needs=["/opt/a/liba.so.1"], flags=["-Wl,--enable-new-dtags,-rpath,/opt/a"])
    found = closure(tree, "/usr/bin/app")
    assert (link(found, "liba.so.1").rule, link(found, "liba.so.1").path) == ("DT_RUNPATH", "/opt/a/liba.so.1")
    missing = link(found, "libb.so.1")
    assert missing.path is None and "/opt/a/libb.so.1" not in missing.searched
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_runpath_disables_the_objects_rpath(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/rpath/libz9.so.1", soname="libz9.so.1")
    tree.lib("/opt/runpath/libz9.so.1", soname="libz9.so.1")
    # modern GNU ld writes one of the two tags; turn the DT_SONAME string into a DT_RUNPATH to get both
    app = tree.prog(
        "/usr/bin/app", needs=["/opt/runpath/libz9.so.1"], flags=["-Wl,--disable-new-dtags,-rpath,/opt/rpath", "-Wl,-soname,/opt/runpath"]
    )
    retag(app, 14, 29)  # DT_SONAME -> DT_RUNPATH
    readelf = subprocess.run(["readelf", "-d", str(app)], capture_output=True, text=True).stdout
    assert "(RPATH)" in readelf and "(RUNPATH)" in readelf
    found = closure(tree, "/usr/bin/app")
    assert (link(found, "libz9.so.1").path, link(found, "libz9.so.1").rule) == ("/opt/runpath/libz9.so.1", "DT_RUNPATH")
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_ld_so_conf_includes_are_sorted_and_relative(tree: Tree) -> None:
    tree.glibc()
    tree.write("/etc/ld.so.conf", "include ld.so.conf.d/*.conf\n")
    tree.write("/etc/ld.so.conf.d/20-b.conf", "# second\n/opt/b\n")
    tree.write("/etc/ld.so.conf.d/10-a.conf", "/opt/a/   # trailing slash and comment\n")
    tree.lib("/opt/b/libconf.so.1", soname="libconf.so.1")
    tree.lib("/opt/a/libconf.so.1", soname="libconf.so.1")
    tree.prog("/usr/bin/app", needs=["/opt/b/libconf.so.1"])
    tree.ldconfig()
    found = closure(tree, "/usr/bin/app")
    hit = link(found, "libconf.so.1")
    assert (hit.path, hit.rule, hit.detail) == ("/opt/a/libconf.so.1", "ld.so.conf", "/etc/ld.so.conf.d/10-a.conf")
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_ld_so_conf_is_ignored_without_a_cache(tree: Tree) -> None:
    tree.glibc()
    tree.write("/etc/ld.so.conf", "/opt/a\n")
    tree.lib("/opt/a/libconf.so.1", soname="libconf.so.1")
    tree.prog("/usr/bin/app", needs=["/opt/a/libconf.so.1"])
    found = closure(tree, "/usr/bin/app")
    assert link(found, "libconf.so.1").path is None  # ld.so reads only /etc/ld.so.cache
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_default_directories_put_multiarch_first(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/usr/lib/libdef.so.1", soname="libdef.so.1")
    tree.lib(f"{LIBDIR}/libdef.so.1", soname="libdef.so.1")
    tree.prog("/usr/bin/app", needs=[f"{LIBDIR}/libdef.so.1"])
    found = closure(tree, "/usr/bin/app")
    hit = link(found, "libdef.so.1")
    assert (hit.path, hit.rule) == (f"/lib/{TRIPLET}/libdef.so.1", "default path")
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_nodeflib_skips_cache_and_default_directories(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/usr/lib/libdef.so.1", soname="libdef.so.1")
    tree.prog(
        "/usr/bin/app", needs=["/usr/lib/libdef.so.1"], flags=["-Wl,-z,nodefaultlib", f"-Wl,--enable-new-dtags,-rpath,/lib/{TRIPLET}"]
    )
    found = closure(tree, "/usr/bin/app")
    assert link(found, "libc.so.6").rule == "DT_RUNPATH"
    assert link(found, "libdef.so.1").path is None
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_origin_of_a_program_is_its_resolved_directory(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/app/lib/libapp.so.1", soname="libapp.so.1")
    tree.prog("/opt/app/bin/app", needs=["/opt/app/lib/libapp.so.1"], flags=["-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib"])
    tree.symlink("/usr/bin/app", "/opt/app/bin/app")
    found = closure(tree, "/usr/bin/app")  # the kernel reports /proc/self/exe = /opt/app/bin/app
    hit = link(found, "libapp.so.1")
    assert (hit.path, hit.rule) == ("/opt/app/bin/../lib/libapp.so.1", "DT_RUNPATH")
    model, real = model_list(found), tree.real_exec_list("/usr/bin/app")
    assert same_answer(model, real), (model, real)


def test_origin_of_a_library_is_where_it_was_found_not_its_target(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/found/sub/libleaf.so.1", soname="libleaf.so.1")
    tree.lib(
        "/opt/real/libmid.so.1",
        soname="libmid.so.1",
        needs=["/opt/found/sub/libleaf.so.1"],
        flags=["-Wl,--enable-new-dtags,-rpath,$ORIGIN/sub"],
    )
    tree.symlink("/opt/found/libmid.so.1", "/opt/real/libmid.so.1")
    tree.prog("/usr/bin/app", needs=["/opt/real/libmid.so.1"], flags=["-Wl,--enable-new-dtags,-rpath,/opt/found"])
    found = closure(tree, "/usr/bin/app")
    assert link(found, "libmid.so.1").path == "/opt/found/libmid.so.1"
    assert link(found, "libleaf.so.1").path == "/opt/found/sub/libleaf.so.1"
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_lib_token_expands_to_the_targets_multiarch_directory(tree: Tree) -> None:
    tree.glibc()
    tree.lib(f"/opt/lib/{TRIPLET}/libtok.so.1", soname="libtok.so.1")
    tree.prog("/usr/bin/app", needs=[f"/opt/lib/{TRIPLET}/libtok.so.1"], flags=["-Wl,--enable-new-dtags,-rpath,/opt/${LIB}"])
    found = closure(tree, "/usr/bin/app")
    assert link(found, "libtok.so.1").path == f"/opt/lib/{TRIPLET}/libtok.so.1"
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_platform_token_comes_from_the_target_not_the_host_cpu(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/x86_64/libplat.so.1", soname="libplat.so.1")
    tree.lib("/opt/haswell/libplat.so.1", soname="libplat.so.1")
    tree.prog("/usr/bin/app", needs=["/opt/x86_64/libplat.so.1"], flags=["-Wl,--enable-new-dtags,-rpath,/opt/$PLATFORM"])
    found = closure(tree, "/usr/bin/app")
    # the baseline AT_PLATFORM of x86-64; a host glibc may report "haswell" here, distill never does
    assert link(found, "libplat.so.1").path == "/opt/x86_64/libplat.so.1"


def test_wrong_architecture_candidate_is_skipped(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/first/libarch.so.1", soname="libarch.so.1", compiler="aarch64-linux-gnu-gcc")
    tree.lib("/opt/second/libarch.so.1", soname="libarch.so.1")
    tree.prog("/usr/bin/app", needs=["/opt/second/libarch.so.1"], flags=["-Wl,--enable-new-dtags,-rpath,/opt/first:/opt/second"])
    found = closure(tree, "/usr/bin/app")
    hit = link(found, "libarch.so.1")
    assert hit.path == "/opt/second/libarch.so.1"
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_glibc_hwcaps_variant_is_never_chosen(tree: Tree) -> None:
    tree.glibc()
    tree.lib(f"{LIBDIR}/libhw.so.1", soname="libhw.so.1")
    tree.lib(f"{LIBDIR}/glibc-hwcaps/x86-64-v2/libhw.so.1", soname="libhw.so.1")
    tree.prog("/usr/bin/app", needs=[f"{LIBDIR}/libhw.so.1"])
    found = closure(tree, "/usr/bin/app")
    assert link(found, "libhw.so.1").path == f"/lib/{TRIPLET}/libhw.so.1"
    # the real loader picks the variant on a capable CPU; folded to the baseline, both agree
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_a_name_already_loaded_is_reused_whatever_the_search_path(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/one/libdup.so.1", soname="libdup.so.1")
    tree.lib("/opt/two/libdup.so.1", soname="libdup.so.1")
    tree.lib(
        "/opt/two/libuser.so.1", soname="libuser.so.1", needs=["/opt/two/libdup.so.1"], flags=["-Wl,--enable-new-dtags,-rpath,/opt/two"]
    )
    tree.prog(
        "/usr/bin/app", needs=["/opt/one/libdup.so.1", "/opt/two/libuser.so.1"], flags=["-Wl,--enable-new-dtags,-rpath,/opt/one:/opt/two"]
    )
    found = closure(tree, "/usr/bin/app")
    second = [ln for ln in found.links if ln.name == "libdup.so.1"][1]
    assert (second.requester, second.path, second.rule) == ("/opt/two/libuser.so.1", "/opt/one/libdup.so.1", "already loaded")
    agrees_with_real_loader(tree, "/usr/bin/app", found)


def test_a_library_root_sees_the_loader_as_already_loaded(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/plugin.so")
    found = closure(tree, "/opt/plugin.so")
    assert found.objects[0] == "/opt/plugin.so"
    assert link(found, "ld-linux-x86-64.so.2").detail == "the dynamic loader"
    agrees_with_real_loader(tree, "/opt/plugin.so", found)


@pytest.mark.usefixtures("musl")
def test_musl_uses_its_path_file_and_answers_libc_names_itself(tree: Tree) -> None:
    musl_libc = MUSL_LDSO
    tree.copy(musl_libc, "/lib/ld-musl-x86_64.so.1")
    tree.write("/etc/ld-musl-x86_64.path", "/opt/m\n/usr/lib\n")
    tree.lib("/opt/m/libm1.so.1", soname="libm1.so.1", compiler="musl-gcc")
    tree.lib("/usr/lib/libm1.so.1", soname="libm1.so.1", compiler="musl-gcc")
    tree.prog("/usr/bin/app", needs=["/opt/m/libm1.so.1"], compiler="musl-gcc")
    found = closure(tree, "/usr/bin/app")
    assert found.flavor == "musl"
    hit = link(found, "libm1.so.1")
    assert (hit.path, hit.rule, hit.detail) == ("/opt/m/libm1.so.1", "musl path", "/etc/ld-musl-x86_64.path")
    libc = link(found, "libc.so")
    assert (libc.path, libc.detail) == ("/lib/ld-musl-x86_64.so.1", "musl libc itself")


@pytest.mark.usefixtures("musl")
def test_musl_reads_the_path_file_next_to_its_own_prefix(tree: Tree) -> None:
    tree.copy(MUSL_LDSO, "/opt/musl/lib/ld-musl-x86_64.so.1")
    tree.write("/opt/musl/etc/ld-musl-x86_64.path", "/opt/musl/lib:/opt/m3\n")
    tree.write("/etc/ld-musl-x86_64.path", "/wrong\n")
    tree.lib("/opt/m3/libm3.so.1", soname="libm3.so.1", compiler="musl-gcc")
    tree.prog(
        "/usr/bin/app", needs=["/opt/m3/libm3.so.1"], compiler="musl-gcc", flags=["-Wl,--dynamic-linker=/opt/musl/lib/ld-musl-x86_64.so.1"]
    )
    hit = link(closure(tree, "/usr/bin/app"), "libm3.so.1")
    assert (hit.path, hit.detail) == ("/opt/m3/libm3.so.1", "/opt/musl/etc/ld-musl-x86_64.path")


@pytest.mark.usefixtures("musl")
def test_musl_defaults_without_a_path_file(tree: Tree) -> None:
    tree.copy(MUSL_LDSO, "/lib/ld-musl-x86_64.so.1")
    tree.lib("/usr/local/lib/libm2.so.1", soname="libm2.so.1", compiler="musl-gcc")
    tree.prog("/usr/bin/app", needs=["/usr/local/lib/libm2.so.1"], compiler="musl-gcc")
    hit = link(closure(tree, "/usr/bin/app"), "libm2.so.1")
    assert (hit.path, hit.rule, hit.detail) == ("/usr/local/lib/libm2.so.1", "musl path", "musl default")


@pytest.mark.usefixtures("aarch64")
def test_foreign_architecture_uses_the_targets_layout_and_tokens(tree: Tree) -> None:
    tree.copy(ARM_SYSROOT / "libc.so.6", "/usr/lib/aarch64-linux-gnu/libc.so.6")
    tree.copy(ARM_SYSROOT / "ld-linux-aarch64.so.1", "/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1")
    tree.symlink("/lib", "usr/lib")
    tree.symlink("/usr/lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu/ld-linux-aarch64.so.1")
    tree.lib("/opt/aarch64/liba64.so.1", soname="liba64.so.1", compiler="aarch64-linux-gnu-gcc")
    tree.lib("/opt/lib/aarch64-linux-gnu/libl64.so.1", soname="libl64.so.1", compiler="aarch64-linux-gnu-gcc")
    tree.prog(
        "/usr/bin/app",
        needs=["/opt/aarch64/liba64.so.1", "/opt/lib/aarch64-linux-gnu/libl64.so.1"],
        flags=["-Wl,--enable-new-dtags,-rpath,/opt/$PLATFORM:/opt/$LIB"],
        compiler="aarch64-linux-gnu-gcc",
    )
    found = closure(tree, "/usr/bin/app")
    assert link(found, "/lib/ld-linux-aarch64.so.1").rule == "PT_INTERP"
    assert link(found, "liba64.so.1").path == "/opt/aarch64/liba64.so.1"
    assert link(found, "libl64.so.1").path == "/opt/lib/aarch64-linux-gnu/libl64.so.1"
    assert link(found, "libc.so.6").path == "/lib/aarch64-linux-gnu/libc.so.6"
    assert link(found, "ld-linux-aarch64.so.1").detail == "the dynamic loader"


def test_ld_library_path_comes_after_rpath_and_before_runpath(tree: Tree) -> None:
    tree.glibc()
    tree.lib("/opt/env/libenv.so.1", soname="libenv.so.1")
    tree.lib("/opt/runpath/libenv.so.1", soname="libenv.so.1")
    tree.prog("/usr/bin/app", needs=["/opt/env/libenv.so.1"], flags=["-Wl,--enable-new-dtags,-rpath,/opt/runpath"])
    found = Loader(DirView(tree.root), LoaderEnv(library_path=("/opt/env",))).closure("/usr/bin/app")
    hit = link(found, "libenv.so.1")
    assert (hit.path, hit.rule) == ("/opt/env/libenv.so.1", "LD_LIBRARY_PATH")
    real = subprocess.run(
        ["chroot", str(tree.root), "/lib64/ld-linux-x86-64.so.2", "--library-path", "/opt/env", "--list", "/usr/bin/app"],
        capture_output=True,
        text=True,
    )
    from helpers.tree import parse_ld_list

    assert same_answer(model_list(found), parse_ld_list(real.stdout, real.stderr))


HOST_SOURCE = r"""
#include <dlfcn.h>
#include <stdio.h>
int host_api(void) { return 42; }
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!dlopen(argv[i], RTLD_NOW | RTLD_GLOBAL)) { printf("%s\n", dlerror()); return 1; }
    }
    printf("loaded\n");
    return 0;
}
"""


def test_a_plugin_reuses_what_its_host_process_has_loaded(tree: Tree) -> None:
    """A plugin linking back to its host's libraries (a JVM's lib/*.so and libjvm.so): alone it misses
    them; in the host's process, dlopen reuses them by soname. glibc's own dlopen, run in the tree, agrees."""
    tree.glibc()
    tree.lib("/opt/host/lib/libhost.so", soname="libhost.so")
    tree.prog("/opt/host/bin/host", needs=["/opt/host/lib/libhost.so"], flags=["-Wl,-rpath,$ORIGIN/../lib", "-ldl"], source=HOST_SOURCE)
    tree.lib("/opt/host/lib/server/libcore.so", soname="libcore.so")
    tree.lib("/opt/host/lib/libplugin.so", soname="libplugin.so", needs=["/opt/host/lib/libhost.so", "/opt/host/lib/server/libcore.so"])
    loader = Loader(DirView(tree.root))
    alone = loader.closure("/opt/host/lib/libplugin.so")
    assert {ln.name for ln in alone.missing} == {"libcore.so", "libhost.so"}  # opened alone, neither is on a search path
    in_host = loader.closure("/opt/host/lib/libplugin.so", host="/opt/host/bin/host", companions=("/opt/host/lib/server/libcore.so",))
    assert not in_host.missing
    assert (link(in_host, "libcore.so").rule, link(in_host, "libcore.so").path) == ("already loaded", "/opt/host/lib/server/libcore.so")
    assert link(in_host, "libhost.so").rule == "already loaded" and in_host.objects == ("/opt/host/lib/libplugin.so",)
    without_companion = loader.closure("/opt/host/lib/libplugin.so", host="/opt/host/bin/host")
    assert {ln.name for ln in without_companion.missing} == {"libcore.so"}
    assert run_host(tree, "/opt/host/lib/server/libcore.so", "/opt/host/lib/libplugin.so") == "loaded\n"
    assert "libcore.so: cannot open shared object file" in run_host(tree, "/opt/host/lib/libplugin.so")


def run_host(tree: Tree, *plugins: str) -> str:
    """Run the tree's host program in a chroot with its own /proc ($ORIGIN of a program comes from /proc/self/exe)."""
    script = (
        f"mkdir -p {tree.root}/proc && mount -t proc proc {tree.root}/proc && "
        f"exec chroot {tree.root} /opt/host/bin/host {' '.join(plugins)}"
    )
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "--", "sh", "-c", script], capture_output=True, text=True)
    return result.stdout + result.stderr
