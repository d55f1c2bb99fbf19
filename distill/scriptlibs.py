"""Where Perl and Ruby find their standard libraries, read from the strings compiled into them.

Neither interpreter's library directories appear in an ELF header, and Debian splits them over packages
named after the release (perl-modules-5.36, libruby3.1). Both interpreters compile their default search
path into the program or its shared library as plain strings, so they are read from there, never by
running the interpreter:

- Perl's @INC defaults (PRIVLIB_EXP, ARCHLIB_EXP, the site and vendor ones, Debian's extra perl-base
  and /etc/perl) are strings in `perl` (Debian links libperl statically into it) or in libperl.so.
  Of those that exist as directories, the site and vendor ones are left out: Config_heavy.pl, which
  perl keeps beside its core modules, records them as `sitelibexp='...'` and so on. They hold
  modules installed for an app (CPAN, Debian's lib*-perl packages), the app's own business;
- Ruby's $LOAD_PATH defaults (rubylibdir, archdir, site_ruby, vendor_ruby) are strings in `ruby` or
  libruby.so. Of those that exist, site_ruby and vendor_ruby (Ruby's fixed names for them) are left
  out; rubylibdir is the one holding rubygems.rb, which every Ruby loads at start-up, and the default
  gems' specifications beside it (rubylibprefix/gems/VERSION/specifications/default) ship too, so
  rubygems activates them as in the source.

Both rules are the same for Debian's /usr and a /usr/local build: the strings say where.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from distill import paths
from distill.elf import ElfInfo
from distill.view import View

__all__ = ["PERL_SKIPPED", "RUBY_SKIPPED", "Library", "is_perl", "is_ruby", "perl_library", "ruby_library", "skipped"]

_PERL = re.compile(r"perl(5(\.\d+)*)?\Z")
_LIBPERL = re.compile(r"libperl\.so(\.[0-9.]+)?\Z")
_RUBY = re.compile(r"ruby(\d+(\.\d+)*)?\Z")
_LIBRUBY = re.compile(r"libruby(-\d+(\.\d+)*)?\.so(\.[0-9.]+)?\Z")
_PERL_CONFIG = re.compile(r"^(?:site|vendor)(?:arch|lib)exp='(/[^'\n]*)'$", re.M)
# What a running program does not load: headers and libperl.a for building XS modules, documentation
PERL_SKIPPED = ("CORE/**", "**/*.pod", "pod/**", "**/.packlist")
# C headers for building extensions, and the gems' documentation
RUBY_SKIPPED = ("include/**", "**/*.ri", "doc/**")


@dataclass(frozen=True)
class Library:
    """The directories one interpreter loads its standard library from, each shipped whole."""

    language: str  # "Perl" or "Ruby"
    directories: tuple[str, ...]
    how: str  # one line saying how they were found
    skip: tuple[str, ...]  # patterns, relative to a directory, of what a running program does not load
    apart: tuple[str, ...] = ()  # site and vendor directories, left out even when inside one of `directories`


def _name(canonical: str) -> str:
    return paths.split(canonical)[-1] if canonical != "/" else ""


def is_perl(canonical: str, info: ElfInfo) -> bool:
    """Whether a program is Perl: named perl or perl5.36, or linking libperl."""
    return bool(_PERL.match(_name(canonical))) or any(_LIBPERL.match(n) for n in info.needed)


def is_ruby(canonical: str, info: ElfInfo) -> bool:
    """Whether a program is Ruby: named ruby or ruby3.1, or linking libruby."""
    return bool(_RUBY.match(_name(canonical))) or any(_LIBRUBY.match(n) for n in info.needed)


def _directories(view: View, strings: list[str], word: str) -> list[str]:
    """The strings naming an existing directory with `word` in its path, in order, once each."""
    found: list[str] = []
    for string in strings:
        node = view.stat(string) if word in string else None
        if node is not None and node.is_dir and string not in found:
            found.append(paths.clean(string))
    return found


def _is_file(view: View, path: str) -> bool:
    node = view.stat(path)
    return node is not None and node.is_file


def perl_library(view: View, strings: list[str]) -> Library | str:
    """Perl's core library directories among `strings` (perl's or libperl's), or a sentence saying why none."""
    candidates = _directories(view, strings, "perl")
    config = next((paths.join(d, "Config_heavy.pl") for d in candidates if _is_file(view, paths.join(d, "Config_heavy.pl"))), None)
    if config is None:
        return "no directory compiled into it holds Config_heavy.pl (perl's core library)"
    text = view.read_bytes(config, 1 << 22).decode("utf-8", "replace")
    added = {paths.clean(d) for d in _PERL_CONFIG.findall(text)}
    resolved_added = {view.resolve(d).path for d in added if view.stat(d) is not None}
    apart = tuple(d for d in candidates if d in added or view.resolve(d).path in resolved_added or "site_perl" in paths.split(d))
    core = tuple(d for d in candidates if d not in apart)
    how = f"the @INC compiled into it, without the site and vendor directories {config} names"
    return Library("Perl", core, how, PERL_SKIPPED, apart)


def ruby_library(view: View, strings: list[str]) -> Library | str:
    """Ruby's library directories among `strings` (ruby's or libruby's), or a sentence saying why none."""
    found = _directories(view, strings, "ruby")
    apart = tuple(d for d in found if {"site_ruby", "vendor_ruby"} & set(paths.split(d)))
    candidates = [d for d in found if d not in apart]
    rubylibdir = next((d for d in candidates if _is_file(view, paths.join(d, "rubygems.rb"))), None)
    if rubylibdir is None:
        return "no directory compiled into it holds rubygems.rb (Ruby's rubylibdir)"
    library = [d for d in candidates if _is_file(view, paths.join(d, "rbconfig.rb")) or d == rubylibdir]
    version = paths.split(rubylibdir)[-1]
    specifications = paths.join(paths.parent(rubylibdir), f"gems/{version}/specifications/default")
    node = view.stat(specifications)
    if node is not None and node.is_dir:
        library.append(specifications)
    how = f"the $LOAD_PATH compiled into it: rubylibdir {rubylibdir} holds rubygems.rb"
    return Library("Ruby", tuple(library), how, RUBY_SKIPPED, apart)


def skipped(library: Library, path: str) -> bool:
    """Whether a path under the library's directories is one a running program does not load, or a site or
    vendor directory's (upstream Perl keeps its arch directory, CORE/ included, inside privlib)."""
    if any(path == base or path.startswith(base + "/") for base in library.apart):
        return True
    for base in library.directories:
        if path.startswith(base + "/"):
            relative = "/" + path[len(base) + 1 :]
            if any(paths.glob_match("/" + pattern, relative) for pattern in library.skip):
                return True
    return False
