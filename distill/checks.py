"""Checks that run on the plan before anything is written.

The loader model runs again on the output as planned (a `PlanView`): every root's closure
must resolve there, and every DT_VERNEED version (such as GLIBC_2.34) must be defined by the
library the name resolves to. A library without version definitions satisfies any version,
and a weak version need is only a warning, as with glibc.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.errors import ElfError
from distill.loader import Closure, Loader
from distill.plan import Plan, PlanView
from distill.view import View

__all__ = ["CheckResult", "check_plan"]


@dataclass
class CheckResult:
    """Problems that fail the run (`errors`) and those that only inform (`warnings`)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    closures: list[Closure] = field(default_factory=list)


def check_plan(plan: Plan, source: View, *, cwd: str = "/", output: View | None = None) -> CheckResult:
    """Run the closure and symbol-version checks on the planned output (`output`: the plan over a base)."""
    result = CheckResult()
    output = output or PlanView(plan, source)
    # a file shipped unchanged at its source path need not be parsed again
    reused = {path: info for path, info in plan.parsed.items()
              if (entry := plan.entries.get(path)) is not None and entry.source == path and entry.data is None}
    loader = Loader(output, cwd=cwd, parsed=reused, library_path=plan.library_path)
    for root in plan.roots:
        try:
            closure = loader.closure(root)
        except ElfError as exc:
            result.errors.append(exc.message)
            continue
        result.closures.append(closure)
        for link in closure.missing:
            searched = f"; searched {', '.join(link.searched[:6])}{' ...' if len(link.searched) > 6 else ''}" if link.searched else ""
            skipped = f"; {link.notes[0]}" if link.notes else ""
            result.errors.append(f"{link.name} (needed by {link.requester}) is not in the output{searched}{skipped}")
        _check_versions(loader, closure, result)
    return _dedupe(result)


def _check_versions(loader: Loader, closure: Closure, result: CheckResult) -> None:
    for requester in closure.objects:
        info = loader.elf(loader.view.resolve(requester).path)
        resolved = closure.resolved(requester)
        for need in info.verneed:
            provider = resolved.get(need.file)
            if provider is None:
                continue  # the library itself is missing, already reported
            defined = loader.elf(loader.view.resolve(provider).path).verdef
            if not defined:
                continue
            for version, weak in need.versions:
                if version in defined:
                    continue
                message = (f"{requester} needs version {version} of {need.file}, but {provider} defines "
                           f"{_newest(defined, version)}; ship a {need.file} at least as new as the one it was built against")
                (result.warnings if weak else result.errors).append(message)


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
