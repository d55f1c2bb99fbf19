"""The `learn` and `verify` commands (registered by cli.py): flags -> learn/verify -> report and exit code."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from distill.errors import ClosureError, DestinationError, DistillError, UsageError
from distill.registry_flags import REGISTRY_FLAGS, registry_options

if TYPE_CHECKING:
    from distill.profile import Profile
    from distill.transports import SourceOptions

# like cli.py, each command imports what it uses when it runs (json, shlex and pathlib too), so `distill --help`
# stays light

__all__ = ["learn_command", "verify_command"]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")


def _image_options(command: Any) -> Any:
    options = [
        click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="platform to pick from a multi-platform image"),
        *REGISTRY_FLAGS,
        click.option(
            "--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True, metavar="SECONDS", help="time limit for the run"
        ),
        click.option(
            "--wait-port", type=click.IntRange(1, 65535), metavar="PORT", help="start the probe once this TCP port accepts connections"
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _options(flags: dict[str, Any]) -> SourceOptions:
    from distill.target import Platform
    from distill.transports import SourceOptions

    registry = registry_options(flags)
    platform = Platform.parse(flags["platform"]) if flags["platform"] else Platform.host()
    return SourceOptions(platform=platform, registry=registry)


def _say(message: str) -> None:
    click.echo(f"distill: {message}", err=True)


def _app_profile(app: str) -> Profile | None:
    """APP as a profile when it names one (built-in or file); None when it is just a name for the draft."""
    from distill.profile import load_profile

    try:
        return load_profile(app)
    except DistillError:
        if "/" in app or app.endswith((".yaml", ".yml")):
            raise
        if not app or not set(app) <= _NAME_CHARS or app[0] in "._-":
            raise UsageError(f"{app!r}: name the draft with lowercase letters, digits, '.', '_' or '-'") from None
        return None


@click.command("learn", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("app")
@click.option("--from", "source", required=True, metavar="SRC", help="rootfs:DIR, a path, or an image reference")
@_image_options
@click.option("--probe", metavar="CMD", help="a shell command run outside the root, in the run's network namespace")
@click.option("--run-as", metavar="USER", help="run COMMAND as this account of the source (name or uid[:gid])")
@click.option("--write", "write", metavar="FILE", type=click.Path(dir_okay=False), help="write the draft here, not to stdout")
@click.option("--check", "check", metavar="PROFILE", help="list what the run needed that PROFILE's plan lacks (exit 4)")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def learn_command(
    app: str, probe: str | None, run_as: str | None, write: str | None, check: str | None, command: tuple[str, ...], **flags: Any
) -> None:
    """Run COMMAND (default: APP's entrypoint) confined in the source under strace, and draft a profile
    from what it used. This runs the source's programs, on your request, in private namespaces."""
    import shlex
    from pathlib import Path

    from distill.learn import learn, missing_from, render_draft
    from distill.profile import load_profile
    from distill.refs import parse_source
    from distill.staging import staged

    profile = _app_profile(app)
    argv = list(command)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    wait_ports = [flags["wait_port"]] if flags["wait_port"] else []
    if profile is not None:
        env.update(profile.image.env)
        if not argv:
            argv = [*(profile.image.entrypoint or ()), *(profile.image.cmd or ())]
        if not wait_ports and probe:
            wait_ports = [
                int(port)
                for port, _, proto in (str(e).partition("/") for e in profile.image.expose)
                if port.isdigit() and proto in ("", "tcp")
            ]
    if not argv:
        raise UsageError(f"{app}: no command to run; give one after `--` (distill learn {app} --from SRC -- /usr/bin/{app} ...)")
    ref = parse_source(flags["source"])
    options = _options(flags)
    uid, gid = _run_as(ref, options, run_as or (profile.image.user if profile is not None else None))
    learned = learn(
        ref,
        options,
        argv,
        env=env,
        cwd=(profile.image.workdir if profile else None) or "/",
        uid=uid,
        gid=gid,
        probe=probe,
        wait_ports=wait_ports,
        timeout=flags["timeout"],
    )
    run = learned.run
    note = f"ran {shlex.join(argv)}: " + (
        "stopped at the time limit" if run.timed_out else f"exit {run.exit}" if run.exit is not None else "stopped after the probe"
    )
    if probe:
        note += f"; probe exit {run.probe_exit}"
    _say(note)
    if run.port_ready is False:
        where = " or ".join(map(str, wait_ports))
        _say(f"warning: nothing listened on port {where}; the probe ran anyway, the draft may miss what serving needs")
    if probe and run.probe_exit != 0:
        _say(f"warning: the probe failed, the draft may miss what a working run needs: {run.probe_output.strip()[-300:]}")
    if run.exit not in (0, None) or run.timed_out:
        _say(f"program output: {run.output.strip()[-600:]}")
    if check is not None:
        lines = missing_from(learned.needs, learned.source.view, load_profile(check))
        for line in lines:
            click.echo(line)
        if lines:
            raise ClosureError(f"{check}: lacks {len(lines)} thing(s) the run needed (listed on stdout); add them to the profile")
        _say(f"{check}: has everything the run needed")
        return
    text = render_draft(
        learned.needs, learned.source.view, name=profile.name if profile else app, argv=argv, source=str(ref), run_note=note
    )
    if write is None:
        click.echo(text, nl=False)
        return
    try:
        with staged(Path(write).absolute(), directory=False) as temp:
            temp.write_text(text)
            os.chmod(temp, 0o644)
    except OSError as exc:
        raise DestinationError(f"{write}: cannot write the draft: {exc.strerror}") from None
    _say(f"wrote {write}")


def _argv(value: str) -> list[str]:
    import json
    import shlex

    if not value.lstrip().startswith("["):
        return shlex.split(value)
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        parsed = None
    if not isinstance(parsed, list) or not parsed or not all(isinstance(a, str) for a in parsed):
        raise UsageError("--entrypoint: give a JSON list of strings, or words split like a shell")
    return parsed


def _run_as(ref: Any, options: SourceOptions, spec: str | None) -> tuple[int, int]:
    if not spec:
        return 0, 0
    from distill.transports import open_source
    from distill.verify import account_ids

    try:
        return account_ids(open_source(ref, options).view, spec)
    except (KeyError, FileNotFoundError):
        raise UsageError(f"--run-as {spec}: not an account of the source's /etc/passwd and /etc/group") from None


@click.command("verify", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target")
@_image_options
@click.option("--run", "probe", metavar="PROBE", help="start the entrypoint under runc and run this shell command against it")
@click.option("--entrypoint", metavar="ARGS", help="the process to check and run (a JSON list or shell words); default: the image's")
@click.option("--user", "user", metavar="USER[:GROUP]", help="the account to check and run as; default: the image's")
@click.option("--workdir", metavar="DIR", help="the working directory to check; default: the image's")
@click.option("--json", "as_json", is_flag=True, help="write the findings as JSON to stdout")
def verify_command(
    target: str, probe: str | None, entrypoint: str | None, user: str | None, workdir: str | None, as_json: bool, **flags: Any
) -> None:
    """Check TARGET (a rootfs or an image) the way the build checks its output; with --run, smoke-run it."""
    import json

    from distill.refs import parse_source
    from distill.transports import open_source
    from distill.verify import ImageConfig, VerifyError, run_probe, verify

    source = open_source(parse_source(target, "TARGET"), _options(flags))
    config = ImageConfig.of(source)
    if entrypoint is not None:
        config.entrypoint = _argv(entrypoint)
    config.user = user if user is not None else config.user
    config.workdir = workdir if workdir is not None else config.workdir
    verdict = verify(source, config)
    if probe is not None:
        if not config.entrypoint:
            raise UsageError(f"{target}: nothing to run; give --entrypoint")
        if verdict.findings:
            _say("not running the probe: the image failed its static checks")
        else:
            run_probe(source, config, probe, wait_port=flags["wait_port"], timeout=flags["timeout"], verdict=verdict)
    for warning in verdict.warnings:
        _say(f"warning: {warning}")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "target": target,
                    "elf_files": verdict.elf_files,
                    "exit_code": verdict.exit_code,
                    "findings": [{"class": f.failure.label, "message": f.message} for f in verdict.findings],
                    "probe": None
                    if verdict.run is None
                    else {"exit": verdict.run.probe_exit, "output": verdict.run.probe_output, "container_output": verdict.run.output},
                },
                indent=2,
            )
        )
    if verdict.findings:
        raise VerifyError(verdict)
    passed = f"; probe passed: {verdict.run.probe_output.strip()[-200:] or 'exit 0'}" if verdict.run is not None else ""
    _say(f"{target}: {verdict.elf_files} ELF files load, image config consistent{passed}")
