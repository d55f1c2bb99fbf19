"""The command line: flags -> profile, source, plan, checks, sinks -> exit code. No logic of its own.

    distill [APP] --from SRC --out DEST [--out DEST ...]   distill an app
    distill explain [APP] --from SRC [PATH ...]           why each path would ship
    distill profiles                                      list the built-in profiles
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from distill import __version__, pipeline
from distill.errors import EXIT_INTERNAL, DistillError, UsageError
from distill.profile import Profile, adhoc_layer, builtin_profiles, load_profile
from distill.refs import Ref, parse_destination, parse_source
from distill.registry.auth import Credentials, CredentialsError, parse_creds_flag
from distill.registry.options import RegistryOptions
from distill.report import explain_path, explain_tree, json_report, size_rows, source_totals
from distill.sbom import cyclonedx, write_sbom
from distill.sources import SourceOptions
from distill.target import Platform

__all__ = ["main", "cli"]

_COMMANDS = ("build", "explain", "profiles")  # `distill APP ...` is `distill build APP ...`


class _DefaultGroup(click.Group):
    """`distill nginx ...` means `distill build nginx ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in _COMMANDS and args[0] not in ("--help", "-h", "--version"):
            args = ["build", *args]
        return super().parse_args(ctx, args)


def _source_options(command: Any) -> Any:
    options = [
        click.argument("app", required=False),
        click.option("--from", "source", required=True, metavar="SRC", help="rootfs:DIR, or a path starting with /, ./ or ../"),
        click.option("--binary", multiple=True, metavar="PATH", help="another root binary (glob allowed)"),
        click.option("--path", "extra_paths", multiple=True, metavar="PATH", help="another path to copy from the source (glob allowed)"),
        click.option("--user", multiple=True, metavar="NAME", help="an account from the source's /etc/passwd"),
        click.option("--group", multiple=True, metavar="NAME", help="a group from the source's /etc/group"),
        click.option("--tz", metavar="ZONE", help="time zone for /etc/localtime, or none"),
        click.option("--entrypoint", metavar="ARGS", help='image entrypoint: a JSON list or words split like a shell'),
        click.option("--cmd", metavar="ARGS", help="image command: a JSON list or words split like a shell"),
        click.option("--expose", multiple=True, metavar="PORT", help="port to expose, e.g. 80/tcp"),
        click.option("--env", multiple=True, metavar="KEY=VALUE", help="image environment variable"),
        click.option("--run-as", metavar="USER", help="image user (name, uid, user:group)"),
        click.option("--base", metavar="IMAGE", help="image to layer the output on (default: the profile's, else scratch)"),
        click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="platform to pick from a multi-platform image"),
        click.option("--creds", metavar="USER:PASSWORD", help="registry credentials"),
        click.option("--authfile", metavar="FILE", help="registry auth file (containers auth.json or docker config.json)"),
        click.option("--tls-verify", type=click.BOOL, default=True, metavar="BOOL",
                     help="verify registry TLS certificates and refuse plain http (default true)"),
        click.option("-v", "--verbose", is_flag=True, help="list every entry in reports"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distill")
@click.option("--debug", is_flag=True, help="show a traceback for internal errors")
def cli(debug: bool) -> None:
    """Distill a fat root filesystem into a minimal one for one app."""


@cli.command("build")
@_source_options
@click.option("--out", "outs", multiple=True, metavar="DEST",
              help="rootfs:DIR, layer:FILE.tar[.gz], oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], "
                   "docker://REF or docker-daemon:REF; repeatable")
@click.option("--force", is_flag=True, help="replace a destination that is not empty")
@click.option("--allow-missing", is_flag=True, help="report missing libraries and versions as warnings")
@click.option("--replace-base-libs", is_flag=True, help="ship the source's libraries even where the base has its own")
@click.option("--json", "as_json", is_flag=True, help="write a JSON report to stdout")
@click.option("--sbom", "sbom", metavar="FILE", type=click.Path(dir_okay=False), help="write a CycloneDX SBOM here")
@click.option("--explain", "explain", is_flag=True, help="print why each path ships (to stderr)")
@click.option("-q", "--quiet", is_flag=True, help="no summary table")
def build_command(outs: tuple[str, ...], force: bool, allow_missing: bool, replace_base_libs: bool, as_json: bool,
                  sbom: str | None, explain: bool, quiet: bool, **flags: Any) -> None:
    """Distill APP (a profile name, a profile file, or a binary path in the source)."""
    request = _request(flags)
    request.outputs = [parse_destination(out) for out in outs] or [Ref("oci", f"./{request.profile.name}-distilled", "latest")]
    request.force, request.allow_missing, request.replace_base_libs = force, allow_missing, replace_base_libs
    prepared = pipeline.build(request)
    if sbom:
        write_sbom(cyclonedx(prepared, pipeline.created_time(prepared)), Path(sbom))
    for warning in prepared.warnings:
        _say(f"warning: {warning}")
    if not quiet:
        if prepared.layering is not None:
            layering = prepared.layering
            _say(f"base {prepared.base_name}: {len(layering.from_base)} libraries come from the base, "
                 f"{len(layering.same_in_base)} entries it already has were left out, "
                 f"{len(layering.merged)} files merged with its own")
        for line in prepared.written:
            _say(f"wrote {line}")
        if not outs:
            where = request.outputs[0]
            _say(f"no --out given: wrote {where}; run it with `skopeo copy {where} docker-daemon:{request.profile.name}:latest` "
                 f"or `podman pull {where}`")
    totals = source_totals(prepared.source.view)
    if explain:
        click.echo(explain_tree(prepared.plan, verbose=flags["verbose"]), err=True, nl=False)
    if as_json:
        click.echo(json.dumps(json_report(prepared, totals), indent=2))
    if not quiet:
        _table(size_rows(prepared.plan, totals), prepared.plan.source)


@cli.command("explain")
@_source_options
@click.option("--json", "as_json", is_flag=True, help="write the JSON report instead of the tree")
@click.argument("paths", nargs=-1)
def explain_command(as_json: bool, paths: tuple[str, ...], **flags: Any) -> None:
    """Show why each path would ship, without writing anything. PATHS limit it to those paths."""
    request = _request(flags)
    request.allow_missing = True
    prepared = pipeline.prepare(request)
    if as_json:
        click.echo(json.dumps(json_report(prepared, source_totals(prepared.source.view)), indent=2))
    elif paths:
        for path in paths:
            click.echo(explain_path(prepared.plan, path), nl=False)
    else:
        click.echo(explain_tree(prepared.plan, verbose=flags["verbose"]), nl=False)
    for problem in prepared.checks.errors:
        _say(f"check: {problem}")


def _request(flags: dict[str, Any]) -> pipeline.Request:
    profile = _profile(flags)
    registry = RegistryOptions(creds=_creds(flags["creds"]), authfile=flags["authfile"], tls_verify=flags["tls_verify"])
    platform = Platform.parse(flags["platform"]) if flags["platform"] else Platform.host()
    options = SourceOptions(platform=platform, registry=registry)
    return pipeline.Request(profile, parse_source(flags["source"]), base=flags["base"], options=options, epoch=_epoch())


def _creds(value: str | None) -> Credentials | None:
    if value is None:
        return None
    try:
        return parse_creds_flag(value)
    except CredentialsError as exc:
        raise UsageError(f"--creds: {exc}") from None


@cli.command("profiles")
def profiles_command() -> None:
    """List the built-in profiles and fragments."""
    for name, description in builtin_profiles():
        click.echo(f"{name:<16} {description}")


def _profile(flags: dict[str, Any]) -> Profile:
    """APP plus the ad-hoc flags, as one validated profile."""
    app: str | None = flags["app"]
    document: dict[str, Any] = {}
    binaries = list(flags["binary"])
    name = None
    if app is None or (app.startswith("/") and not app.endswith((".yaml", ".yml"))):
        if app is not None:
            binaries.insert(0, app)
            document.setdefault("image", {})["entrypoint"] = [app]
        if not binaries:
            raise UsageError("name an APP (a profile or a binary path in the source), or give --binary")
        name = Path(binaries[0]).name.lower() or "app"
        app = "glibc"  # an ad-hoc profile starts from the glibc fragment (inert for musl programs)
    if binaries:
        document["binaries"] = binaries
    if flags["extra_paths"]:
        document["paths"] = {path: {} for path in flags["extra_paths"]}
    accounts = {key: list(flags[flag]) for key, flag in (("users", "user"), ("groups", "group")) if flags[flag]}
    if accounts:
        document["accounts"] = accounts
    if flags["tz"]:
        document["system"] = {"timezone": flags["tz"]}
    image = document.setdefault("image", {})
    for key in ("entrypoint", "cmd"):
        if flags[key] is not None:
            image[key] = _argv(flags[key], key)
    if flags["expose"]:
        image["expose"] = list(flags["expose"])
    if flags["env"]:
        image["env"] = dict(_pair(item) for item in flags["env"])
    if flags["run_as"]:
        image["user"] = flags["run_as"]
    extra = adhoc_layer(document)
    profile = load_profile(app, extra=extra)
    return profile if name is None else replace(profile, name=name)


def _argv(value: str, flag: str) -> list[str]:
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


def _table(rows: list[tuple[str, str, str]], source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"source: {source}", title_justify="left", show_edge=False, box=None, pad_edge=False)
    table.add_column("")
    table.add_column("source", justify="right")
    table.add_column("distilled", justify="right")
    for row in rows:
        table.add_row(*row)
    Console(stderr=True, highlight=False).print(table)


_MAX_LISTED = 20


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that temporary outputs are removed on the way out."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map every outcome to a documented exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
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
            click.echo(f"distill: error: ... and {len(exc.issues) - _MAX_LISTED} more", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("distill: interrupted", err=True)
        sys.exit(130)
    except _Terminated:
        click.echo("distill: terminated", err=True)
        sys.exit(143)
    except Exception as exc:  # a bug: say so briefly; --debug shows where
        if debug:
            traceback.print_exc()
        click.echo(f"distill: internal error: {type(exc).__name__}: {exc}; rerun with --debug and report it", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)
