"""The whole job, in the order that keeps it safe: load, plan, check, then write.

    source -> view -> plan -> (fit onto the base) -> checks -> sinks

Every destination is validated before the source is read; nothing is written until the plan
has passed its checks; every sink writes from the same plan (and the same built image).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from distill.checks import CheckResult, Finding, FindingKind, check_plan
from distill.elf import ElfInfo
from distill.errors import ClosureError, UsageError
from distill.layering import LayeringReport, OverlayView, flattened, overlay, rebase_plan
from distill.loader import LoaderEnv
from distill.oci.compose import BuiltImage, build_image
from distill.oci.image import Image
from distill.oci.merged import open_image_view
from distill.plan import Plan
from distill.planner import Planner
from distill.profile import Profile
from distill.refs import Ref, parse_source
from distill.sinks import open_sink
from distill.sinks.image import write_image
from distill.sinks.staging import check_destination, check_distinct
from distill.sources import Source, SourceOptions, open_image, open_source
from distill.target import arch_of
from distill.transports import transport

__all__ = ["Request", "Prepared", "prepare", "build", "created_time"]


@dataclass
class Request:
    profile: Profile
    source: Ref
    outputs: list[Ref] = field(default_factory=list)
    base: str | None = None  # --base; None: the profile's `base`
    options: SourceOptions = field(default_factory=SourceOptions)
    force: bool = False
    allow_missing: bool = False
    replace_base_libs: bool = False
    epoch: int | None = None


@dataclass
class Prepared:
    """Everything decided before writing."""

    request: Request
    source: Source
    plan: Plan  # what the output holds (over the base, when there is one)
    full_plan: Plan  # what the app needs, before the base took its share
    checks: CheckResult
    parsed: Mapping[str, ElfInfo]  # the source's ELF files the planner parsed, by canonical path
    base: Image | None = None
    base_name: str | None = None
    layering: LayeringReport | None = None
    output: OverlayView | None = None  # the base with the layer applied
    missing: list[str] = field(default_factory=list)  # check errors --allow-missing turned into warnings
    warnings: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    built: BuiltImage | None = None


def _base_ref(request: Request) -> Ref | None:
    """The base image reference (`--base`, else the profile's `base`), validated before anything is opened."""
    text = request.base or request.profile.base
    if text in ("", "scratch"):
        return None
    ref = parse_source(text, "--base")
    if not ref.is_image:
        raise UsageError(f"--base {text}: a base must be an image (docker://, oci:, oci-archive:, docker-archive:, docker-daemon:)")
    return ref


def prepare(request: Request) -> Prepared:
    """Validate destinations and the base reference, open the source (and base), plan, fit onto the base, check."""
    check_distinct(request.outputs)
    for ref in request.outputs:
        if transport(ref.transport).local:
            check_destination(ref, source_root=request.source.path if request.source.transport == "rootfs" else None,
                              force=request.force, layout_ok=ref.transport == "oci")
    base_ref = _base_ref(request)
    source = open_source(request.source, request.options)
    planner = Planner(source.view, request.profile, _loader_env(request, source), request.epoch)
    full = planner.run()
    base = open_image(base_ref, request.options) if base_ref is not None else None
    base_name = (str(base_ref.image) if base_ref.image is not None else str(base_ref)) if base_ref is not None else None
    layering = None
    output: OverlayView | None = None
    plan = full
    if base is not None:
        base_view = open_image_view(base, request.options.cache)
        plan, layering = rebase_plan(full, source.view, base_view, replace_libs=request.replace_base_libs)
        output = overlay(plan, source.view, base_view)
    entrypoint = _entrypoint(request.profile, source.image) if any(ref.is_image for ref in request.outputs) else None
    checks = check_plan(plan, source.view, planner.loader.env, output=output, known=planner.loader.parsed(), entrypoint=entrypoint)
    prepared = Prepared(request, source, plan, full, checks, planner.loader.parsed(), base, base_name, layering, output,
                        warnings=[*full.warnings, *map(str, checks.warnings)])
    if base is not None and not request.profile.image.user:
        _note_inherited_user(prepared)
    if checks.errors:
        problems = [_with_hint(finding, base is not None) for finding in checks.errors]
        if not request.allow_missing:
            error = ClosureError(problems[0], issues=problems)
            error.prepared = prepared  # for --json
            raise error
        prepared.missing = problems  # --allow-missing: reported as warnings, and the run succeeds
        prepared.warnings.extend(problems)
        checks.warnings.extend(checks.errors)
        checks.errors.clear()
    return prepared


def _note_inherited_user(prepared: Prepared) -> None:
    """Say when the image runs as the base's non-root User because neither the profile nor the source chose one."""
    source = prepared.source.image
    if source is not None and source.runtime_config.get("User"):
        return
    assert prepared.base is not None
    user = prepared.base.runtime_config.get("User")
    if user and str(user).split(":", 1)[0] not in ("0", "root"):
        prepared.warnings.append(f"the image runs as the base's User {user} (the profile and the source set none); "
                                 "pass --run-as USER or set image.user to choose")


def _with_hint(finding: Finding, on_base: bool) -> str:
    """The finding's message, with the flag that fixes it when the base's libraries are too old."""
    if on_base and finding.kind is FindingKind.MISSING_VERSION:
        return f"{finding}; or pass --replace-base-libs to ship the source's libraries over the base's"
    return str(finding)


def _loader_env(request: Request, source: Source) -> LoaderEnv:
    """The process the output's loader runs in: the profile's workdir and LD_LIBRARY_PATH, else the source image's."""
    profile = request.profile
    value = profile.image.env.get("LD_LIBRARY_PATH")
    if value is None and source.image is not None:
        inherited = source.image.runtime_config.get("Env") or []
        value = next((e.split("=", 1)[1] for e in inherited if e.startswith("LD_LIBRARY_PATH=")), None)
    return LoaderEnv(cwd=profile.image.workdir or "/", library_path=tuple(value.split(":")) if value else (),
                     platform=request.options.platform)


def _entrypoint(profile: Profile, source: Image | None) -> str | None:
    """The image's absolute entrypoint (the profile's, else the source image's), which must ship."""
    entrypoint = profile.image.entrypoint
    if entrypoint is None and source is not None:
        inherited = source.runtime_config.get("Entrypoint") or source.runtime_config.get("Cmd")
        entrypoint = tuple(inherited) if inherited else None
    return entrypoint[0] if entrypoint and entrypoint[0].startswith("/") else None


def created_time(prepared: Prepared) -> int:
    """SOURCE_DATE_EPOCH, else the source image's `created`, else the newest shipped mtime; never the clock."""
    request = prepared.request
    if request.epoch is not None:
        return request.epoch
    stamp = prepared.source.image.config.get("created") if prepared.source.image else None
    if isinstance(stamp, str):
        try:
            return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    return max((e.mtime or 0 for e in prepared.full_plan.entries.values()), default=0)


def _architecture(prepared: Prepared) -> tuple[str, str, str | None]:
    for image in (prepared.source.image, prepared.base):
        if image is not None and image.platform.architecture:
            return image.platform.os, image.platform.architecture, image.platform.variant
    plan = prepared.full_plan
    for root in plan.roots:
        info = prepared.parsed.get(plan.aliases.get(root, root))
        arch = arch_of(info) if info else None
        if arch is not None:
            return "linux", arch.name, "v7" if arch.name == "arm" else None
    platform = prepared.request.options.platform
    return platform.os, platform.architecture, platform.variant


def build(request: Request) -> Prepared:
    """Prepare, then write every destination from the one plan."""
    prepared = prepare(request)
    view = prepared.source.view
    images = [ref for ref in request.outputs if ref.is_image]
    with tempfile.TemporaryDirectory(prefix="distill-") as work:
        if images:  # built before anything is written, so a failure here leaves every destination untouched
            prepared.built = build_image(prepared.plan, view, workdir=Path(work), profile=request.profile,
                                         source=prepared.source.image, base=prepared.base, base_name=prepared.base_name,
                                         created=created_time(prepared), architecture=_architecture(prepared),
                                         warnings=prepared.warnings)
        for ref in request.outputs:
            if ref.is_image:
                assert prepared.built is not None
                prepared.written.append(write_image(prepared.built, ref, request.options.registry))
            elif ref.transport == "rootfs" and prepared.output is not None:  # a directory to run: the base too
                prepared.written.append(open_sink(ref).write(flattened(prepared.plan, prepared.output), prepared.output))
            else:
                prepared.written.append(open_sink(ref).write(prepared.plan, view))
    return prepared
