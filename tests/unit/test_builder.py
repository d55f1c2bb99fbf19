"""The plan builder and the collectors on their own: a builder, a context and a tree, no planner.

Each collector is called as the planner calls it (`collector(builder, context)`), so what it adds,
and why, is checked without the rest of a planning run around it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distill import pkgmeta, runtime, system
from distill.accounts import AccountDb, parse_group, parse_passwd
from distill.builder import PlanBuilder, PlanContext
from distill.errors import PlanError, ProfileError
from distill.loader import Loader
from distill.plan import Entry, EntryKind, Plan, Reason, ReasonKind
from distill.profile import load_profile
from distill.transports.rootfs import DirView
from distill.view import View

from helpers.tree import TRIPLET, Tree


def setup(tree: Tree, tmp_path: Path, profile_text: str = "", *, roots: tuple[str, ...] = ()) -> tuple[PlanBuilder, PlanContext]:
    """A builder and a context for `tree`, with the closures of `roots` in the plan (as the planner leaves them)."""
    view: View = DirView(tree.root)
    profile_file = tmp_path / "p.yaml"
    profile_file.write_text("schema: distill/v1\n" + profile_text)
    profile = load_profile(str(profile_file))
    loader = Loader(view)
    accounts = AccountDb(parse_passwd(view.read_bytes("/etc/passwd").decode()), parse_group(view.read_bytes("/etc/group").decode()))
    builder = PlanBuilder(view, Plan(source=view.name, profile=profile.name), profile.exclude)
    for root in roots:
        builder.plan.closures.append(loader.closure(root))
    return builder, PlanContext(view, profile, loader, accounts)


def reasons(builder: PlanBuilder, path: str) -> list[tuple[ReasonKind, str]]:
    return [(r.kind, r.detail) for r in builder.plan.entries[path].reasons]


# -- the builder -----------------------------------------------------------------------------------


def test_a_profile_rule_beats_a_dependency_at_the_same_path(tree: Tree, tmp_path: Path) -> None:
    builder, _ = setup(tree.app(), tmp_path)
    builder.ship("/usr/bin/app", Reason(ReasonKind.NEEDED, "app"))
    rule = builder.add(
        Entry("/usr/bin/app", EntryKind.FILE, 0o755, data=b"mine", size=4, explicit=True), Reason(ReasonKind.PROFILE, "paths[/usr/bin/app]")
    )
    assert builder.plan.entries["/usr/bin/app"] is rule
    assert [r.kind for r in rule.reasons] == [ReasonKind.NEEDED, ReasonKind.PROFILE]


def test_two_rules_writing_one_path_differently_are_a_conflict(tree: Tree, tmp_path: Path) -> None:
    builder, _ = setup(tree.app(), tmp_path)
    builder.generate("/etc/motd", b"one", Reason(ReasonKind.SYSTEM, "first"))
    with pytest.raises(PlanError, match="/etc/motd: first ships a file but second ships a different file"):
        builder.generate("/etc/motd", b"two", Reason(ReasonKind.SYSTEM, "second"))


def test_shipping_an_excluded_path_records_it_and_adds_nothing(tree: Tree, tmp_path: Path) -> None:
    builder, _ = setup(tree.app(), tmp_path, "exclude: [/usr/bin/*]\n")
    assert builder.ship("/usr/bin/app", Reason(ReasonKind.ROOT, "x")) is None
    assert builder.plan.excluded == ["/usr/bin/app"] and "/usr/bin/app" not in builder.plan.entries


def test_a_generated_file_lands_where_the_sources_links_put_it(tree: Tree, tmp_path: Path) -> None:
    tree.app()
    tree.mkdir("/usr/etc")
    tree.symlink("/etc/conf", "../usr/etc")
    builder, _ = setup(tree, tmp_path)
    entry = builder.generate("/etc/conf/app.ini", b"x=1\n", Reason(ReasonKind.SYSTEM, "test"))
    assert entry.path == "/usr/etc/app.ini"
    assert builder.plan.entries["/etc/conf"].kind is EntryKind.SYMLINK
    assert reasons(builder, "/etc/conf") == [(ReasonKind.LINK, "symlink on the way")]


def test_issues_are_collected_then_raised_together(tree: Tree, tmp_path: Path) -> None:
    builder, _ = setup(tree.app(), tmp_path)
    builder.raise_issues()  # nothing yet
    builder.issue("first problem")
    builder.issue("second problem")
    with pytest.raises(ProfileError) as caught:
        builder.raise_issues()
    assert caught.value.issues == ["first problem", "second problem"]


# -- collectors ------------------------------------------------------------------------------------


def test_system_files_for_a_glibc_program(tree: Tree, tmp_path: Path) -> None:
    builder, context = setup(tree.app(), tmp_path, roots=("/usr/bin/app",))
    system.add_system_files(builder, context)
    entries = builder.plan.entries
    assert (entries["/tmp"].kind, entries["/tmp"].mode) == (EntryKind.DIR, 0o1777)
    assert entries["/run"].kind is EntryKind.DIR
    assert entries["/etc/nsswitch.conf"].data == system.NSSWITCH.encode()
    assert "/etc/localtime" not in entries  # the source has no zone files: UTC without a file
    assert builder.plan.warnings == []  # UTC was asked for, and UTC is what the output has: nothing to warn about


def test_no_nsswitch_without_a_glibc_closure(tree: Tree, tmp_path: Path) -> None:
    builder, context = setup(tree.app(), tmp_path)
    system.add_system_files(builder, context)
    assert "/etc/nsswitch.conf" not in builder.plan.entries


def test_account_files_hold_root_the_profile_accounts_and_file_owners(tree: Tree, tmp_path: Path) -> None:
    tree.app()
    tree.write(
        "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/usr/sbin/nologin\nmail:x:8:8::/var/mail:/usr/sbin/nologin\n"
    )
    tree.write("/etc/group", "root:x:0:\nweb:x:33:\nmail:x:8:\n")
    builder, context = setup(tree, tmp_path)
    builder.add(Entry("/srv", EntryKind.DIR, 0o755, uid=33, gid=33), Reason(ReasonKind.PROFILE, "paths[/srv]"))
    system.add_account_files(builder, context)
    assert builder.plan.entries["/etc/passwd"].data == (b"root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/usr/sbin/nologin\n")
    assert builder.plan.entries["/etc/group"].data == b"root:x:0:\nweb:x:33:\n"


def test_an_image_user_the_source_lacks_is_an_issue(tree: Tree, tmp_path: Path) -> None:
    builder, context = setup(tree.app(), tmp_path, "image: {user: ghost}\n")
    with pytest.raises(ProfileError, match="image.user: 'ghost' is not an account"):
        system.add_account_files(builder, context)


def test_runtime_tzdata_ships_the_zones_asked_for(tree: Tree, tmp_path: Path) -> None:
    tree.app()
    tree.write("/usr/share/zoneinfo/Europe/Paris", b"TZif2 paris")
    tree.write("/usr/share/zoneinfo/Asia/Tokyo", b"TZif2 tokyo")
    builder, context = setup(tree, tmp_path, "runtime: {tzdata: [Europe/Paris]}\n")
    runtime.add_runtime_files(builder, context)
    assert reasons(builder, "/usr/share/zoneinfo/Europe/Paris") == [(ReasonKind.RUNTIME, "runtime.tzdata: Europe/Paris")]
    assert "/usr/share/zoneinfo/Asia/Tokyo" not in builder.plan.entries


def test_package_records_for_the_packages_that_contribute(tree: Tree, tmp_path: Path) -> None:
    tree.app()
    tree.write(
        "/var/lib/dpkg/status",
        "Package: app\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\n\n"
        "Package: other\nStatus: install ok installed\nVersion: 2.0\nArchitecture: amd64\n",
    )
    tree.write("/var/lib/dpkg/info/app.list", "/usr\n/usr/bin\n/usr/bin/app\n")
    tree.write("/var/lib/dpkg/info/app.md5sums", "0123456789abcdef0123456789abcdef  usr/bin/app\n")
    tree.write("/var/lib/dpkg/info/other.list", "/usr/bin/other\n")
    builder, context = setup(tree, tmp_path)
    builder.ship("/usr/bin/app", Reason(ReasonKind.ROOT, "binaries[0]"))
    pkgmeta.add_package_metadata(builder, context)
    assert builder.plan.packages == {"app": ("/usr/bin/app",)}
    assert builder.plan.entries["/var/lib/dpkg/status.d/app.md5sums"].data == b"0123456789abcdef0123456789abcdef  usr/bin/app\n"
    assert "/var/lib/dpkg/status.d/other" not in builder.plan.entries


def test_package_records_find_owners_through_links_odd_names_and_line_ends(tree: Tree, tmp_path: Path) -> None:
    """Owners are matched on canonical paths (a list naming /lib/... on a merged-/usr root), names with regex
    characters match literally, any line end str.splitlines knows ends a listed path, and md5sums lines are
    kept only for the shipped file, not for a same-named one elsewhere."""
    tree.app()  # merged /usr: /lib -> usr/lib
    tree.write(f"/usr/lib/{TRIPLET}/libstdc++.so.6", b"lib")
    tree.write("/usr/share/misc/libstdc++.so.6", b"a namesake")
    tree.write("/usr/bin/tool", b"tool")
    tree.write(
        "/var/lib/dpkg/status",
        "".join(f"Package: {name}\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n" for name in ("cxx", "misc", "tools")),
    )
    tree.write("/var/lib/dpkg/info/cxx.list", f"/lib\n/lib/{TRIPLET}\n/lib/{TRIPLET}/libstdc++.so.6\n")
    tree.write(
        "/var/lib/dpkg/info/cxx.md5sums",
        f"0123456789abcdef0123456789abcdef  lib/{TRIPLET}/libstdc++.so.6\nfedcba9876543210fedcba9876543210  usr/share/misc/libstdc++.so.6\n",
    )
    tree.write("/var/lib/dpkg/info/misc.list", "/usr/share/misc/libstdc++.so.6\n/usr/share/misc/libstdcXXso.6\n")
    tree.write("/var/lib/dpkg/info/tools.list", "/usr/bin\r\n/usr/bin/tool\r\n")
    builder, context = setup(tree, tmp_path)
    for path in (f"/usr/lib/{TRIPLET}/libstdc++.so.6", "/usr/bin/tool"):
        builder.ship(path, Reason(ReasonKind.ROOT, "binaries[0]"))
    pkgmeta.add_package_metadata(builder, context)
    assert builder.plan.packages == {"cxx": (f"/usr/lib/{TRIPLET}/libstdc++.so.6",), "tools": ("/usr/bin/tool",)}
    md5sums = builder.plan.entries["/var/lib/dpkg/status.d/cxx.md5sums"].data
    assert md5sums == f"0123456789abcdef0123456789abcdef  lib/{TRIPLET}/libstdc++.so.6\n".encode()
