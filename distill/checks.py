"""Checks that run on the plan before anything is written.

The loader model runs again on the output as planned (a `PlanView`): every root's closure
must resolve there, and every DT_VERNEED version (such as GLIBC_2.34) must be defined by the
library the name resolves to. A library without version definitions satisfies any version,
and a weak version need is only a warning, as with glibc. An image's entrypoint must be a file
of the output. Each problem is a typed `Finding`, so callers act on its fields, not its text.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from distill import paths
from distill.builder import RUNTIME_PROVIDED
from distill.elf import ElfInfo
from distill.errors import ElfError
from distill.loader import Closure, Loader, LoaderEnv
from distill.plan import EntryKind, Plan, PlanView
from distill.view import View

__all__ = ["FindingKind", "Finding", "CheckResult", "check_plan"]


class FindingKind(enum.StrEnum):
    MISSING_LIBRARY = "missing-library"  # a DT_NEEDED (or PT_INTERP) name the output does not have
    MISSING_VERSION = "missing-version"  # a symbol version the resolved library does not define
    BAD_ELF = "bad-elf"  # a shipped root that cannot be parsed
    MISSING_ENTRYPOINT = "missing-entrypoint"  # the image's entrypoint is not a file of the output
    DANGLING_LINK = "dangling-link"  # a shipped symlink whose target the output does not have


@dataclass(frozen=True)
class Finding:
    """One problem with the planned output; `str()` is the one-line message."""

    kind: FindingKind
    path: str  # the object with the problem (requester, root or entrypoint)
    message: str
    library: str | None = None  # the DT_NEEDED name involved
    version: str | None = None  # the symbol version involved

    def __str__(self) -> str:
        return self.message


@dataclass
class CheckResult:
    """Problems that fail the run (`errors`) and those that only inform (`warnings`)."""

    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    closures: list[Closure] = field(default_factory=list)


def check_plan(
    plan: Plan,
    source: View,
    env: LoaderEnv | None = None,
    *,
    output: View | None = None,
    known: Mapping[str, ElfInfo] | None = None,
    entrypoint: str | None = None,
) -> CheckResult:
    """Run the closure and symbol-version checks on the planned output (`output`: the plan over a base).

    `known`: ELF files of the source already parsed (by canonical path); `entrypoint`: the image's
    absolute entrypoint, which must be a file of the output.
    """
    result = CheckResult()
    output = output or PlanView(plan, source)
    # a file shipped unchanged at its source path need not be parsed again
    reused = {
        path: info
        for path, info in (known or {}).items()
        if (entry := plan.entries.get(path)) is not None and entry.source == path and entry.data is None
    }
    loader = Loader(output, env, parsed=reused)
    reported: set[tuple[str, str]] = set()
    versions_checked: set[tuple[str, str, str]] = set()
    shipped = {path.rsplit("/", 1)[-1]: path for path in sorted(plan.entries, reverse=True)}
    for root in plan.roots:
        host, companions = plan.hosts.get(root, (None, ()))
        try:
            closure = loader.closure(root, host=host, companions=companions)
        except ElfError as exc:
            result.errors.append(Finding(FindingKind.BAD_ELF, root, exc.message))
            continue
        result.closures.append(closure)
        for link in closure.missing:
            if (link.name, link.requester) in reported:
                continue  # the same library missing for the same object, reached from another root
            reported.add((link.name, link.requester))
            searched = f"; searched {', '.join(link.searched[:6])}{' ...' if len(link.searched) > 6 else ''}" if link.searched else ""
            skipped = f"; {link.notes[0]}" if link.notes else ""
            if "/" not in link.name and link.name in shipped and not link.notes:
                skipped += (
                    f"; {shipped[link.name]} ships, off its search path: if one program loads both, list "
                    f"{link.requester} under runtime.plugins with that program as the host"
                )
            result.errors.append(
                Finding(
                    FindingKind.MISSING_LIBRARY,
                    link.requester,
                    f"{link.name} (needed by {link.requester}) is not in the output{searched}{skipped}",
                    library=link.name,
                )
            )
        _check_versions(loader, closure, result, versions_checked)
    if entrypoint:
        node = output.stat(entrypoint)
        if node is None or not node.is_file:
            result.errors.append(
                Finding(
                    FindingKind.MISSING_ENTRYPOINT,
                    entrypoint,
                    f"image entrypoint {entrypoint} is not in the output; add it to binaries or set image.entrypoint",
                )
            )
    _check_links(plan, output, result)
    return _dedupe(result)


def _check_links(plan: Plan, output: View, result: CheckResult) -> None:
    """Every shipped symlink resolves in the output, unless it dangled in the source or the profile allows it."""
    for entry in plan.ordered():
        if entry.kind is not EntryKind.SYMLINK or entry.path in plan.broken_in_source:
            continue
        if any(paths.glob_match(pattern, entry.path) for pattern in plan.dangling):
            continue
        found = output.resolve(entry.path)
        if found.node is None and not (found.path + "/").startswith(RUNTIME_PROVIDED):
            excluded = " (excluded by the profile)" if found.path in plan.excluded else ""
            result.errors.append(
                Finding(
                    FindingKind.DANGLING_LINK,
                    entry.path,
                    f"{entry.path}: symlink to {entry.target}, but {found.path} is not in the output{excluded}; "
                    "ship it, or list the link under `dangling` if it may point at nothing",
                )
            )


def _check_versions(loader: Loader, closure: Closure, result: CheckResult, checked: set[tuple[str, str, str]]) -> None:
    """`checked`: (requester, library, provider) triples done for an earlier root, whose findings would repeat."""
    for requester in closure.objects:
        info = loader.elf(loader.view.resolve(requester).path)
        resolved = closure.resolved(requester)
        for need in info.verneed:
            provider = resolved.get(need.file)
            if provider is None:
                continue  # the library itself is missing, already reported
            if (requester, need.file, provider) in checked:
                continue
            checked.add((requester, need.file, provider))
            defined = loader.elf(loader.view.resolve(provider).path).verdef
            if not defined:
                continue
            for version, weak in need.versions:
                if version in defined:
                    continue
                message = (
                    f"{requester} needs version {version} of {need.file}, but {provider} defines "
                    f"{_newest(defined, version)}; ship a {need.file} at least as new as the one it was built against"
                )
                finding = Finding(FindingKind.MISSING_VERSION, requester, message, library=need.file, version=version)
                (result.warnings if weak else result.errors).append(finding)


def _newest(defined: frozenset[str], wanted: str) -> str:
    """What a library offers in the series of `wanted`: "up to GLIBC_2.36", or its version names."""
    prefix = wanted.rpartition("_")[0]

    def number(name: str) -> tuple[int, ...]:
        return tuple(int(p) for p in name.rpartition("_")[2].split(".") if p.isdigit())

    series = [name for name in defined if prefix and name.startswith(prefix + "_") and number(name)]
    if series:
        return f"versions up to {max(series, key=number)}"
    return ", ".join(sorted(defined)[:4]) + (" ..." if len(defined) > 4 else "")


def _dedupe(result: CheckResult) -> CheckResult:
    result.errors = list(dict.fromkeys(result.errors))
    result.warnings = list(dict.fromkeys(result.warnings))
    return result
