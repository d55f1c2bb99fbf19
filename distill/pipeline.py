"""The whole job, in the order that keeps it safe: load, plan, check, then write.

    source -> view -> plan -> (fit onto the base) -> checks -> sinks

Every destination is validated before the source is read; nothing is written until the plan
has passed its checks; every sink writes from the same plan (and the same built image).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from distill.checks import CheckResult, check_plan
from distill.errors import ClosureError, UsageError
from distill.layering import LayeringReport, overlay, rebase_plan
from distill.oci.compose import BuiltImage, build_image
from distill.oci.image import Image
from distill.oci.merged import open_image_view
from distill.plan import Plan, PlanView
from distill.planner import make_plan
from distill.profile import Profile
from distill.refs import Ref, parse_source
from distill.sinks import check_destination, open_sink
from distill.sinks.image import write_image
from distill.sources import Source, SourceOptions, open_image, open_source
from distill.target import arch_of
from distill.view import View

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
    base: Image | None = None
    base_name: str | None = None
    layering: LayeringReport | None = None
    warnings: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    built: BuiltImage | None = None


def _base(request: Request) -> tuple[Image | None, str | None]:
    text = request.base or request.profile.base
    if text in ("", "scratch"):
        return None, None
    ref = parse_source(text, "--base")
    if not ref.is_image:
        raise UsageError(f"--base {text}: a base must be an image (docker://, oci:, oci-archive:, docker-archive:, docker-daemon:)")
    image = open_image(ref, request.options)
    return image, (str(ref.image) if ref.image is not None else str(ref))


def prepare(request: Request) -> Prepared:
    """Validate destinations, open the source (and base), plan, fit onto the base, check."""
    for ref in request.outputs:
        if ref.transport in ("rootfs", "layer", "oci", "oci-archive", "docker-archive"):
            check_destination(ref, source_root=request.source.path if request.source.transport == "rootfs" else None,
                              force=request.force, layout_ok=ref.transport == "oci")
    source = open_source(request.source, request.options)
    full = make_plan(source.view, request.profile, epoch=request.epoch, library_path=_library_path(request.profile, source))
    base, base_name = _base(request)
    layering = None
    output: View | None = None
    plan = full
    if base is not None:
        base_view = open_image_view(base, request.options.cache)
        plan, layering = rebase_plan(full, source.view, base_view, replace_libs=request.replace_base_libs)
        output = overlay(plan, source.view, base_view)
    checks = check_plan(plan, source.view, cwd=request.profile.image.workdir or "/", output=output)
    if any(ref.is_image for ref in request.outputs):
        _check_entrypoint(request.profile, output or PlanView(plan, source.view), source.image, checks)
    prepared = Prepared(request, source, plan, full, checks, base, base_name, layering, [*full.warnings, *checks.warnings])
    if checks.errors:
        if not request.allow_missing:
            hint = "; or pass --replace-base-libs to ship the source's libraries over the base's" if base else ""
            issues = [e + hint if " needs version " in e else e for e in checks.errors]  # the base's libraries are too old
            raise ClosureError(issues[0], issues=issues)
        prepared.warnings.extend(checks.errors)
    return prepared


def _library_path(profile: Profile, source: Source) -> tuple[str, ...]:
    """LD_LIBRARY_PATH as the container will see it: the profile's, else the source image's."""
    value = profile.image.env.get("LD_LIBRARY_PATH")
    if value is None and source.image is not None:
        inherited = source.image.runtime_config.get("Env") or []
        value = next((e.split("=", 1)[1] for e in inherited if e.startswith("LD_LIBRARY_PATH=")), None)
    return tuple(value.split(":")) if value else ()


def _check_entrypoint(profile: Profile, output: View, source: Image | None, checks: CheckResult) -> None:
    entrypoint = profile.image.entrypoint
    if entrypoint is None and source is not None:
        inherited = source.runtime_config.get("Entrypoint") or source.runtime_config.get("Cmd")
        entrypoint = tuple(inherited) if inherited else None
    if entrypoint and entrypoint[0].startswith("/"):
        node = output.stat(entrypoint[0])
        if node is None or not node.is_file:
            checks.errors.append(f"image entrypoint {entrypoint[0]} is not in the output; add it to binaries or set image.entrypoint")


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
        info = plan.parsed.get(plan.aliases.get(root, root))
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
            else:
                prepared.written.append(open_sink(ref).write(prepared.plan, view))
    return prepared
