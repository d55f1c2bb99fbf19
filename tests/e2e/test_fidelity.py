"""Apps nobody profiled, distilled with the profile a new user writes from docs/profiles.md, each probed
in a chroot with /proc and /dev (with /dev/shm) as a container runtime gives them (tests/probes.py).

One fat Debian 12 root (mmdebstrap, cached) holds them all, and no tzdata: locales-all (locale files that
are links into other locales), squid (a directory link into squid-langpack), openjdk-17-jre-headless
(plugins that link back to the JVM), sudo (PAM's account check reads /etc/shadow), nodejs (its builtins
in other packages), libnss-myhostname (an NSS module named by the source's nsswitch.conf), python3."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from helpers import fat_rootfs
from helpers.cli import Result, run_distill
from helpers.probes import run_probe

pytestmark = [pytest.mark.rootfs, pytest.mark.slow]

PACKAGES = ("locales-all", "squid", "openjdk-17-jre-headless", "sudo", "nodejs", "libnss-myhostname", "python3")
JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin"


@pytest.fixture(scope="module")
def fat() -> Path:
    return fat_rootfs(PACKAGES)


def distill(source: Path, tmp_path: Path, profile: str, *extra: str) -> tuple[Result, Path]:
    """Distill `profile` (YAML text, or a built-in name) into tmp_path/out."""
    if "\n" in profile:
        tmp_path.mkdir(parents=True, exist_ok=True)
        path = tmp_path / "app.yaml"
        path.write_text("schema: distill/v1\n" + profile)
        profile = str(path)
    out = tmp_path / "out"
    return run_distill(profile, "--from", str(source), "--out", f"rootfs:{out}", "--force", *extra), out


def command(out: Path, *argv: str, env: dict[str, str] | None = None, user: str | None = None) -> dict:  # type: ignore[type-arg]
    return run_probe("command", str(out), json.dumps({"argv": list(argv), "env": env or {}, "user": user}))


def test_locale_files_linked_into_other_locales_ship_their_targets(fat: Path, tmp_path: Path) -> None:
    profile = textwrap.dedent("""\
        extends: [glibc]
        binaries: [/usr/bin/date]
        runtime: {locales: [de_DE.UTF-8]}
        """)
    result, out = distill(fat, tmp_path, profile)
    assert result.code == 0, result.stderr
    assert (out / "usr/lib/locale/de_DE.utf8/LC_CTYPE").is_symlink() and (out / "usr/lib/locale/de_AT.utf8/LC_CTYPE").is_file()
    run = command(out, "/usr/bin/date", "-u", "-d", "@0", "+%A %B", env={"LC_ALL": "de_DE.UTF-8"})
    assert run["stdout"] == "Donnerstag Januar\n", run
    why = run_distill("explain", str(tmp_path / "app.yaml"), "--from", str(fat), "/usr/lib/locale/de_AT.utf8/LC_CTYPE")
    assert "<- target of a shipped symlink <- /usr/lib/locale/de_DE.utf8/LC_CTYPE" in why.stdout, why.stdout


def test_squid_serves_its_error_templates_through_a_directory_link(fat: Path, tmp_path: Path) -> None:
    profile = textwrap.dedent("""\
        extends: [glibc]
        binaries: [/usr/sbin/squid, /usr/lib/squid/*]       # the helpers squid starts (unlinkd, ...)
        paths:
          /etc/squid/**: {}
          /usr/share/squid/**: {}                            # errors -> ../squid-langpack: its tree ships too
          /var/spool/squid/: {make: true, owner: proxy}
          /var/log/squid/: {make: true, owner: proxy}
        accounts: {users: [proxy]}
        """)
    result, out = distill(fat, tmp_path, profile)
    assert result.code == 0, result.stderr
    assert (out / "usr/share/squid/errors").is_symlink() and (out / "usr/share/squid-langpack/de/ERR_CONNECT_FAIL").is_file()
    probe = run_probe("squid", str(out))
    assert probe["started"], probe["stderr"]
    assert (probe["status"], probe["error"]) == ("HTTP/1.1 503 Service Unavailable", "ERR_CONNECT_FAIL 111")
    assert not probe["missing_template"] and probe["german"]


def test_jvm_plugins_are_checked_in_the_process_of_java(fat: Path, tmp_path: Path) -> None:
    base = textwrap.dedent(f"""\
        extends: [glibc]
        packages: [openjdk-17-jre-headless]
        binaries: [{JAVA}/java, {JAVA}/keytool]
        """)
    alone, _ = distill(fat, tmp_path, base, "--json")
    assert alone.code == 4
    errors = [line for line in alone.stderr.splitlines() if line.startswith("distill: error: libjvm.so (needed by")]
    assert len(errors) == len(set(errors)) >= 10  # each plugin's missing libjvm.so once, not once per root reaching it
    listed = json.loads(alone.stdout)["error"]["messages"]
    assert len(listed) == len(set(listed)) >= len(errors) and "runtime.plugins" in listed[0]  # all, with the hint
    plugins = base + textwrap.dedent("""\
        runtime:
          plugins:
            - host: /usr/lib/jvm/*/bin/java                 # java loads lib/server/libjvm.so, then the lib/*.so that need it
              paths: [/usr/lib/jvm/*/lib/**/*.so]
        """)
    result, out = distill(fat, tmp_path, plugins)
    assert result.code == 0, result.stderr
    (out / "tmp").mkdir(exist_ok=True)
    made = command(
        out,
        f"{JAVA}/keytool",
        "-genkeypair",
        "-alias",
        "probe",
        "-keyalg",
        "EC",
        "-dname",
        "CN=probe",
        "-storepass",
        "probe-pass",
        "-keystore",
        "/tmp/probe.p12",
    )
    assert made["exit"] == 0, made
    listed = command(out, f"{JAVA}/keytool", "-list", "-storepass", "probe-pass", "-keystore", "/tmp/probe.p12")
    assert listed["exit"] == 0 and "Your keystore contains 1 entry" in listed["stdout"], listed


def test_sudo_switches_user_with_a_generated_locked_shadow(fat: Path, tmp_path: Path) -> None:
    profile = textwrap.dedent("""\
        extends: [glibc]
        binaries:
          - {path: /usr/bin/sudo, mode: "4755"}
          - /usr/bin/id
        packages: [{name: sudo, depends: true}]              # the sudoers plugin; PAM's modules (libpam-modules)
        paths:
          /etc/sudoers: {}
          /etc/sudoers.d/**: {}
          /etc/pam.d/**: {}
          /etc/security/**: {}
        accounts: {users: [nobody]}
        """)
    result, out = distill(fat, tmp_path, profile)
    assert result.code == 0, result.stderr
    shadow = (out / "etc/shadow").read_text()
    assert shadow == "root:*:::::::\nnobody:*:::::::\n" and (out / "etc/gshadow").exists()
    run = command(out, "/usr/bin/sudo", "-u", "nobody", "/usr/bin/id", "-un")
    assert (run["exit"], run["stdout"]) == (0, "nobody\n"), run
    without, out2 = distill(fat, tmp_path / "no-shadow", profile + "system: {shadow: no}\n")
    assert without.code == 0 and not (out2 / "etc/shadow").exists()
    refused = command(out2, "/usr/bin/sudo", "-u", "nobody", "/usr/bin/id", "-un")
    assert refused["exit"] != 0 and "account validation failure" in refused["stderr"]
    verbatim, _ = distill(fat, tmp_path / "verbatim", profile + "paths:\n  /etc/shadow: {}\n")
    assert verbatim.code == 2 and "never ships; set `system.shadow: yes`" in verbatim.stderr


def test_node_gets_the_packages_its_builtins_live_in(fat: Path, tmp_path: Path) -> None:
    script = 'const acorn = require("acorn"); console.log(typeof fetch, acorn.parse("1+1", {ecmaVersion: 2020}).type)'
    profile = textwrap.dedent("""\
        extends: [glibc]
        binaries: [/usr/bin/node]
        packages: [{name: nodejs, depends: true}]
        """)
    result, out = distill(fat, tmp_path, profile, "--json", "-q")
    assert result.code == 0, result.stderr
    run = command(out, "/usr/bin/node", "-e", script)
    assert (run["exit"], run["stdout"]) == (0, "function Program\n"), run
    reasons = {r["detail"] for e in json.loads(result.stdout)["entries"] for r in e["reasons"] if r["kind"] == "package"}
    assert any(d.endswith(": node-undici, which libnode108 depends on (node-undici (>= 5.0.0~))") for d in reasons), reasons
    assert not any(": libc6," in d or ": libssl3," in d for d in reasons)  # the closure takes what loads
    # without the dependencies (and without runtime.node, which ships the externalized built-ins) node aborts
    plain, out2 = distill(fat, tmp_path / "plain", profile.replace("{name: nodejs, depends: true}", "nodejs") + "runtime: {node: no}\n")
    assert plain.code == 0
    broken = command(out2, "/usr/bin/node", "-e", script)
    assert broken["exit"] != 0 and "Cannot load externalized builtin" in broken["stderr"]
    # runtime.node (on by default) lets node start; the acorn package a script requires still needs depends
    builtins, out3 = distill(fat, tmp_path / "builtins", profile.replace("{name: nodejs, depends: true}", "nodejs"))
    assert builtins.code == 0
    started = command(out3, "/usr/bin/node", "-e", script)
    assert started["exit"] != 0 and "Cannot find module 'acorn'" in started["stderr"], started


def test_an_nss_module_named_by_the_sources_nsswitch_ships_with_it(fat: Path, tmp_path: Path) -> None:
    profile = textwrap.dedent("""\
        extends: [glibc]
        binaries: [/usr/bin/getent]
        paths:
          /etc/nsswitch.conf: {}                               # the source's: hosts: files myhostname dns
        """)
    result, out = distill(fat, tmp_path, profile)
    assert result.code == 0, result.stderr
    assert (out / "usr/lib/x86_64-linux-gnu/libnss_myhostname.so.2").is_file()
    run = command(out, "/usr/bin/getent", "hosts", "app.localhost")
    assert run["exit"] == 0 and run["stdout"].split()[0] in ("127.0.0.1", "::1"), run
    off, out2 = distill(fat, tmp_path / "off", "extends: [glibc]\nbinaries: [/usr/bin/getent]\nsystem: {nsswitch: no}\n")
    assert off.code == 0 and not (out2 / "etc/nsswitch.conf").exists() and not list(out2.rglob("libnss_*"))


def test_python3_without_tzdata_works_and_says_zoneinfo_has_no_zones(fat: Path, tmp_path: Path) -> None:
    result, out = distill(fat, tmp_path, "python3")
    assert result.code == 0, result.stderr
    assert "runtime.tzdata: the source has no time-zone database" in result.stderr
    script = (
        "import sqlite3, ssl, zoneinfo\nfrom multiprocessing import shared_memory\n"
        "segment = shared_memory.SharedMemory(create=True, size=16)  # in /dev/shm, which the runtime mounts\n"
        "segment.close(); segment.unlink()\n"
        "print(len(zoneinfo.available_timezones()), sqlite3.connect(':memory:').execute('select 1').fetchone()[0])"
    )
    run = command(out, "/usr/bin/python3", "-c", script)
    assert (run["exit"], run["stdout"]) == (0, "0 1\n"), run
