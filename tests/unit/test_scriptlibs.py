"""Perl's and Ruby's standard libraries (distill.scriptlibs, runtime.perl and runtime.ruby) on trees of real
compiled files. The interpreters here are stand-ins compiled by the test: a C program (or library) whose
.rodata holds the search path as the real perl, libperl and libruby do (a real perl or ruby would need
their whole build); Debian's perl and ruby on Debian 12 and 13 are covered end to end by
tests/e2e/test_apps.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.errors import ProfileError
from distill.plan import Plan
from distill.planner import make_plan
from distill.profile import load_profile
from distill.transports.rootfs import DirView

from helpers.tree import Tree

TRIPLET = "x86_64-linux-gnu"


def plan_for(tree: Tree, tmp_path: Path, text: str) -> Plan:
    profile = tmp_path / "p.yaml"
    profile.write_text("schema: distill/v1\n" + text)
    return make_plan(DirView(tree.root), load_profile(str(profile)))


def strings_source(directories: tuple[str, ...], *, library: bool = False) -> str:
    """C whose .rodata holds `directories` as NUL-terminated strings, the way perl.c and ruby's version.c keep them."""
    table = ", ".join(f'"{d}"' for d in directories)
    body = "static const char *const search[] = {" + table + "};\n"
    if library:
        return body + "const char *search_path(int i) { return search[i]; }\n"
    return body + "int main(int argc, char **argv) { (void)argv; return search[argc][0]; }\n"


@pytest.fixture
def base(tree: Tree) -> Tree:
    tree.app()
    return tree


DEBIAN_INC = (
    "/etc/perl",
    "/usr/local/lib/x86_64-linux-gnu/perl/5.40.1",
    "/usr/local/share/perl/5.40.1",
    f"/usr/lib/{TRIPLET}/perl5/5.40",
    "/usr/share/perl5",
    f"/usr/lib/{TRIPLET}/perl-base",
    f"/usr/lib/{TRIPLET}/perl/5.40",
    "/usr/share/perl/5.40",
    "/usr/local/lib/site_perl",
)


def debian_perl(tree: Tree) -> None:
    """Debian's layout: perl with libperl linked in statically, @INC over perl-base, perl/5.X, share/perl/5.X."""
    tree.prog("/usr/bin/perl", source=strings_source(DEBIAN_INC))
    tree.write("/etc/perl/Net/libnet.cfg", "{}\n")
    base = f"/usr/lib/{TRIPLET}/perl-base"
    tree.write(
        f"{base}/Config_heavy.pl",
        "archlibexp='/usr/lib/x86_64-linux-gnu/perl/5.40'\nprivlibexp='/usr/share/perl/5.40'\n"
        "sitearchexp='/usr/local/lib/x86_64-linux-gnu/perl/5.40.1'\nsitelibexp='/usr/local/share/perl/5.40.1'\n"
        f"vendorarchexp='/usr/lib/{TRIPLET}/perl5/5.40'\nvendorlibexp='/usr/share/perl5'\n",
    )
    tree.write(f"{base}/POSIX.pm", "1;\n")
    tree.lib(f"{base}/auto/POSIX/POSIX.so")
    tree.write(f"/usr/lib/{TRIPLET}/perl/5.40.0/Encode.pm", "1;\n")
    tree.write(f"/usr/lib/{TRIPLET}/perl/5.40.0/CORE/perl.h", "/* XS headers */\n")
    tree.write(f"/usr/lib/{TRIPLET}/perl/5.40.0/Config.pod", "=pod\n")
    tree.symlink(f"/usr/lib/{TRIPLET}/perl/5.40", "5.40.0")
    tree.write("/usr/share/perl/5.40.0/JSON/PP.pm", "1;\n")
    tree.write("/usr/share/perl/5.40.0/pod/perlfunc.pod", "=pod\n")
    tree.symlink("/usr/share/perl/5.40", "5.40.0")
    tree.write("/usr/share/perl5/Debconf/Config.pm", "1;\n")  # vendorlib: Debian's lib*-perl packages
    tree.write(f"/usr/lib/{TRIPLET}/perl5/5.40/DBI.pm", "1;\n")  # vendorarch


def test_debian_perl_ships_its_core_library_not_vendor_or_site(base: Tree, tmp_path: Path) -> None:
    debian_perl(base)
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/perl]\n")
    assert {
        "/etc/perl/Net/libnet.cfg",
        f"/usr/lib/{TRIPLET}/perl-base/POSIX.pm",
        f"/usr/lib/{TRIPLET}/perl-base/Config_heavy.pl",
        f"/usr/lib/{TRIPLET}/perl/5.40",  # the version links, as themselves, and the trees they name
        f"/usr/lib/{TRIPLET}/perl/5.40.0/Encode.pm",
        "/usr/share/perl/5.40",
        "/usr/share/perl/5.40.0/JSON/PP.pm",
    } <= set(plan.entries)
    assert f"/usr/lib/{TRIPLET}/perl-base/auto/POSIX/POSIX.so" in plan.roots  # XS modules get their closures
    assert not [p for p in plan.entries if "/CORE/" in p or p.endswith(".pod") or "perl5" in p]
    detail = plan.entries["/usr/share/perl/5.40.0/JSON/PP.pm"].reasons[0].detail
    assert detail == (
        "runtime.perl: the standard library of /usr/bin/perl (the @INC compiled into it, without the site and vendor "
        f"directories /usr/lib/{TRIPLET}/perl-base/Config_heavy.pl names)"
    )


def test_usr_local_perl_found_through_libperl(base: Tree, tmp_path: Path) -> None:
    """Upstream's -Duseshrplib build: the strings are in libperl.so, which lives under CORE/ and ships by its DT_NEEDED."""
    arch = "/usr/local/lib/perl5/5.40.0/x86_64-linux"
    libperl = f"{arch}/CORE/libperl.so"
    site = "/usr/local/lib/perl5/site_perl/5.40.0"
    base.lib(
        libperl, "libperl.so", source=strings_source((site, f"{site}/x86_64-linux", arch, "/usr/local/lib/perl5/5.40.0"), library=True)
    )
    base.prog("/usr/local/bin/perl", needs=[libperl], flags=[f"-Wl,-rpath,{arch}/CORE"])
    base.write(f"{arch}/Config_heavy.pl", f"sitelibexp='{site}'\nsitearchexp='{site}/x86_64-linux'\nvendorlibexp=''\n")
    base.write(f"{arch}/CORE/perl.h", "")
    base.write("/usr/local/lib/perl5/5.40.0/strict.pm", "1;\n")
    base.write(f"{site}/App/Mine.pm", "1;\n")
    plan = plan_for(base, tmp_path, "binaries: [/usr/local/bin/perl]\n")
    assert {f"{arch}/Config_heavy.pl", "/usr/local/lib/perl5/5.40.0/strict.pm", libperl} <= set(plan.entries)
    assert f"{arch}/CORE/perl.h" not in plan.entries and f"{site}/App/Mine.pm" not in plan.entries


def test_a_perl_without_its_library_is_an_error(base: Tree, tmp_path: Path) -> None:
    base.prog("/usr/bin/perl", source=strings_source(DEBIAN_INC))
    base.write("/usr/share/perl/5.40/strict.pm", "1;\n")  # a directory of @INC, but no Config_heavy.pl anywhere
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "binaries: [/usr/bin/perl]\n")
    assert caught.value.issues[0].startswith(
        "runtime.perl: /usr/bin/perl (Perl) could not start: no directory compiled into it holds Config_heavy.pl"
    )
    assert "runtime.perl: no" in caught.value.issues[0]
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/perl]\nruntime: {perl: no}\n")
    assert "/usr/share/perl/5.40/strict.pm" not in plan.entries


def debian_ruby(tree: Tree) -> str:
    """Debian's layout: ruby3.3 linking libruby-3.3.so, whose strings are the $LOAD_PATH."""
    load_path = (
        "/usr/local/lib/site_ruby/3.3.0",
        "/usr/lib/ruby/vendor_ruby/3.3.0",
        "/usr/lib/ruby/vendor_ruby",
        "/usr/lib/ruby/3.3.0",
        f"/usr/lib/{TRIPLET}/ruby/3.3.0",
    )
    libruby = f"/usr/lib/{TRIPLET}/libruby-3.3.so.3.3"
    tree.lib(libruby, "libruby-3.3.so.3.3", source=strings_source(load_path, library=True))
    tree.prog("/usr/bin/ruby3.3", needs=[libruby])
    tree.symlink("/usr/bin/ruby", "ruby3.3")
    tree.write("/usr/lib/ruby/3.3.0/rubygems.rb", "# rubygems\n")
    tree.write("/usr/lib/ruby/3.3.0/json.rb", "# json\n")
    tree.write("/usr/lib/ruby/3.3.0/rdoc/rdoc.ri", "")
    tree.write(f"/usr/lib/{TRIPLET}/ruby/3.3.0/rbconfig.rb", "module RbConfig; end\n")
    tree.lib(f"/usr/lib/{TRIPLET}/ruby/3.3.0/digest.so")
    tree.write("/usr/lib/ruby/gems/3.3.0/specifications/default/json-2.7.2.gemspec", "# spec\n")
    tree.write("/usr/lib/ruby/gems/3.3.0/gems/rake-13.1.0/lib/rake.rb", "# a bundled gem\n")
    tree.write("/usr/lib/ruby/vendor_ruby/rubygems/defaults/operating_system.rb", "# Debian's\n")
    return libruby


def test_debian_ruby_ships_rubylibdir_archdir_and_default_gem_specs(base: Tree, tmp_path: Path) -> None:
    debian_ruby(base)
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/ruby]\nruntime: {ruby: yes}\n")
    assert {
        "/usr/lib/ruby/3.3.0/rubygems.rb",
        "/usr/lib/ruby/3.3.0/json.rb",
        f"/usr/lib/{TRIPLET}/ruby/3.3.0/rbconfig.rb",
        "/usr/lib/ruby/gems/3.3.0/specifications/default/json-2.7.2.gemspec",
    } <= set(plan.entries)
    assert f"/usr/lib/{TRIPLET}/ruby/3.3.0/digest.so" in plan.roots
    assert not [p for p in plan.entries if "vendor_ruby" in p or "site_ruby" in p or p.endswith(".ri") or "/gems/3.3.0/gems/" in p]
    assert plan.entries["/usr/lib/ruby/3.3.0/json.rb"].reasons[0].detail == (
        "runtime.ruby: the standard library of /usr/bin/ruby (the $LOAD_PATH compiled into it: rubylibdir /usr/lib/ruby/3.3.0 "
        "holds rubygems.rb)"
    )


def test_ruby_yes_without_a_ruby_and_ruby_no(base: Tree, tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "binaries: [/usr/bin/app]\nruntime: {ruby: yes}\n")
    assert "runtime.ruby: yes, but no shipped program is a Ruby interpreter" in caught.value.issues[0]
    debian_ruby(base)
    plan = plan_for(base, tmp_path, "binaries: [/usr/bin/ruby]\nruntime: {ruby: no}\n")
    assert not [p for p in plan.entries if p.startswith("/usr/lib/ruby/")]


def test_ruby_without_rubygems_is_an_error(base: Tree, tmp_path: Path) -> None:
    debian_ruby(base)
    (base.host("/usr/lib/ruby/3.3.0/rubygems.rb")).unlink()
    with pytest.raises(ProfileError) as caught:
        plan_for(base, tmp_path, "binaries: [/usr/bin/ruby]\n")
    assert caught.value.issues[0].startswith(
        "runtime.ruby: /usr/bin/ruby (Ruby) could not start: no directory compiled into it holds rubygems.rb"
    )


def test_perl_and_ruby_settings_are_validated(base: Tree, tmp_path: Path) -> None:
    for key in ("perl", "ruby"):
        with pytest.raises(ProfileError, match=f"runtime.{key}.*must be auto, yes or no"):
            plan_for(base, tmp_path, f"binaries: [/usr/bin/app]\nruntime: {{{key}: sometimes}}\n")


def test_usr_local_ruby_with_archdir_inside_rubylibdir(base: Tree, tmp_path: Path) -> None:
    """The official ruby image's layout (--enable-shared into /usr/local): archdir sits inside rubylibdir."""
    load_path = (
        "/usr/local/lib/ruby/site_ruby/3.3.0",
        "/usr/local/lib/ruby/site_ruby/3.3.0/x86_64-linux",
        "/usr/local/lib/ruby/vendor_ruby/3.3.0",
        "/usr/local/lib/ruby/3.3.0",
        "/usr/local/lib/ruby/3.3.0/x86_64-linux",
    )
    libruby = "/usr/local/lib/libruby.so.3.3"
    base.lib(libruby, "libruby.so.3.3", source=strings_source(load_path, library=True))
    base.prog("/usr/local/bin/ruby", needs=[libruby], flags=["-Wl,-rpath,/usr/local/lib"])
    base.write("/usr/local/lib/ruby/3.3.0/rubygems.rb", "")
    base.write("/usr/local/lib/ruby/3.3.0/x86_64-linux/rbconfig.rb", "")
    base.lib("/usr/local/lib/ruby/3.3.0/x86_64-linux/zlib.so")
    base.write("/usr/local/lib/ruby/site_ruby/3.3.0/mine.rb", "")
    base.write("/usr/local/lib/ruby/gems/3.3.0/specifications/default/zlib-3.1.0.gemspec", "")
    plan = plan_for(base, tmp_path, "binaries: [/usr/local/bin/ruby]\n")
    assert {
        "/usr/local/lib/ruby/3.3.0/rubygems.rb",
        "/usr/local/lib/ruby/3.3.0/x86_64-linux/rbconfig.rb",
        "/usr/local/lib/ruby/gems/3.3.0/specifications/default/zlib-3.1.0.gemspec",
        libruby,
    } <= set(plan.entries)
    assert "/usr/local/lib/ruby/3.3.0/x86_64-linux/zlib.so" in plan.roots
    assert not [p for p in plan.entries if "site_ruby" in p]
