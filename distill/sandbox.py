"""Run a program of the source, confined: the one place distill executes what a source holds.

`learn` and `verify --run` only, on the user's explicit request. The program runs in fresh mount,
PID and network namespaces (`unshare`), on an overlay whose lower layer is the source root (so the
source is never written), chrooted onto it (`learn`, under `strace -f`) or as an OCI bundle under
`runc` (`verify --run`); never on the host's `/`. Only the namespace's own loopback exists, so a
server it starts is reachable by the probe and nothing else. A probe, when given, runs outside the
root but inside that network namespace; everything is killed at the time limit.

The parent re-executes this module under `unshare` with a JSON spec; the child writes a JSON result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import UsageError

__all__ = ["Run", "RunResult", "confined_run", "STRACE_SYSCALLS", "DOCKER_CAPABILITIES"]

# what learn records: file lookups, process creation and exec, credential changes
STRACE_SYSCALLS = "%file,%process,%creds,fchdir"

# Docker's default capability set (moby/oci/caps/defaults.go)
DOCKER_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]


@dataclass
class Run:
    """What to run: `argv` inside `root` (a directory), how, and what to do beside it."""

    root: str
    argv: list[str]
    mode: str  # "strace": chroot under strace -ff; "runc": an OCI bundle under runc
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    probe: str | None = None  # a shell command run outside the root, in the same network namespace
    wait_ports: list[int] = field(default_factory=list)  # start the probe once one of these TCP ports accepts connections
    timeout: float = 60.0


@dataclass
class RunResult:
    exit: int | None  # the program's exit status; None when it was stopped
    timed_out: bool
    output: str  # the program's stdout and stderr, tail
    probe_exit: int | None = None
    probe_output: str = ""
    port_ready: bool | None = None
    trace_dir: str | None = None  # strace -ff files (mode "strace"), in the caller's scratch directory


def confined_run(run: Run, scratch: Path) -> RunResult:
    """Run `run` confined (see the module doc); `scratch` holds the overlay and the traces."""
    for tool in ("unshare", "mount", "ip", *(("strace", "chroot") if run.mode == "strace" else ("runc",))):
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} is not installed; install it (util-linux, iproute2, strace or runc) to run the source's programs")
    if os.geteuid() != 0:
        raise UsageError("running the source's programs needs root (namespaces, an overlay mount)")
    if any(c in run.root for c in ",:\n"):
        raise UsageError(f"{run.root}: the overlay cannot use a root path containing ',' or ':'; move or link it")
    spec_path = scratch / "spec.json"
    result_path = scratch / "result.json"
    spec_path.write_text(json.dumps({**run.__dict__, "scratch": str(scratch), "result": str(result_path)}))
    command = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--net",
        "--pid",
        "--fork",
        "--mount-proc",
        "--",
        sys.executable,
        "-m",
        "distill.sandbox",
        str(spec_path),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=run.timeout + 120)
    if not result_path.exists():
        raise UsageError(f"the confined run could not start: {(proc.stderr or proc.stdout).strip()[-500:] or 'no output'}")
    return RunResult(**json.loads(result_path.read_text()))


# -- inside the namespaces ---------------------------------------------------------------------------


def _overlay(lower: str, scratch: Path) -> Path:
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for directory in (upper, work, merged):
        directory.mkdir()
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
        check=True,
        capture_output=True,
    )
    return merged


def _runtime_mounts(root: Path) -> None:
    """/proc (this PID namespace's) and a minimal /dev, as a container runtime gives them: a tmpfs
    with the host's null, zero, full, random, urandom and tty bound in, the standard links, and shm."""
    proc, dev = root / "proc", root / "dev"
    for directory in (proc, dev):
        directory.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True, capture_output=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", str(dev)], check=True, capture_output=True)
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        (dev / name).touch()
        subprocess.run(["mount", "--bind", f"/dev/{name}", str(dev / name)], check=True, capture_output=True)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, dev / name)
    (dev / "shm").mkdir(mode=0o1777)
    (dev / "shm").chmod(0o1777)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _bundle(spec: dict[str, Any], merged: Path, scratch: Path) -> Path:
    """An OCI runtime bundle over the overlay: runc's default spec, the image's process, our network namespace."""
    bundle = scratch / "bundle"
    bundle.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True, capture_output=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": str(merged), "readonly": False}
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
    process = config["process"]
    process.update(
        terminal=False,
        args=spec["argv"],
        cwd=spec["cwd"],
        env=[f"{k}={v}" for k, v in spec["env"].items()],
        user={"uid": spec["uid"], "gid": spec["gid"]},
    )
    process.pop("rlimits", None)
    process["capabilities"] = {kind: list(DOCKER_CAPABILITIES) for kind in ("bounding", "effective", "permitted")}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def _stop_all(keep: set[int]) -> None:
    """SIGTERM, then SIGKILL, every process of this PID namespace but `keep`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep and int(p) != os.getpid()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}/stat") and _alive(p) for p in pids):
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] not in ("Z", "X")
    except OSError:
        return False


# chroot, chdir, drop to the wanted ids and exec: what learn's trace starts from (events before the chroot are ignored)
_ENTER = """
import os, sys
root, cwd, uid, gid, argv = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
os.chroot(root)
os.chdir(cwd)
if gid or uid:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
path = os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
error = "not found"
for directory in [""] if "/" in argv[0] else path.split(":"):
    try:
        os.execve(os.path.join(directory, argv[0]) if directory else argv[0], argv, os.environ)
    except OSError as exc:
        error = exc.strerror
sys.stderr.write("distill learn: cannot run " + argv[0] + " in the source: " + str(error) + chr(10))
sys.exit(127)
"""


def _inside(spec: dict[str, Any]) -> dict[str, Any]:
    scratch = Path(spec["scratch"])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
    merged = _overlay(spec["root"], scratch)
    output = open(scratch / "output.log", "w+b")
    trace_dir = None
    if spec["mode"] == "strace":
        _runtime_mounts(merged)
        trace_dir = scratch / "trace"
        trace_dir.mkdir()
        command = [
            "strace",
            "-ff",
            "-qq",
            "-y",
            "-o",
            str(trace_dir / "t"),
            "-e",
            f"trace={STRACE_SYSCALLS}",
            "-e",
            "signal=none",
            "--",
            sys.executable,
            "-c",
            _ENTER,
            str(merged),
            spec["cwd"],
            str(spec["uid"]),
            str(spec["gid"]),
            *spec["argv"],
        ]
        program = subprocess.Popen(command, stdout=output, stderr=output, env=spec["env"])
    else:
        bundle = _bundle(spec, merged, scratch)
        state = scratch / "runc-state"
        state.mkdir()
        command = ["runc", "--root", str(state), "run", "--bundle", str(bundle), f"distill-verify-{os.getpid()}"]
        program = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    deadline = time.monotonic() + spec["timeout"]
    result: dict[str, Any] = {"exit": None, "timed_out": False, "output": "", "trace_dir": str(trace_dir) if trace_dir else None}
    if spec["wait_ports"]:
        ready = False
        while time.monotonic() < deadline and program.poll() is None and not ready:
            ready = any(_port_open(port) for port in spec["wait_ports"])
            if not ready:
                time.sleep(0.1)
        result["port_ready"] = ready
    if spec["probe"] is not None:
        try:
            probe = subprocess.run(
                ["sh", "-c", spec["probe"]], capture_output=True, stdin=subprocess.DEVNULL, timeout=max(1.0, deadline - time.monotonic())
            )
            result["probe_exit"] = probe.returncode
            result["probe_output"] = (probe.stdout + probe.stderr).decode("utf-8", "replace")[-2000:]
        except subprocess.TimeoutExpired:
            result["probe_exit"], result["probe_output"] = None, "the probe did not finish within the time limit"
        _stop_all({program.pid})
    try:
        result["exit"] = program.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        result["timed_out"] = spec["probe"] is None
        _stop_all({program.pid})
    try:
        program.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _stop_all(set())
        program.wait()
    if spec["probe"] is not None:
        result["exit"] = None
    output.seek(0)
    result["output"] = output.read()[-4000:].decode("utf-8", "replace")
    output.close()
    return result


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = _inside(spec)
    fd, temp = tempfile.mkstemp(dir=spec["scratch"])
    with os.fdopen(fd, "w") as out:
        json.dump(result, out)
    os.rename(temp, spec["result"])


if __name__ == "__main__":
    main()
