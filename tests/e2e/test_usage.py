"""What a new user meets on the command line (issue 14): outputs that do what they say, progress on a
terminal only, messages whose fix fits what the user wrote, help that agrees with the docs."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REPO
from helpers.cli import run_distill
from helpers.images import DEBIAN12_BASE, distroless_layout
from helpers.registry import Registry, build_image_layout, skopeo_copy
from helpers.tree import TRIPLET, Tree

LIBDIR = f"/usr/lib/{TRIPLET}"


@pytest.fixture
def source(tree: Tree) -> Path:
    """glibc, /usr/bin/app needing libapp.so.1, a root account; no tzdata (like most small sources)."""
    tree.glibc()
    tree.lib(f"{LIBDIR}/libapp.so.1", soname="libapp.so.1")
    tree.prog("/usr/bin/app", needs=[f"{LIBDIR}/libapp.so.1"])
    tree.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    tree.write("/etc/group", "root:x:0:\n")
    return tree.root


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line.removeprefix("distill: error: ") for line in stderr.splitlines() if line.startswith("distill: error: ")]


# -- 1. a base and a rootfs: output ------------------------------------------------------------------


@pytest.mark.rootfs
@pytest.mark.slow
def test_nginx_on_a_base_to_rootfs_runs_in_a_chroot(fat_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = f"oci:{distroless_layout('bookworm', DEBIAN12_BASE)}:latest"
    result = run_distill("nginx", "--from", str(fat_root), "--base", base, "--out", f"rootfs:{out}")
    assert result.code == 0, result.stderr
    assert (out / "usr/sbin/nginx").is_file() and (out / "etc/gai.conf").is_file()  # the base's own files too
    served = json.loads(
        subprocess.run(
            [sys.executable, str(REPO / "examples/netns_http.py"), str(out), "--get", "/", "--", "/usr/sbin/nginx", "-g", "daemon off;"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert served["started"], served["stderr"]
    assert served["responses"]["/"]["status"] == 200
    # 12: the ratio compares the source with what a container gets, the base included
    rows = {line[:28].strip(): line for line in result.stderr.splitlines()}
    assert "with base" in rows[""] and rows["size ratio"].endswith("x smaller")
    assert "warning" not in result.stderr


# -- 2, 3, 7, 11. destinations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "outs",
    [["layer:{d}/app.tar", "docker-archive:{d}/app.tar:app:1"], ["rootfs:{d}/x", "rootfs:{d}/x/"], ["oci:{d}/l:a", "oci:{d}/l:a"]],
    ids=["layer-and-archive", "rootfs-twice", "one-layout-ref-twice"],
)
def test_two_outputs_on_one_path_are_refused(source: Path, tmp_path: Path, outs: list[str]) -> None:
    args = [a for out in outs for a in ("--out", out.format(d=tmp_path / "d"))]
    (tmp_path / "d").mkdir()
    result = run_distill("/usr/bin/app", "--from", str(source), *args)
    assert result.code == 2, result.stderr
    assert "writes the same path as --out" in error_lines(result.stderr)[0]
    assert os.listdir(tmp_path / "d") == []


def test_the_sbom_and_an_output_on_one_path_are_refused(source: Path, tmp_path: Path) -> None:
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", f"layer:{tmp_path}/x.tar", "--sbom", f"{tmp_path}/x.tar")
    assert result.code == 2
    assert (
        error_lines(result.stderr)[0]
        == f"--sbom {tmp_path}/x.tar: the same path as --out layer:{tmp_path}/x.tar; give the SBOM its own path"
    )
    assert not (tmp_path / "x.tar").exists()


def test_one_layout_takes_two_refs(source: Path, tmp_path: Path) -> None:
    result = run_distill(
        "/usr/bin/app", "--from", str(source), "--out", f"oci:{tmp_path / 'l'}:a", "--out", f"oci:{tmp_path / 'l'}:b", "-q"
    )
    assert result.code == 0, result.stderr
    index = json.loads((tmp_path / "l/index.json").read_text())
    assert sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]) == ["a", "b"]


def test_an_unwritable_destination_is_exit_5_not_internal(source: Path) -> None:
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", "rootfs:/proc/distill-x")
    assert result.code == 5, result.stderr
    assert error_lines(result.stderr)[0].startswith(("rootfs:/proc/distill-x", "/proc/distill-x"))
    assert not os.path.lexists("/proc/distill-x")


def test_archives_get_the_same_mode_as_a_layer(source: Path, tmp_path: Path) -> None:
    outs = {"layer": tmp_path / "l.tar", "oci-archive": tmp_path / "o.tar", "docker-archive": tmp_path / "d.tar"}
    args = [a for kind, path in outs.items() for a in ("--out", f"{kind}:{path}")]
    for umask, mode in ((0o022, 0o644), (0o002, 0o664)):
        for path in outs.values():
            path.unlink(missing_ok=True)
        command = [sys.executable, "-m", "distill", "/usr/bin/app", "--from", str(source), *args, "-q"]
        proc = subprocess.run(command, check=False, capture_output=True, text=True, preexec_fn=lambda m=umask: os.umask(m))  # type: ignore[misc]
        assert proc.returncode == 0, proc.stderr
        assert {kind: path.stat().st_mode & 0o777 for kind, path in outs.items()} == dict.fromkeys(outs, mode)


@pytest.mark.parametrize("flag", ["--out", "--sbom"])
def test_no_directory_is_created_that_the_user_did_not_name(source: Path, tmp_path: Path, flag: str) -> None:
    missing = tmp_path / "nonexistent-dir"
    args = ["--out", f"layer:{missing}/x.tar"] if flag == "--out" else ["--out", f"layer:{tmp_path}/x.tar", "--sbom", f"{missing}/sb.json"]
    result = run_distill("/usr/bin/app", "--from", str(source), *args)
    assert result.code == 5, result.stderr
    assert f"the directory {missing} does not exist; create it first" in error_lines(result.stderr)[0]
    assert not missing.exists() and not (tmp_path / "x.tar").exists()


def test_an_existing_sbom_needs_force(source: Path, tmp_path: Path) -> None:
    sbom = tmp_path / "sb.json"
    sbom.write_text("mine")
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", f"layer:{tmp_path}/x.tar", "--sbom", str(sbom))
    assert result.code == 5
    assert error_lines(result.stderr)[0] == f"--sbom {sbom}: already exists; use --force to replace it"
    assert sbom.read_text() == "mine" and not (tmp_path / "x.tar").exists()
    forced = run_distill("/usr/bin/app", "--from", str(source), "--out", f"layer:{tmp_path}/x.tar", "--sbom", str(sbom), "--force", "-q")
    assert forced.code == 0, forced.stderr
    assert json.loads(sbom.read_text())["bomFormat"] == "CycloneDX"


# -- 4. the hints after a run without --out -------------------------------------------------------------


def test_without_out_the_hints_work_and_keep_the_users_tags(source: Path, tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    result = run_distill("/usr/bin/app", "--from", str(source), cwd=work)
    assert result.code == 0, result.stderr
    hint = next(line for line in result.stderr.splitlines() if "no --out given" in line)
    assert "skopeo copy oci:app-distilled:latest docker-daemon:app-distilled:latest" in hint
    pull = hint.split("`podman pull ")[1].split("`")[0]
    with tempfile.TemporaryDirectory(prefix="h14-", dir="/tmp") as short:  # podman wants a runroot under 50 characters
        store = ["--root", f"{short}/root", "--runroot", f"{short}/run", "--storage-driver", "vfs"]
        pulled = subprocess.run(["podman", *store, "pull", pull], check=False, cwd=work, capture_output=True, text=True)
        assert pulled.returncode == 0, pulled.stderr
        subprocess.run(["podman", *store, "system", "reset", "--force"], check=False, capture_output=True)
    copied = subprocess.run(
        ["skopeo", "copy", "oci:app-distilled:latest", f"oci:{tmp_path / 'copy'}:x"], check=False, cwd=work, capture_output=True, text=True
    )
    assert copied.returncode == 0, copied.stderr


def test_an_unsupported_out_transport_is_told_to_copy_to_it(source: Path) -> None:
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", "containers-storage:app:1")
    assert result.code == 2
    assert error_lines(result.stderr)[0].endswith(
        "write --out oci:DIR:TAG and copy it with `skopeo copy oci:DIR:TAG containers-storage:app:1`"
    )


# -- 5. no warning on the happy path ------------------------------------------------------------------


def test_a_source_without_tzdata_runs_without_warnings(source: Path, tmp_path: Path) -> None:
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", f"rootfs:{tmp_path / 'out'}", "--json", "-q")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["warnings"] == [] and result.stderr == ""


def test_a_named_dangling_symlink_still_warns(source: Path, tmp_path: Path) -> None:
    os.symlink("/nowhere", source / "etc/dangling")
    result = run_distill("/usr/bin/app", "--from", str(source), "--path", "/etc/dangling", "--out", f"rootfs:{tmp_path / 'out'}", "-q")
    assert result.code == 0, result.stderr
    assert "distill: warning: command line: --path /etc/dangling: /etc/dangling is a symlink to /nowhere" in result.stderr
    quiet = run_distill("/usr/bin/app", "--from", str(source), "--path", "/etc/**", "--out", f"rootfs:{tmp_path / 'glob'}", "-q")
    assert quiet.code == 0 and "warning" not in quiet.stderr, quiet.stderr  # a glob copies the tree as the source has it


@pytest.mark.rootfs
@pytest.mark.slow
def test_built_in_profiles_have_no_warnings_on_the_fat_roots(fat_root: Path) -> None:
    from test_apps import APP_PACKAGES

    from helpers import fat_rootfs

    apps_root = fat_rootfs(APP_PACKAGES)
    for root, app in [(fat_root, "nginx"), *((apps_root, a) for a in ("nginx", "redis", "postgresql", "python3", "curl", "openssl"))]:
        result = run_distill("explain", app, "--from", str(root), "--json")
        assert result.code == 0, result.stderr
        report = json.loads(result.stdout)
        assert (app, report["warnings"], report["checks"]["warnings"]) == (app, [], []), root
        assert result.stderr == ""


# -- 6. progress on a terminal -------------------------------------------------------------------------


def _on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run distill with stderr on a pseudo-terminal (stdout a pipe); return its exit code and what the terminal got."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "distill", *args], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.communicate()
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, str]]:
    """A registry holding a small app image (one layer), so a pull has layers to show."""
    work = tmp_path_factory.mktemp("small")
    tree = Tree(work / "root").app()
    build_image_layout(tree.root, work / "layout", "1")
    with Registry(work / "registry") as reg:
        skopeo_copy(f"oci:{work / 'layout'}:1", reg.ref("small/app:1"))
        yield reg, f"{reg.host}/small/app:1"


def test_a_pull_shows_per_layer_progress_on_a_terminal_only(
    small_image: tuple[Registry, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, image = small_image
    from helpers.registry import skopeo_inspect

    layers = [d.removeprefix("sha256:")[:12] for d in skopeo_inspect(f"docker://{image}")["Layers"]]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold"))
    code, screen = _on_a_terminal(["/usr/bin/app", "--from", image, "--out", f"layer:{tmp_path / 'a.tar'}"])
    assert code == 0, screen
    for layer in layers:
        assert f"Copying blob {layer}" in screen, screen
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold-quiet"))
    code, screen = _on_a_terminal(["/usr/bin/app", "--from", image, "--out", f"layer:{tmp_path / 'b.tar'}", "--quiet"])
    assert code == 0 and "Copying blob" not in screen, screen
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold-pipe"))
    piped = run_distill("/usr/bin/app", "--from", image, "--out", f"layer:{tmp_path / 'c.tar'}")
    assert piped.code == 0 and "Copying blob" not in piped.stderr and "\x1b" not in piped.stderr, piped.stderr


# -- 8. --json on failure, --allow-missing ---------------------------------------------------------------


def test_json_on_failure_still_writes_a_report(source: Path, tmp_path: Path) -> None:
    os.unlink(source / LIBDIR.lstrip("/") / "libapp.so.1")
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", f"rootfs:{tmp_path / 'out'}", "--json", "-q")
    assert result.code == 4
    report = json.loads(result.stdout)
    assert report["error"]["exit_code"] == 4
    assert report["error"]["messages"] == report["checks"]["errors"] and "libapp.so.1" in report["error"]["messages"][0]
    assert "/usr/bin/app" in {e["path"] for e in report["entries"]}
    usage = run_distill("nginx", "--from", "/nonexistent/fat", "--json")
    assert usage.code == 3 and json.loads(usage.stdout)["error"]["exit_code"] == 3


def test_allow_missing_reports_the_library_as_a_warning(source: Path, tmp_path: Path) -> None:
    os.unlink(source / LIBDIR.lstrip("/") / "libapp.so.1")
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", f"rootfs:{tmp_path / 'out'}", "--json", "-q", "--allow-missing")
    assert result.code == 0, result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert checks["errors"] == [] and any("libapp.so.1" in w for w in checks["warnings"])


# -- 9. hints in the user's words --------------------------------------------------------------------


HINTS = [
    (
        ["/usr/bin/app", "--tz", "Nowhere"],
        "command line: --tz Nowhere: zone 'Nowhere' is not in the source (/usr/share/zoneinfo/Nowhere); name a zone the source has, or pass --tz none",
    ),
    (
        ["/usr/bin/app", "--run-as", "nosuch"],
        "command line: --run-as nosuch: 'nosuch' is not in the source's /etc/passwd; name a user it has, or a numeric uid",
    ),
    (["/usr/bin/app", "--path", "/etc/nope"], "command line: --path /etc/nope: /etc/nope not found in rootfs:{src}; check the path"),
    (
        ["/usr/bin/app", "--binary", "/etc/passwd"],
        "command line: --binary /etc/passwd: /etc/passwd is neither an ELF file nor a #! script; pass it with --path instead",
    ),
    (["/usr/bin/nope"], "command line: APP: /usr/bin/nope not found in rootfs:{src}; check the path"),
]


@pytest.mark.parametrize(("args", "message"), HINTS, ids=["tz", "run-as", "path", "binary", "app"])
def test_a_flag_is_told_about_the_flag(source: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_distill(*args, "--from", str(source), "--out", f"rootfs:{tmp_path / 'out'}")
    assert result.code == 2, result.stderr
    assert error_lines(result.stderr) == [message.format(src=source)]


def test_a_profile_is_told_about_its_keys(source: Path, tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("schema: distill/v1\nname: p\nextends: [glibc]\nbinaries: [/usr/bin/app]\nsystem: {timezone: Nowhere}\n")
    result = run_distill(str(profile), "--from", str(source), "--out", f"rootfs:{tmp_path / 'out'}")
    assert error_lines(result.stderr) == [
        (
            f"{profile}: system.timezone: zone 'Nowhere' is not in the source "
            "(/usr/share/zoneinfo/Nowhere); install tzdata in the source or set `timezone: none`"
        )
    ]


def test_the_readme_profile_is_not_told_to_add_what_it_has(source: Path, tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    text = readme.split("# my-app.yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my-app.yaml").write_text(text)
    tree = Tree(source)
    tree.prog("/usr/local/bin/my-app")
    tree.mkdir("/etc/my-app")
    result = run_distill("./my-app.yaml", "--from", str(source), "--out", f"rootfs:{tmp_path / 'out'}", cwd=tmp_path)
    assert result.code == 2
    lines = error_lines(result.stderr)
    assert lines == [
        (
            f"{tmp_path}/my-app.yaml: accounts.users[0]: user 'app' is not in the source's /etc/passwd; "
            "give {name, uid, gid, home, shell} to create it, or mark it optional"
        )
    ], lines
    (source / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (source / "etc/group").write_text("root:x:0:\napp:x:1000:\n")
    ok = run_distill("./my-app.yaml", "--from", str(source), "--out", f"rootfs:{tmp_path / 'out'}", "-q", cwd=tmp_path)
    assert ok.code == 0, ok.stderr


# -- 10. help, typos ---------------------------------------------------------------------------------


def test_bare_distill_prints_the_help() -> None:
    result = run_distill()
    assert result.code == 0
    assert result.stdout.startswith("Usage: distill") and "explain" in result.stdout and "error" not in result.stderr
    assert "  build " not in result.stdout  # `distill APP` is the documented form


def test_a_mistyped_command_or_flag_gets_a_suggestion(source: Path) -> None:
    command = run_distill("explian", "nginx", "--from", str(source))
    assert command.code == 2
    assert error_lines(command.stderr) == ["no command or built-in profile 'explian'; did you mean `distill explain`?"]
    flag = run_distill("nginx", "--frm", str(source))
    assert flag.code == 2 and "--from" in error_lines(flag.stderr)[0]
    profile = run_distill("ngnix", "--from", str(source))
    assert profile.code == 2 and "(did you mean nginx?)" in error_lines(profile.stderr)[0]


def test_help_names_every_source_transport() -> None:
    result = run_distill("nginx", "--help")
    assert result.code == 0
    assert result.stdout.startswith("Usage: distill [APP] --from SRC")
    text = "".join(result.stdout.split())  # click wraps lines at spaces and hyphens
    for transport in ("docker://REF", "oci:DIR", "oci-archive:FILE", "docker-archive:FILE", "docker-daemon:REF", "rootfs:DIR"):
        assert transport in text.split("--binary")[0], transport
    assert "listsymlinksandparentdirectoriesintheexplaintree" in text


def test_every_flag_is_in_the_docs_options_table_and_back() -> None:
    import re

    import click

    from distill.cli import cli

    table = (REPO / "docs/cli.md").read_text().split("## Options\n\n", 1)[1].split("\n\n", 1)[0]
    documented = {flag for row in table.splitlines()[2:] for flag in re.findall(r"(?<![\w-])--?[a-z][a-z-]*", row.split(" | ")[0])}
    commands = [cli, *cli.commands.values()]
    offered = {
        name
        for command in commands
        for param in command.params
        if isinstance(param, click.Option)
        for name in (*param.opts, *param.secondary_opts)
        if name not in ("-h", "--help", "--version")
    }
    assert documented == offered


# -- 12. surprises on a base; the table ---------------------------------------------------------------


def test_platform_is_refused_for_a_directory(source: Path, tmp_path: Path) -> None:
    result = run_distill("/usr/bin/app", "--from", str(source), "--platform", "linux/arm64", "--out", f"rootfs:{tmp_path / 'o'}")
    assert result.code == 2
    assert error_lines(result.stderr)[0].startswith("--platform linux/arm64: rootfs:")


def test_a_base_user_inherited_is_said(source: Path, tmp_path: Path) -> None:
    base_root = Tree(tmp_path / "base")
    base_root.write("/etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n")
    layout = tmp_path / "base-layout"
    build_image_layout(base_root.root, layout, "1")
    subprocess.run(["umoci", "config", "--image", f"{layout}:1", "--config.user", "65532"], check=True, capture_output=True)
    result = run_distill("/usr/bin/app", "--from", str(source), "--base", f"oci:{layout}:1", "--out", f"oci:{tmp_path / 'o'}:x")
    assert result.code == 0, result.stderr
    assert "distill: warning: the image runs as the base's User 65532" in result.stderr
    chosen = run_distill(
        "/usr/bin/app", "--from", str(source), "--base", f"oci:{layout}:1", "--run-as", "0", "--out", f"oci:{tmp_path / 'o2'}:x"
    )
    assert chosen.code == 0 and "warning" not in chosen.stderr, chosen.stderr


def test_the_table_has_no_trailing_spaces_and_does_not_wrap(source: Path, tmp_path: Path) -> None:
    result = run_distill("/usr/bin/app", "--from", str(source), "--out", f"rootfs:{tmp_path / 'o'}", env={"COLUMNS": "50"})
    assert result.code == 0, result.stderr
    lines = result.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("source: "))
    assert lines[start] == f"source: rootfs:{source}"
    table = lines[start + 1 :]
    assert [line.split()[0] for line in table[1:]] == ["regular", "bytes", "entries", "size"]
    assert all(line == line.rstrip() for line in lines)


def test_podman_spellings_work(source: Path, tmp_path: Path) -> None:
    result = run_distill("/usr/bin/app", "--from", str(source), "-o", f"oci:{tmp_path / 'l'}:x", "-e", "A=1", "--tls-verify", "-q")
    assert result.code == 0, result.stderr
    off = run_distill("/usr/bin/app", "--from", str(source), "-o", f"layer:{tmp_path / 'x.tar'}", "--tls-verify=false", "-q")
    assert off.code == 0, off.stderr


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_run_started_with_a_stream_closed_exits_as_usual(closed: str) -> None:
    """`distill profiles >&-`: the fast exit (distill/__main__.py) steps aside, the ordinary exit copes."""
    fd = 1 if closed == "stdout" else 2
    script = (
        f"import os, subprocess, sys; os.close({fd}); sys.exit(subprocess.run([sys.executable, '-m', 'distill', 'profiles']).returncode)"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr
