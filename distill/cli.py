"""The command line: flags -> profile, source, plan, checks, sinks -> exit code. No logic of its own.

distill [APP] --from SRC --out DEST [--out DEST ...]   distill an app
distill explain [APP] --from SRC [PATH ...]           why each path would ship
distill profiles                                      list the built-in profiles
distill learn APP --from SRC [-- COMMAND ...]         draft or check a profile from a traced run
distill verify TARGET [--run PROBE]                   check (and smoke-run) an existing image or rootfs
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from distill import __version__
from distill.errors import EXIT_INTERNAL, ClosureError, DestinationError, DistillError, ProfileError, UsageError
from distill.registry_flags import REGISTRY_FLAGS, registry_options
from distill.workflow_cli import learn_command, verify_command

if TYPE_CHECKING:
    from pathlib import Path

    from distill import pipeline
    from distill.profile import Profile
    from distill.refs import Ref

# The commands import what they use when they run (json, pathlib and dataclasses included): `--help` loads
# click and this module only, a rootfs run never loads the registry client or the image machinery, and only
# a run loads the planner and PyYAML. `--version` is answered in `distill.__main__`.

__all__ = ["main", "cli"]


class _DefaultGroup(click.Group):
    """`distill nginx ...` means `distill build nginx ...`; a mistyped command gets a suggestion."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args:  # bare `distill`: the help, as skopeo and podman print it
            click.echo(ctx.get_help())
            ctx.exit(0)
        args, debug = _without_debug(args)
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            _suggest_command(args[0], [name for name, command in self.commands.items() if not command.hidden])
            args = ["build", *args]
        return super().parse_args(ctx, ["--debug", *args] if debug else args)


def _without_debug(args: list[str]) -> tuple[list[str], bool]:
    """`--debug` may stand anywhere before a `--`: (the other arguments, whether it was given)."""
    end = args.index("--") if "--" in args else len(args)
    kept = [arg for arg in args[:end] if arg != "--debug"]
    return [*kept, *args[end:]], len(kept) != end


def _suggest_command(word: str, commands: list[str]) -> None:
    """`distill explian nginx`: a word close to a command, and not a profile or a path, is a typo.

    Every `distill APP` run passes here, so the cheap test comes first: only a word close to a command
    name loads the profile module to ask whether it is a built-in profile's name."""
    if word.startswith("-") or "/" in word or word.endswith((".yaml", ".yml")):
        return
    import difflib

    close = difflib.get_close_matches(word, commands, n=1, cutoff=0.7)
    if not close:
        return
    from distill.profile import builtin_dir

    if (builtin_dir() / f"{word}.yaml").is_file():  # a built-in profile's name, found without parsing any profile
        return
    raise click.UsageError(f"no command or built-in profile {word!r}; did you mean `distill {close[0]}`?")


def _source_options(command: Any) -> Any:
    options = [
        click.argument("app", required=False),
        click.option(
            "--from",
            "source",
            required=True,
            metavar="SRC",
            help="the fat image or directory: docker://REF or a bare REF, oci:DIR[:REF], oci-archive:FILE[:REF], "
            "docker-archive:FILE[:REF], docker-daemon:REF, rootfs:DIR, or a path starting with /, ./ or ../",
        ),
        click.option("--binary", multiple=True, metavar="PATH", help="another root binary (glob allowed)"),
        click.option("--path", "extra_paths", multiple=True, metavar="PATH", help="another path to copy from the source (glob allowed)"),
        click.option("--user", multiple=True, metavar="NAME", help="an account from the source's /etc/passwd"),
        click.option("--group", multiple=True, metavar="NAME", help="a group from the source's /etc/group"),
        click.option("--tz", metavar="ZONE", help="time zone for /etc/localtime, or none"),
        click.option("--entrypoint", metavar="ARGS", help="image entrypoint: a JSON list or words split like a shell"),
        click.option("--cmd", metavar="ARGS", help="image command: a JSON list or words split like a shell"),
        click.option("--expose", multiple=True, metavar="PORT", help="port to expose, e.g. 80/tcp"),
        click.option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="image environment variable"),
        click.option("--run-as", metavar="USER", help="image user (name, uid, user:group)"),
        click.option("--base", metavar="IMAGE", help="image to layer the output on (default: the profile's, else scratch)"),
        click.option(
            "--platform",
            metavar="OS/ARCH[/VARIANT]",
            help="platform to pick from a multi-platform image; a comma-separated list or `all` distills each and writes one image index",
        ),
        *REGISTRY_FLAGS,
        click.option("-v", "--verbose", is_flag=True, help="list symlinks and parent directories in the explain tree"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distill")
@click.option("--debug", is_flag=True, help="show a traceback for internal errors")
def cli(debug: bool) -> None:
    """Distill a fat root filesystem into a minimal one for one app."""


class _AppCommand(click.Command):
    """`distill [APP] ...`: the usage line shows the documented form, not the hidden `build` name."""

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("distill", "[APP] --from SRC [--out DEST ...] [OPTIONS]")


@cli.command("build", cls=_AppCommand, hidden=True)
@_source_options
@click.option(
    "-o",
    "--out",
    "outs",
    multiple=True,
    metavar="DEST",
    help="rootfs:DIR, layer:FILE.tar[.gz], oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], "
    "docker://REF or docker-daemon:REF; repeatable",
)
@click.option("--force", is_flag=True, help="replace a destination (or --sbom file) that exists")
@click.option("--allow-missing", is_flag=True, help="report missing libraries and versions as warnings")
@click.option("--replace-base-libs", is_flag=True, help="ship the source's libraries even where the base has its own")
@click.option("--json", "as_json", is_flag=True, help="write a JSON report to stdout")
@click.option("--sbom", "sbom", metavar="FILE", type=click.Path(dir_okay=False), help="write a CycloneDX 1.6 SBOM here")
@click.option("--explain", "explain", is_flag=True, help="print why each path ships (to stderr)")
@click.option("-q", "--quiet", is_flag=True, help="no progress, summary or table (warnings and errors still show)")
def build_command(
    outs: tuple[str, ...],
    force: bool,
    allow_missing: bool,
    replace_base_libs: bool,
    as_json: bool,
    sbom: str | None,
    explain: bool,
    quiet: bool,
    **flags: Any,
) -> None:
    """Distill APP (a profile name, a profile file, or a binary path in the source)."""
    import json

    from distill import pipeline, progress
    from distill.refs import Ref, parse_destination
    from distill.report import explain_tree, json_report, size_rows, source_totals_ahead

    try:
        request = _request(flags)
        default = f"{request.profile.name}-distilled"
        request.outputs = [parse_destination(out) for out in outs] or [Ref("oci", default, "latest")]
        request.force, request.allow_missing, request.replace_base_libs = force, allow_missing, replace_base_libs
        if request.platforms is not None:
            _build_platforms(request, sbom=sbom, as_json=as_json, explain=explain, quiet=quiet, verbose=flags["verbose"])
            return
        sbom_path = _check_sbom(sbom, force, request.outputs) if sbom else None
        with progress.shown(not quiet):
            prepared = pipeline.prepare(request)
            # the source totals walk the whole source: only when a report shows them, counted while the output is written
            totals = source_totals_ahead(prepared.source.view) if as_json or not quiet else None
            pipeline.write(prepared)
    except DistillError as exc:
        if as_json:
            _json_failure(exc)
        raise
    counted = totals() if totals is not None else None  # before the SBOM is written, which may land in the source
    if sbom_path is not None:
        from distill.sbom import cyclonedx, write_sbom

        write_sbom(cyclonedx(prepared, pipeline.created_time(prepared)), sbom_path)
    for warning in prepared.warnings:
        _say(f"warning: {warning}")
    if not quiet:
        candidates = sorted({h.path for h in prepared.plan.hints if prepared.plan.entry_for(h.path) is None})
        if candidates:
            _say(
                f"hints: {len(candidates)} executables or libraries named in shipped files are not shipped "
                f"({', '.join(candidates[:5])}{', ...' if len(candidates) > 5 else ''}); `distill explain` says who names "
                "them, `hints: include` in the profile takes them"
            )
        if prepared.layering is not None:
            layering = prepared.layering
            _say(
                f"base {prepared.base_name}: {len(layering.from_base)} libraries come from the base, "
                f"{len(layering.same_in_base)} entries it already has were left out, "
                f"{len(layering.merged)} files merged with its own"
            )
        for line in prepared.written:
            _say(f"wrote {line}")
        if not outs:
            where = request.outputs[0]  # a new tag, so the user's upstream image is not overwritten
            _say(
                f"no --out given: wrote {where}; run it with `skopeo copy {where} docker-daemon:{default}:latest` or `podman pull {where}`"
            )
    if explain:
        click.echo(explain_tree(prepared.plan, verbose=flags["verbose"]), err=True, nl=False)
    if counted is not None:
        if as_json:
            click.echo(json.dumps(json_report(prepared, counted), indent=2))
        if not quiet:
            _table(size_rows(prepared, counted), prepared.plan.source)


def _check_sbom(value: str, force: bool, outputs: list[Ref]) -> Path:
    """Refuse an SBOM path before the source is read: an existing file needs --force, the directory must exist,
    and no output may be written there."""
    from pathlib import Path

    path = Path(value)
    for ref in outputs:
        if ref.path and Path(ref.path).absolute().resolve() == path.absolute().resolve():
            raise UsageError(f"--sbom {value}: the same path as --out {ref}; give the SBOM its own path")
    if path.exists() and not force:
        raise DestinationError(f"--sbom {value}: already exists; use --force to replace it")
    if not path.absolute().parent.is_dir():
        raise DestinationError(f"--sbom {value}: the directory {path.absolute().parent} does not exist; create it first")
    return path


def _json_failure(exc: DistillError) -> None:
    """With --json, stdout holds a report on failure too: the error, and the checked plan when there is one."""
    import json

    from distill import pipeline
    from distill.report import json_report, source_totals

    prepared = exc.prepared if isinstance(exc, ClosureError) else None
    report: dict[str, Any] = {"distill": __version__}
    if isinstance(prepared, pipeline.Prepared):
        report = json_report(prepared, source_totals(prepared.source.view))
    report["error"] = {"exit_code": exc.exit_code, "messages": exc.issues}
    click.echo(json.dumps(report, indent=2))


def _build_platforms(request: pipeline.Request, *, sbom: str | None, as_json: bool, explain: bool, quiet: bool, verbose: bool) -> None:
    """`--platform all` or a list: the same report as one platform, once per platform, then the index."""
    import json

    from distill import pipeline, progress
    from distill.report import explain_tree, json_report, size_rows, source_totals

    if sbom:
        raise UsageError("--sbom describes one platform's output; pick one with --platform os/arch")
    with progress.shown(not quiet):
        outcome = pipeline.build_platforms(request)
    reports = []
    for prepared in outcome.prepared:
        platform = prepared.request.options.platform
        for warning in prepared.warnings:
            _say(f"warning: {platform}: {warning}")
        if explain:
            click.echo(f"# {platform}", err=True)
            click.echo(explain_tree(prepared.plan, verbose=verbose), err=True, nl=False)
        if as_json or not quiet:
            totals = source_totals(prepared.source.view)
            if as_json:
                reports.append({"platform": str(platform), **json_report(prepared, totals)})
            if not quiet:
                _table(size_rows(prepared, totals), f"{prepared.plan.source}, {platform}")
    assert outcome.index is not None
    if not quiet:
        for line in outcome.written:
            _say(f"wrote {line} (an image index of {len(outcome.prepared)} platforms)")
    if as_json:
        index = {"digest": outcome.index.index_digest, "manifests": outcome.index.index["manifests"]}
        click.echo(json.dumps({"distill": __version__, "index": index, "platforms": reports, "written": outcome.written}, indent=2))


@cli.command("explain")
@_source_options
@click.option("--json", "as_json", is_flag=True, help="write the JSON report instead of the tree")
@click.argument("paths", nargs=-1)
def explain_command(as_json: bool, paths: tuple[str, ...], **flags: Any) -> None:
    """Show why each path would ship, without writing anything. PATHS limit it to those paths."""
    import json

    from distill import pipeline, progress
    from distill.report import explain_path, explain_tree, json_report, source_totals

    try:
        request = _request(flags)
        request.allow_missing = True
        if request.platforms is not None:
            raise UsageError(f"--platform {flags['platform']}: explain looks at one platform; pick one with --platform os/arch")
        with progress.shown(True):
            prepared = pipeline.prepare(request)
    except DistillError as exc:
        if as_json:
            _json_failure(exc)
        raise
    if as_json:
        click.echo(json.dumps(json_report(prepared, source_totals(prepared.source.view)), indent=2))
    elif paths:
        for path in paths:
            click.echo(explain_path(prepared.plan, path), nl=False)
    else:
        click.echo(explain_tree(prepared.plan, verbose=flags["verbose"]), nl=False)
    for problem in prepared.missing:
        _say(f"check: {problem}")


def _request(flags: dict[str, Any]) -> pipeline.Request:
    from distill import pipeline
    from distill.refs import parse_source
    from distill.target import Platform
    from distill.transports import SourceOptions

    profile = _profile(flags)
    registry = registry_options(flags)
    text = flags["platform"]
    platforms: tuple[Platform, ...] | str | None = None
    if text == "all" or (text and "," in text):
        platforms = "all" if text == "all" else Platform.parse_list(text)
    platform = Platform.parse(text) if text and platforms is None else Platform.host()
    options = SourceOptions(platform=platform, registry=registry)
    source = parse_source(flags["source"])
    base = flags["base"] if flags["base"] is not None else profile.base
    if flags["platform"] and not source.is_image and base in ("", "scratch"):
        raise UsageError(
            f"--platform {flags['platform']}: {source} is a directory, which has one platform; "
            "--platform picks from a multi-platform image (--from or --base); drop it"
        )
    return pipeline.Request(profile, source, base=flags["base"], options=options, epoch=_epoch(), platforms=platforms)


cli.add_command(learn_command)
cli.add_command(verify_command)


@cli.command("profiles")
def profiles_command() -> None:
    """List the built-in profiles and fragments."""
    from distill.profile import builtin_profiles

    for name, description in builtin_profiles():
        click.echo(f"{name:<16} {description}")


@cli.group("cache")
def cache_group() -> None:
    """The layer cache ($XDG_CACHE_HOME/distill), bounded by DISTILL_CACHE_MAX."""


@cache_group.command("prune")
@click.option("--max", "limit", metavar="SIZE", help="keep at most this much, e.g. 2G (default: DISTILL_CACHE_MAX, else 5G)")
@click.option("--all", "everything", is_flag=True, help="empty the cache")
def cache_prune(limit: str | None, everything: bool) -> None:
    """Remove what was used least recently until the cache fits."""
    from distill.oci.layers import Cache, parse_size

    cache = Cache()
    removed, freed = cache.trim(0 if everything else parse_size(limit, "--max") if limit else None)
    _say(f"cache {cache.root}: removed {removed} entries, freed {freed:,} bytes")


def _profile(flags: dict[str, Any]) -> Profile:
    """APP plus the ad-hoc flags, as one validated profile; each setting's origin is the flag that made it."""
    from dataclasses import replace
    from pathlib import Path

    from distill.profile import adhoc_layer, load_profile

    app: str | None = flags["app"]
    layers: list[tuple[dict[str, Any], str]] = []  # (profile document, the words that set it)
    name = None
    if app is None or (app.startswith("/") and not app.endswith((".yaml", ".yml"))):
        if app is None and not flags["binary"]:
            raise UsageError("name an APP (a profile or a binary path in the source), or give --binary")
        if app is not None:
            layers.append(({"binaries": [app], "image": {"entrypoint": [app]}}, "APP"))
        name = Path(app or flags["binary"][0]).name.lower() or "app"
        app = "glibc"  # an ad-hoc profile starts from the glibc fragment (inert for musl programs)
    layers += [({"binaries": [path]}, f"--binary {path}") for path in flags["binary"]]
    layers += [({"paths": {path: {}}}, f"--path {path}") for path in flags["extra_paths"]]
    layers += [({"accounts": {"users": [user]}}, f"--user {user}") for user in flags["user"]]
    layers += [({"accounts": {"groups": [group]}}, f"--group {group}") for group in flags["group"]]
    if flags["tz"]:
        layers.append(({"system": {"timezone": flags["tz"]}}, f"--tz {flags['tz']}"))
    for key in ("entrypoint", "cmd"):
        if flags[key] is not None:
            layers.append(({"image": {key: _argv(flags[key], key)}}, f"--{key}"))
    layers += [({"image": {"expose": [port]}}, f"--expose {port}") for port in flags["expose"]]
    layers += [({"image": {"env": dict([_pair(item)])}}, f"--env {item.partition('=')[0]}") for item in flags["env"]]
    if flags["run_as"]:
        layers.append(({"image": {"user": flags["run_as"]}}, f"--run-as {flags['run_as']}"))
    extra: dict[Any, Any] = {}
    issues: list[str] = []
    for document, flag in layers:
        try:
            extra.update(adhoc_layer(document, flag))
        except ProfileError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ProfileError(issues[0], issues=issues)
    profile = load_profile(app, extra=extra)
    return profile if name is None else replace(profile, name=name)


def _argv(value: str, flag: str) -> list[str]:
    import json
    import shlex

    if value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise UsageError(f"--{flag}: not a JSON list ({getattr(exc, 'msg', 'nested too deeply')})") from None
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise UsageError(f"--{flag}: give a JSON list of strings")
        return parsed
    return shlex.split(value)


def _pair(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UsageError(f"--env {item!r}: write KEY=VALUE")
    return key, value


def _epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r}: must be a whole number of seconds since 1970")
    return int(value)


def _say(message: str) -> None:
    click.echo(f"distill: {message}", err=True)


def _table(rows: list[tuple[str, ...]], source: str) -> None:
    """The before/after table: plain columns that never wrap and carry no trailing spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"source: {source}"]
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width + 2) for cell, width in zip(row[1:], widths[1:], strict=True))]
        lines.append("".join(cells).rstrip())
    click.echo("\n".join(lines), err=True)


_MAX_LISTED = 20


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that temporary outputs are removed on the way out."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map every outcome to a documented exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = _without_debug(args)[1]
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli.main(args=args, prog_name="distill", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"distill: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("distill: interrupted", err=True)
        sys.exit(130)
    except DistillError as exc:
        for issue in exc.issues[:_MAX_LISTED]:
            click.echo(f"distill: error: {issue}", err=True)
        if len(exc.issues) > _MAX_LISTED:
            click.echo(
                f"distill: error: ... and {len(exc.issues) - _MAX_LISTED} more ({len(exc.issues)} in all; --json lists every one)", err=True
            )
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("distill: interrupted", err=True)
        sys.exit(130)
    except _Terminated:
        click.echo("distill: terminated", err=True)
        sys.exit(143)
    except Exception as exc:  # a bug: say so briefly; --debug shows where
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(f"distill: internal error: {type(exc).__name__}: {exc}; rerun with --debug and report it", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)
