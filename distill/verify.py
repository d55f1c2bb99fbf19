"""`distill verify`: check an image or rootfs that already exists, and optionally smoke-run it.

Three layers of checks, each failure class with its own exit code so scripts can tell them apart:
the loader model on every ELF file of the merged filesystem (a missing library, a missing symbol
version), the image configuration (the entrypoint and its interpreter exist and are executable; the
user, group and working directory exist), and with `--run`, the entrypoint started under runc in a
private network namespace while a probe runs against it (see distill/sandbox.py).
"""

from __future__ import annotations

import enum
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from distill import paths
from distill.accounts import parse_group, parse_passwd
from distill.checks import FindingKind, check_plan
from distill.elf import is_elf
from distill.errors import DistillError, ElfError
from distill.loader import Loader, LoaderEnv
from distill.materialize import materialize
from distill.plan import Plan
from distill.sandbox import Run, RunResult, confined_run
from distill.transports import Source
from distill.view import View

__all__ = ["Failure", "Finding", "ImageConfig", "Verdict", "VerifyError", "verify", "run_probe", "account_ids"]

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Failure(enum.Enum):
    """A failure class and its exit code (docs/cli.md lists them)."""

    BAD_ELF = 3
    MISSING_LIBRARY = 4
    MISSING_VERSION = 6
    ENTRYPOINT = 7
    CONFIG = 8
    PROBE = 9

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class Finding:
    failure: Failure
    message: str


@dataclass
class ImageConfig:
    """The parts of an image's config verify checks; flags fill in what a rootfs has no config for."""

    entrypoint: list[str] = field(default_factory=list)  # Entrypoint + Cmd: the process argv
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = ""
    ports: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, source: Source) -> ImageConfig:
        section = source.image.runtime_config if source.image is not None else {}
        env = dict(item.split("=", 1) for item in section.get("Env") or [] if "=" in item)
        ports = sorted(
            int(p.split("/")[0])
            for p, _ in (section.get("ExposedPorts") or {}).items()
            if p.split("/")[0].isdigit() and p.endswith(("/tcp", "")) and "/udp" not in p
        )
        return cls(
            [*(section.get("Entrypoint") or []), *(section.get("Cmd") or [])],
            env,
            str(section.get("User") or ""),
            str(section.get("WorkingDir") or ""),
            ports,
        )


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    elf_files: int = 0
    run: RunResult | None = None

    @property
    def exit_code(self) -> int:
        return min((f.failure.value for f in self.findings), default=0)


class VerifyError(DistillError):
    """The target failed verification; the exit code is that of the most basic failure class found."""

    def __init__(self, verdict: Verdict) -> None:
        issues = [f"{f.failure.label}: {f.message}" for f in verdict.findings]
        super().__init__(issues[0], issues=issues)
        self.exit_code = verdict.exit_code


def verify(source: Source, config: ImageConfig) -> Verdict:
    """The static checks: every ELF's closure and symbol versions, then the image config."""
    verdict = Verdict()
    _closures(source.view, config, verdict)
    _config(source.view, config, verdict)
    return verdict


def _closures(view: View, config: ImageConfig, verdict: Verdict) -> None:
    roots = [node.path for node in view.walk("/") if node.is_file and node.size >= 4 and _elf(view, node.path)]
    verdict.elf_files = len(roots)
    library_path = tuple(config.env["LD_LIBRARY_PATH"].split(":")) if config.env.get("LD_LIBRARY_PATH") else ()
    env = LoaderEnv(cwd=config.workdir or "/", library_path=library_path)
    result = check_plan(Plan(source=view.name, profile="verify", roots=roots), view, env, output=view)
    verdict.warnings.extend(str(w) for w in result.warnings)
    for finding in result.errors:
        failure = {FindingKind.MISSING_VERSION: Failure.MISSING_VERSION, FindingKind.BAD_ELF: Failure.BAD_ELF}.get(
            finding.kind, Failure.MISSING_LIBRARY
        )
        verdict.findings.append(Finding(failure, finding.message.replace("is not in the output", "is not in the image")))


def _elf(view: View, path: str) -> bool:
    try:
        with view.open(path) as stream:
            return is_elf(stream.read(4))
    except OSError:
        return False


def _executable(view: View, path: str, what: str, verdict: Verdict, depth: int = 0) -> None:
    """`path` exists, is a regular file with an execute bit, and so is its interpreter (ELF or #!)."""
    found = view.resolve(path)
    if found.node is None:
        verdict.findings.append(Finding(Failure.ENTRYPOINT, f"{what} {path} is not in the image"))
        return
    if not found.node.is_file or not found.node.mode & 0o111:
        verdict.findings.append(Finding(Failure.ENTRYPOINT, f"{what} {path} is not an executable file (mode {found.node.mode:04o})"))
        return
    head = view.read_bytes(found.path, 256)
    interpreter = None
    if is_elf(head[:4]):
        try:
            interpreter = Loader(view).elf(found.path).interp
        except ElfError as exc:
            verdict.findings.append(Finding(Failure.ENTRYPOINT, f"{what} {path}: {exc.message}"))
            return
    elif head.startswith(b"#!"):
        words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
        interpreter = words[0] if words else None
        if interpreter is None:
            verdict.findings.append(Finding(Failure.ENTRYPOINT, f"{what} {path} has an empty #! line"))
    if interpreter and depth < 4:
        _executable(view, interpreter, f"interpreter of {path}:", verdict, depth + 1)


def _config(view: View, config: ImageConfig, verdict: Verdict) -> None:
    if config.entrypoint:
        program = config.entrypoint[0]
        if "/" not in program:
            search = (config.env.get("PATH") or _DEFAULT_PATH).split(":")
            hit = next((paths.join(d, program) for d in search if d.startswith("/") and view.stat(paths.join(d, program))), None)
            if hit is None:
                verdict.findings.append(
                    Finding(Failure.ENTRYPOINT, f"entrypoint {program} is not on the image's PATH ({':'.join(search)})")
                )
            program = hit or ""
        elif not program.startswith("/"):
            program = paths.join(config.workdir or "/", program)
        if program:
            _executable(view, paths.clean(program), "entrypoint", verdict)
    else:
        verdict.warnings.append("no entrypoint or cmd to check; give --entrypoint for a rootfs")
    if config.user:
        _user(view, config.user, verdict)
    if config.workdir:
        node = view.stat(config.workdir)
        if node is None or not node.is_dir:
            verdict.findings.append(Finding(Failure.CONFIG, f"working directory {config.workdir} is not a directory in the image"))


def _user(view: View, spec: str, verdict: Verdict) -> None:
    user, _, group = spec.partition(":")

    def table(path: str) -> str:
        try:
            return view.read_bytes(path, 1 << 20).decode("utf-8", "replace")
        except (FileNotFoundError, IsADirectoryError):
            return ""

    if user and not user.isdigit() and user not in {a.name for a in parse_passwd(table("/etc/passwd"))}:
        verdict.findings.append(Finding(Failure.CONFIG, f"user {user} is not in the image's /etc/passwd"))
    if group and not group.isdigit() and group not in {g.name for g in parse_group(table("/etc/group"))}:
        verdict.findings.append(Finding(Failure.CONFIG, f"group {group} is not in the image's /etc/group"))


def account_ids(view: View, spec: str) -> tuple[int, int]:
    """Numeric uid and gid for runc, from the image's own account files."""
    user, _, group = spec.partition(":")
    accounts = (
        {a.name: a for a in parse_passwd(view.read_bytes("/etc/passwd").decode("utf-8", "replace"))} if user and not user.isdigit() else {}
    )
    uid = int(user) if user.isdigit() else accounts[user].uid if user else 0
    gid = accounts[user].gid if user in accounts else 0
    if group:
        groups = (
            {g.name: g.gid for g in parse_group(view.read_bytes("/etc/group").decode("utf-8", "replace"))} if not group.isdigit() else {}
        )
        gid = int(group) if group.isdigit() else groups[group]
    return uid, gid


def run_probe(source: Source, config: ImageConfig, probe: str, *, wait_port: int | None, timeout: float, verdict: Verdict) -> None:
    """Start the entrypoint under runc (over an overlay of the image) and run `probe` from outside."""
    with tempfile.TemporaryDirectory(prefix="distill-verify-") as work:
        scratch = Path(work)
        root = source.host_root or str(materialize(source.view, scratch / "rootfs"))
        (scratch / "run").mkdir()
        uid, gid = account_ids(source.view, config.user)
        env = {"PATH": _DEFAULT_PATH, **config.env}
        ports = [wait_port] if wait_port is not None else config.ports
        verdict.run = confined_run(
            Run(
                root,
                config.entrypoint,
                "runc",
                env=env,
                cwd=config.workdir or "/",
                uid=uid,
                gid=gid,
                probe=probe,
                wait_ports=ports,
                timeout=timeout,
            ),
            scratch / "run",
        )
    result = verdict.run
    if result.port_ready is False:
        where = " or ".join(map(str, ports))
        verdict.findings.append(
            Finding(
                Failure.PROBE,
                f"probe not run: nothing listened on port {where} within {timeout:g} s; container output: {_tail(result.output)}",
            )
        )
    elif result.probe_exit != 0:
        verdict.findings.append(
            Finding(
                Failure.PROBE,
                f"probe {shlex.quote(probe)} failed (exit {result.probe_exit}): "
                f"{_tail(result.probe_output)}; container output: {_tail(result.output)}",
            )
        )


def _tail(text: str, limit: int = 600) -> str:
    text = " | ".join(line for line in text.strip().splitlines() if line.strip())
    return (text[-limit:] if len(text) > limit else text) or "(none)"
