"""The planner on compiled trees: what ships, where, why, and with which metadata."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill.checks import check_plan
from distill.errors import ElfError, PlanError, ProfileError
from distill.plan import EntryKind, Plan
from distill.planner import make_plan
from distill.profile import load_profile
from distill.transports.rootfs import DirView

from helpers.tree import TRIPLET, Tree

LIBDIR = f"/usr/lib/{TRIPLET}"


def plan_for(tree: Tree, text: str, tmp_path: Path, epoch: int | None = None) -> Plan:
    profile_file = tmp_path / "app.yaml"
    profile_file.write_text("schema: distill/v1\nextends: [glibc]\n" + text)
    return make_plan(DirView(tree.root), load_profile(str(profile_file)), epoch=epoch)


def kinds(plan: Plan) -> dict[str, str]:
    return {path: f"{e.kind.value}" + (f" -> {e.target}" if e.target else "") for path, e in plan.entries.items()}


@pytest.fixture
def app(tree: Tree) -> Tree:
    tree.glibc()
    tree.lib(f"{LIBDIR}/libapp.so.1.2", soname="libapp.so.1")
    tree.symlink(f"{LIBDIR}/libapp.so.1", "libapp.so.1.2")
    tree.prog("/usr/bin/app", needs=[f"{LIBDIR}/libapp.so.1"])
    tree.write(
        "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\napp:$6$secret:1000:1000::/home/app:/bin/sh\n"
    )
    tree.write("/etc/group", "root:x:0:\ndaemon:x:1:\napp:x:1000:\nadm:x:4:\n")
    return tree


def test_closure_ships_with_every_symlink_on_the_way(app: Tree, tmp_path: Path) -> None:
    plan = plan_for(app, "binaries: [/usr/bin/app]\n", tmp_path)
    shipped = kinds(plan)
    assert shipped["/usr/bin/app"] == "file"
    assert shipped["/lib"] == "symlink -> usr/lib"
    assert shipped["/lib64"] == "symlink -> usr/lib64"
    assert shipped["/usr/lib64/ld-linux-x86-64.so.2"] == f"symlink -> /lib/{TRIPLET}/ld-linux-x86-64.so.2"
    assert shipped[f"{LIBDIR}/libapp.so.1"] == "symlink -> libapp.so.1.2"
    assert shipped[f"{LIBDIR}/libapp.so.1.2"] == "file"
    assert shipped[f"{LIBDIR}/libc.so.6"] == "file"
    assert shipped["/usr"] == "dir" and shipped["/"] == "dir"
    reason = plan.entries[f"{LIBDIR}/libapp.so.1.2"].reasons[0]
    assert reason.describe() == f"libapp.so.1 <- /usr/bin/app (default path: /lib/{TRIPLET})"
    assert check_plan(plan, DirView(app.root)).errors == []


def test_glibc_hwcaps_variants_are_not_shipped(app: Tree, tmp_path: Path) -> None:
    app.lib(f"{LIBDIR}/glibc-hwcaps/x86-64-v3/libapp.so.1", soname="libapp.so.1")
    plan = plan_for(app, "binaries: [/usr/bin/app]\n", tmp_path)
    assert not any("glibc-hwcaps" in path for path in plan.entries)


def test_setuid_bits_are_stripped_unless_the_profile_sets_a_mode(app: Tree, tmp_path: Path) -> None:
    os.chmod(app.host("/usr/bin/app"), 0o4755)
    app.copy(app.host("/usr/bin/app"), "/usr/bin/helper")
    os.chmod(app.host("/usr/bin/helper"), 0o4755)
    plan = plan_for(app, 'binaries: [/usr/bin/app, {path: /usr/bin/helper, mode: "4755"}]\n', tmp_path)
    assert plan.entries["/usr/bin/app"].mode == 0o755
    assert plan.entries["/usr/bin/helper"].mode == 0o4755


def test_hard_links_stay_hard_links(app: Tree, tmp_path: Path) -> None:
    os.link(app.host("/usr/bin/app"), app.host("/usr/bin/app2"))
    plan = plan_for(app, "binaries: [/usr/bin/app, /usr/bin/app2]\n", tmp_path)
    assert plan.entries["/usr/bin/app"].kind is EntryKind.FILE
    assert (plan.entries["/usr/bin/app2"].kind, plan.entries["/usr/bin/app2"].target) == (EntryKind.HARDLINK, "/usr/bin/app")


def test_exclude_applies_to_globbed_copies(app: Tree, tmp_path: Path) -> None:
    app.write("/etc/app/app.conf", "x")
    app.write("/etc/app/app.conf.bak", "old")
    plan = plan_for(app, "paths:\n  /etc/app/**: {}\nexclude: [/etc/app/*.bak]\n", tmp_path)
    assert "/etc/app/app.conf" in plan.entries and "/etc/app/app.conf.bak" not in plan.entries
    assert plan.excluded == ["/etc/app/app.conf.bak"]


def test_globbed_modules_get_their_own_closures(app: Tree, tmp_path: Path) -> None:
    app.lib(f"{LIBDIR}/libextra.so.3", soname="libextra.so.3")
    app.lib("/usr/lib/app/modules/mod_a.so", needs=[f"{LIBDIR}/libextra.so.3"])
    plan = plan_for(app, "binaries: [/usr/bin/app, {path: '/usr/lib/app/modules/*.so'}]\n", tmp_path)
    assert f"{LIBDIR}/libextra.so.3" in plan.entries
    assert "/usr/lib/app/modules/mod_a.so" in plan.roots


def test_elf_files_copied_by_paths_rules_get_closures(app: Tree, tmp_path: Path) -> None:
    app.lib(f"{LIBDIR}/libextra.so.3", soname="libextra.so.3")
    app.lib("/opt/plugins/p.so", needs=[f"{LIBDIR}/libextra.so.3"])
    plan = plan_for(app, "paths:\n  /opt/plugins/**: {}\n", tmp_path)
    assert f"{LIBDIR}/libextra.so.3" in plan.entries
    assert plan.entries[f"{LIBDIR}/libextra.so.3"].reasons[0].via == "/opt/plugins/p.so"


def test_script_interpreters_and_env_programs_ship_with_their_closures(app: Tree, tmp_path: Path) -> None:
    app.prog("/usr/bin/dash", needs=[f"{LIBDIR}/libapp.so.1"])
    app.symlink("/usr/bin/sh", "dash")
    app.prog("/usr/bin/env")
    app.prog("/usr/bin/python3")
    app.write("/usr/local/bin/start", "#!/bin/sh\nexec app\n", mode=0o755)
    app.write("/usr/local/bin/tool", "#!/usr/bin/env -S python3 -u\nprint(1)\n", mode=0o755)
    plan = plan_for(app, "binaries: [/usr/local/bin/start, /usr/local/bin/tool]\n", tmp_path)
    shipped = kinds(plan)
    assert shipped["/bin"] == "symlink -> usr/bin" and shipped["/usr/bin/sh"] == "symlink -> dash"
    assert shipped["/usr/bin/dash"] == "file" and shipped["/usr/bin/python3"] == "file"
    assert f"{LIBDIR}/libapp.so.1.2" in plan.entries  # dash's own closure
    assert plan.entries["/usr/bin/python3"].reasons[0].detail == "`env python3` of /usr/local/bin/tool (PATH)"


def test_make_symlink_text_and_copy_entries(app: Tree, tmp_path: Path) -> None:
    app.symlink("/var/run", "/run")
    app.mkdir("/run")
    app.write("/usr/share/app/default.conf", "defaults", mode=0o600)
    plan = plan_for(
        app,
        """\
paths:
  /var/run/app/: {make: true, mode: "0750", owner: "app:adm"}
  /var/log/app.log: {symlink: /dev/stdout}
  /etc/motd: {text: "hi\\n"}
  /etc/app.conf: {copy: /usr/share/app/default.conf, mode: "0644"}
""",
        tmp_path,
    )
    made = plan.entries["/run/app"]  # rebased through the source's /var/run link
    assert (made.kind, made.mode, made.uid, made.gid) == (EntryKind.DIR, 0o750, 1000, 4)
    assert kinds(plan)["/var/run"] == "symlink -> /run"
    assert kinds(plan)["/var/log/app.log"] == "symlink -> /dev/stdout"
    assert plan.entries["/etc/motd"].data == b"hi\n" and plan.entries["/etc/motd"].mode == 0o644
    copied = plan.entries["/etc/app.conf"]
    assert (copied.source, copied.mode) == ("/usr/share/app/default.conf", 0o644)


def test_two_rules_writing_one_path_differently_conflict(app: Tree, tmp_path: Path) -> None:
    app.write("/opt/app/conf", "from source")
    with pytest.raises(PlanError) as caught:
        plan_for(app, "paths:\n  /opt/app/**: {}\n  /opt/app/conf: {text: mine}\n", tmp_path)
    assert caught.value.message == (
        f"/opt/app/conf: {tmp_path}/app.yaml: paths['/opt/app/**'] ships a file but "
        f"{tmp_path}/app.yaml: paths['/opt/app/conf'] ships a different file; "
        "exclude one or give the path one rule"
    )


def test_a_profile_rule_beats_a_default(app: Tree, tmp_path: Path) -> None:
    plan = plan_for(app, 'paths:\n  /etc/nsswitch.conf: {text: "hosts: files\\n"}\nbinaries: [/usr/bin/app]\n', tmp_path)
    assert plan.entries["/etc/nsswitch.conf"].data == b"hosts: files\n"


def test_accounts_root_profile_users_and_owners_only(app: Tree, tmp_path: Path) -> None:
    app.write("/srv/data", "x")
    os.chown(app.host("/srv/data"), 1, 4)
    plan = plan_for(app, "paths:\n  /srv/data: {}\naccounts:\n  users: [app]\n  groups: [{name: extra, gid: 2000}]\n", tmp_path)
    passwd = plan.entries["/etc/passwd"].data.decode()
    group = plan.entries["/etc/group"].data.decode()
    assert passwd == "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\napp:x:1000:1000::/home/app:/bin/sh\n"
    assert group == "root:x:0:\ndaemon:x:1:\napp:x:1000:\nadm:x:4:\nextra:x:2000:\n"
    assert "/etc/shadow" not in plan.entries


def test_an_account_the_source_lacks_is_a_profile_error(app: Tree, tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as caught:
        plan_for(app, "accounts:\n  users: [nginx, {name: web, optional: true}]\n", tmp_path)
    assert caught.value.issues == [
        f"{tmp_path}/app.yaml: accounts.users[0]: user 'nginx' is not in the source's /etc/passwd; "
        "give {name, uid, gid, home, shell} to create it, or mark it optional"
    ]


def test_missing_binary_and_non_program_binary_are_profile_errors(app: Tree, tmp_path: Path) -> None:
    app.write("/usr/bin/notes", "just text\n", mode=0o755)
    with pytest.raises(ProfileError) as caught:
        plan_for(app, "binaries: [/usr/bin/ngnix, /usr/bin/notes, {path: /usr/bin/maybe, optional: true}]\n", tmp_path)
    assert caught.value.issues[0].endswith(
        "binaries[0]: /usr/bin/ngnix not found in rootfs:" + str(app.root) + "; check the path or mark it optional"
    )
    with pytest.raises(ProfileError) as caught:
        plan_for(app, "binaries: [/usr/bin/notes]\n", tmp_path)
    assert "is neither an ELF file nor a #! script; list it under paths instead" in caught.value.message


def test_broken_elf_root_is_a_source_error_naming_the_file(app: Tree, tmp_path: Path) -> None:
    app.write("/usr/bin/broken", b"\x7fELF\x02\x01\x01" + b"\0" * 20, mode=0o755)
    with pytest.raises(ElfError) as caught:
        plan_for(app, "binaries: [/usr/bin/broken]\n", tmp_path)
    assert caught.value.message == "/usr/bin/broken: not an ELF file or truncated header"


def test_system_files(app: Tree, tmp_path: Path) -> None:
    app.write("/usr/share/zoneinfo/Etc/UTC", "TZif-utc")
    app.symlink("/usr/share/zoneinfo/UTC", "Etc/UTC")
    app.write("/usr/share/zoneinfo/Europe/Paris", "TZif-paris")
    app.write("/usr/lib/os-release", "ID=debian\n")
    app.symlink("/etc/os-release", "../usr/lib/os-release")
    app.lib(f"{LIBDIR}/libssl.so.3", soname="libssl.so.3")
    app.write("/etc/ssl/certs/ca-certificates.crt", "-----BEGIN CERTIFICATE-----\n")
    app.prog("/usr/bin/tls", needs=[f"{LIBDIR}/libssl.so.3"])
    plan = plan_for(app, "binaries: [/usr/bin/tls]\nsystem: {timezone: Europe/Paris}\n", tmp_path)
    shipped = kinds(plan)
    assert (plan.entries["/tmp"].mode, plan.entries["/run"].mode) == (0o1777, 0o755)
    assert shipped["/etc/localtime"] == "symlink -> /usr/share/zoneinfo/Europe/Paris"
    assert "/usr/share/zoneinfo/Europe/Paris" in plan.entries and "/usr/share/zoneinfo/Etc/UTC" not in plan.entries
    assert shipped["/etc/os-release"] == "symlink -> ../usr/lib/os-release" and "/usr/lib/os-release" in plan.entries
    assert "/etc/ssl/certs/ca-certificates.crt" in plan.entries
    assert plan.entries["/etc/nsswitch.conf"].data.startswith(b"# written by distill")
    quiet = plan_for(app, "binaries: [/usr/bin/app]\nsystem: {tmp: no, run: no, nsswitch: no, timezone: none, os-release: no}\n", tmp_path)
    assert not {"/tmp", "/run", "/etc/nsswitch.conf", "/etc/localtime", "/etc/os-release", "/etc/ssl/certs/ca-certificates.crt"} & set(
        quiet.entries
    )


def test_a_zone_the_source_lacks_is_an_error_but_utc_degrades(app: Tree, tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as caught:
        plan_for(app, "system: {timezone: Asia/Tokyo}\n", tmp_path)
    assert "zone 'Asia/Tokyo' is not in the source" in caught.value.message
    plan = plan_for(app, "system: {timezone: UTC}\n", tmp_path)
    assert "/etc/localtime" not in plan.entries  # without /etc/localtime the output is UTC already
    assert not [w for w in plan.warnings if w.startswith("system.timezone")]


def test_ca_certificates_yes_without_a_bundle_is_an_error(app: Tree, tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as caught:
        plan_for(app, "system: {ca-certificates: yes}\n", tmp_path)
    assert "no CA bundle in the source" in caught.value.message


def test_times_are_clamped_to_source_date_epoch(app: Tree, tmp_path: Path) -> None:
    plan = plan_for(app, "binaries: [/usr/bin/app]\n", tmp_path, epoch=1_000_000)
    assert {e.mtime for e in plan.entries.values()} == {1_000_000}
    unclamped = plan_for(app, "binaries: [/usr/bin/app]\n", tmp_path)
    newest = max(e.mtime or 0 for e in unclamped.entries.values() if e.source)
    assert unclamped.entries["/etc/passwd"].mtime == newest  # generated files: the newest source time


def test_device_nodes_and_whiteout_names_are_never_shipped(app: Tree, tmp_path: Path) -> None:
    os.mkfifo(app.host("/usr/bin/fifo"))
    app.write("/usr/bin/.wh.app", "")
    plan = plan_for(app, "paths:\n  /usr/bin/**: {}\n", tmp_path)
    assert "/usr/bin/fifo" not in plan.entries and "/usr/bin/.wh.app" not in plan.entries
    assert any("/usr/bin/fifo: not shipped: a fifo" in w for w in plan.warnings)
    assert any("/usr/bin/.wh.app: not shipped: a name starting with .wh." in w for w in plan.warnings)
