"""The whole job, in the order that keeps it safe: load, plan, check, then write.

    source -> view -> plan -> (fit onto the base) -> checks -> sinks

Every destination is validated before the source is read; nothing is written until the plan
has passed its checks; every sink writes from the same plan (and the same built image).

Several platforms (`--platform all` or a list) are a thin loop over the same single-platform
`prepare`: one plan and one set of checks per platform, every platform checked before anything
is written, then one image per platform under one image index (`build_platforms`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from distill.checks import CheckResult, Finding, FindingKind, check_plan
from distill.elf import ElfInfo
from distill.errors import ClosureError, DistillError, ProfileError, SourceError, UsageError
from distill.ldconf import glibc_config
from distill.loader import LoaderEnv
from distill.plan import Plan
from distill.planner import Planner
from distill.profile import Profile, expand_tokens, profile_paths
from distill.refs import Ref, parse_source
from distill.schema import TOKEN
from distill.staging import check_destination, check_distinct
from distill.target import ARCHES, Arch, Platform, arch_named, arch_of, foreign_arch
from distill.transports import Source, SourceOptions, open_image, open_source, transport, write_image, write_plan

if TYPE_CHECKING:
    from distill.layering import LayeringReport, OverlayView
    from distill.oci.compose import BuiltImage, BuiltIndex
    from distill.oci.image import Image

# The image machinery (layering, composing, writing images) is imported where it is used, so a
# directory-to-directory run does not load it.

__all__ = ["Request", "Prepared", "Outcome", "prepare", "build", "write", "build_platforms", "platforms_of", "created_time"]


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
    platforms: tuple[Platform, ...] | str | None = None  # "all", a list, or None: options.platform alone


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
            check_destination(
                ref,
                source_root=request.source.path if request.source.transport == "rootfs" else None,
                force=request.force,
                layout_ok=ref.transport == "oci",
            )
    base_ref = _base_ref(request)
    source = open_source(request.source, request.options)
    request = replace(request, profile=_for_target(request.profile, source))
    planner = Planner(source.view, request.profile, _loader_env(request, source), request.epoch)
    full = planner.run()
    base = open_image(base_ref, request.options) if base_ref is not None else None
    base_name = (str(base_ref.image) if base_ref.image is not None else str(base_ref)) if base_ref is not None else None
    read_notes: list[str] = list(getattr(source.view, "warnings", []))  # what reading the layers repaired
    layering = None
    output: OverlayView | None = None
    plan = full
    if base is not None:
        from distill.layering import overlay, rebase_plan
        from distill.oci.merged import open_image_view

        base_view = open_image_view(base, request.options.cache)
        read_notes.extend(base_view.warnings)
        plan, layering = rebase_plan(full, source.view, base_view, replace_libs=request.replace_base_libs)
        output = overlay(plan, source.view, base_view)
    entrypoint = _entrypoint(request.profile, source.image) if any(ref.is_image for ref in request.outputs) else None
    checks = check_plan(plan, source.view, planner.loader.env, output=output, known=planner.loader.parsed(), entrypoint=entrypoint)
    prepared = Prepared(
        request,
        source,
        plan,
        full,
        checks,
        planner.loader.parsed(),
        base,
        base_name,
        layering,
        output,
        warnings=[*read_notes, *full.warnings, *map(str, checks.warnings)],
    )
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
        prepared.warnings.append(
            f"the image runs as the base's User {user} (the profile and the source set none); "
            "pass --run-as USER or set image.user to choose"
        )


def _with_hint(finding: Finding, on_base: bool) -> str:
    """The finding's message, with the flag that fixes it when the base's libraries are too old."""
    if on_base and finding.kind is FindingKind.MISSING_VERSION:
        return f"{finding}; or pass --replace-base-libs to ship the source's libraries over the base's"
    return str(finding)


def _target(source: Source) -> Arch | None:
    """The architecture of the source: its image's platform, else the one loader its root holds."""
    image = source.image
    if image is not None and image.platform.architecture:
        return arch_named(image.platform.architecture, image.platform.variant)
    found = [
        arch
        for arch in ARCHES.values()
        if source.view.stat(arch.glibc_interp) is not None or source.view.stat(f"/lib/ld-musl-{arch.musl_arch}.so.1") is not None
    ]
    return found[0] if len(found) == 1 else None


def _for_target(profile: Profile, source: Source) -> Profile:
    """The profile for this source's architecture: tokens expanded, other architectures' paths refused."""
    named = profile_paths(profile)
    tokens = sorted({m.group(0) for path, _ in named for m in TOKEN.finditer(path)})
    arch = _target(source)
    if arch is None:
        if tokens:
            raise ProfileError(
                f"{profile.name}: cannot tell the architecture of {source.view.name} to expand {tokens[0]} "
                "(no single known loader in it); write the multiarch directory out"
            )
        return profile
    lib = glibc_config(source.view, arch).lib if source.view.stat(arch.glibc_interp) is not None else "lib"
    profile = expand_tokens(profile, {"MULTIARCH": arch.triplet, "LIB": lib}) if tokens else profile
    issues = []
    for path, origin in profile_paths(profile):
        other = foreign_arch(path, arch)
        if other is not None and not source.view.glob(path):
            fix = f"write $MULTIARCH for {other.triplet}" if other.triplet in path.split("/") else "name the loader by its own path"
            issues.append(f"{origin}: {path} is a path of {other.name} images, but {source.view.name} is {arch.name}; {fix}")
    if issues:
        raise ProfileError(issues[0], issues=issues)
    return profile


def _loader_env(request: Request, source: Source) -> LoaderEnv:
    """The process the output's loader runs in: the profile's workdir and LD_LIBRARY_PATH, else the source image's."""
    profile = request.profile
    value = profile.image.env.get("LD_LIBRARY_PATH")
    if value is None and source.image is not None:
        inherited = source.image.runtime_config.get("Env") or []
        value = next((e.split("=", 1)[1] for e in inherited if e.startswith("LD_LIBRARY_PATH=")), None)
    return LoaderEnv(
        cwd=profile.image.workdir or "/", library_path=tuple(value.split(":")) if value else (), platform=request.options.platform
    )


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
    from distill.oci import documents
    from distill.oci.compose import rfc3339

    created = documents.created_seconds(prepared.source.image.config) if prepared.source.image else None
    if created is not None:
        seconds, clamped = created
        warning = f"source image: config `created` is outside 1970..9999; the output says {rfc3339(seconds)}"
        if clamped and warning not in prepared.warnings:
            prepared.warnings.append(warning)
        return seconds
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


def _build_image(prepared: Prepared, workdir: Path) -> BuiltImage:
    from distill.oci.compose import build_image

    return build_image(
        prepared.plan,
        prepared.source.view,
        workdir=workdir,
        profile=prepared.request.profile,
        source=prepared.source.image,
        base=prepared.base,
        base_name=prepared.base_name,
        created=created_time(prepared),
        architecture=_architecture(prepared),
        warnings=prepared.warnings,
        cache=prepared.request.options.cache if prepared.source.image is not None else None,  # a directory run leaves no trace there
    )


def build(request: Request) -> Prepared:
    """Prepare, then write every destination from the one plan."""
    prepared = prepare(request)
    write(prepared)
    return prepared


def write(prepared: Prepared) -> None:
    """Build the output image (when a destination takes one), then write every destination from the one plan."""
    if not any(ref.is_image for ref in prepared.request.outputs):
        _write(prepared)
        return
    with tempfile.TemporaryDirectory(prefix="distill-") as work:  # the built image's layer, until it is written
        prepared.built = _build_image(prepared, Path(work))  # before anything is written: a failure here leaves every destination untouched
        _write(prepared)


def _write(prepared: Prepared) -> None:
    """Every destination, in the order given, from the one plan (and the one built image)."""
    request = prepared.request
    for ref in request.outputs:
        if ref.is_image:
            assert prepared.built is not None
            prepared.written.append(write_image(prepared.built, ref, request.options.registry))
        elif ref.transport == "rootfs" and prepared.output is not None:  # a directory to run: the base too
            from distill.layering import flattened

            prepared.written.append(write_plan(flattened(prepared.plan, prepared.output), prepared.output, ref))
        elif ref.transport == "layer" and prepared.built is not None:  # compressed once per run: the image's layer
            from distill.transports.layer import write_built_layer

            prepared.written.append(write_built_layer(prepared.built.layers[-1].open, prepared.plan, prepared.source.view, ref))
        else:
            prepared.written.append(write_plan(prepared.plan, prepared.source.view, ref))


# -- several platforms ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """A multi-platform run: one Prepared per platform (in index order) and the index over them."""

    request: Request
    prepared: list[Prepared]
    index: BuiltIndex | None = None
    written: list[str] = field(default_factory=list)


def platforms_of(request: Request) -> tuple[Platform, ...]:
    """The platforms a multi-platform request names: its list, or every platform the source offers."""
    for ref in request.outputs:
        if not transport(ref.transport).platforms:
            raise UsageError(
                f"--out {ref}: {ref.transport}: holds one platform; pick one with --platform os/arch, "
                "or write every platform to oci:, oci-archive: or docker://"
            )
    if not request.source.is_image:
        raise UsageError(f"--from {request.source}: a directory holds one platform; --platform all and lists need an image")
    if request.platforms != "all":
        assert isinstance(request.platforms, tuple)
        return request.platforms
    options = replace(request.options, platform=Platform.any())  # the first image, to learn what the index offers
    first = open_image(request.source, options)
    offered = first.offered or (first.platform,)
    if any(not p.architecture for p in offered):
        raise SourceError(f"{request.source}: an entry of its index names no platform; pick platforms with --platform os/arch,...")
    linux = tuple(p for p in offered if p.os == "linux")  # distill reads Linux ELF programs only
    if not linux:
        raise SourceError(f"{request.source}: no Linux platform in {', '.join(map(str, offered))}")
    return linux


def build_platforms(request: Request) -> Outcome:
    """Prepare every platform (each checked), then build one image each and write one index everywhere."""
    platforms = platforms_of(request)
    outcome = Outcome(request, [])
    failed: list[str] = []
    for platform in platforms:
        single = replace(request, options=replace(request.options, platform=platform), platforms=None)
        try:
            outcome.prepared.append(prepare(single))
        except ClosureError as exc:  # check every platform, then fail naming each that failed
            failed.extend(f"{platform}: {issue}" for issue in exc.issues)
        except DistillError as exc:
            raise type(exc)(f"{platform}: {exc.message}", issues=[f"{platform}: {issue}" for issue in exc.issues]) from None
    if failed:
        raise ClosureError(failed[0], issues=failed)
    from distill.oci.compose import build_index

    with tempfile.TemporaryDirectory(prefix="distill-") as work:
        built = []
        for number, prepared in enumerate(outcome.prepared):
            workdir = Path(work) / str(number)
            workdir.mkdir()
            prepared.built = _build_image(prepared, workdir)
            built.append(prepared.built)
        outcome.index = build_index(built)
        for ref in request.outputs:
            outcome.written.append(write_image(outcome.index, ref, request.options.registry))
    return outcome
