"""Profiles v1: every built-in loads; bad profiles are refused with the file, key path and fix."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from distill import builtin_index, yamlsafe
from distill.errors import ProfileError
from distill.profile import builtin_profiles, load_profile
from distill.schema import parse_mode

from helpers import REPO


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def load(directory: Path, text: str, name: str = "app.yaml"):  # type: ignore[no-untyped-def]
    write(directory, name, text)
    return load_profile(str(directory / name))


def refused(directory: Path, text: str) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        load(directory, text)
    return caught.value.issues


BUILTINS = sorted(path.stem for path in (REPO / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.description == yaml.safe_load((REPO / "profiles" / f"{name}.yaml").read_text())["description"]


def _spelled(value: object) -> object:
    """A parsed document with each integer as (type, value, how it was written), so two parses compare fully."""
    if isinstance(value, dict):
        return {_spelled(k): _spelled(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_spelled(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return (type(value).__name__, int(value), getattr(value, "text", None))
    return (type(value).__name__, value)


@pytest.mark.parametrize("name", BUILTINS)
def test_the_pre_parsed_index_holds_every_builtin_as_the_checked_parser_reads_it(name: str) -> None:
    """Built-ins are read from profiles/parsed.json while their text matches; it must be fresh and exact."""
    path = REPO / "profiles" / f"{name}.yaml"
    text = path.read_text()
    checked, error = yamlsafe.parse_yaml(text, name)
    assert error is None
    assert builtin_index.carried_by_json(checked), f"{path.name}: write numbers as strings (mode: '0755'), so the index can hold it"
    indexed = builtin_index.indexed_document(path, text)
    assert indexed is not None, f"profiles/parsed.json is stale for {path.name}: run `make profiles`"
    assert _spelled(indexed[0]) == _spelled(checked)
    assert list(indexed[0]) == list(checked)  # key order too: the schema reads it


def test_an_edited_builtin_is_parsed_from_its_yaml_and_integers_stay_out_of_the_index(tmp_path: Path) -> None:
    write(tmp_path, "plain.yaml", "schema: distill/v1\ndescription: first\npaths:\n  /etc/x: {optional: true}\n")
    write(tmp_path, "modes.yaml", "schema: distill/v1\npaths:\n  /run/x: {dir: true, mode: 755}\n")
    _, left_out = builtin_index.write_index(tmp_path)
    assert left_out == ["modes.yaml: holds a number or a date; write it as a string (mode: '0755')"]
    plain = tmp_path / "plain.yaml"
    assert builtin_index.indexed_document(plain, plain.read_text()) == (yaml.safe_load(plain.read_text()),)
    assert builtin_index.indexed_document(plain, plain.read_text().replace("first", "second")) is None
    modes = tmp_path / "modes.yaml"  # JSON would lose that 755 was written without a leading 0
    assert builtin_index.indexed_document(modes, modes.read_text()) is None


def test_a_damaged_index_entry_is_not_used(tmp_path: Path) -> None:
    """An entry of the wrong shape is ignored (the file is parsed from its YAML), not a crash."""
    write(tmp_path, "app.yaml", "schema: distill/v1\ndescription: x\n")
    text = (tmp_path / "app.yaml").read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    for entry in ([1, 2], {"sha256": digest}, {"sha256": 7, "document": {}}, "x"):
        index = tmp_path / builtin_index.INDEX_NAME
        index.write_text(json.dumps({"format": 1, "documents": {"app.yaml": entry}}))
        builtin_index._index.cache_clear()
        assert builtin_index.indexed_document(tmp_path / "app.yaml", text) is None
    index.write_text("{not json")
    builtin_index._index.cache_clear()
    assert builtin_index.indexed_document(tmp_path / "app.yaml", text) is None


def test_builtin_list_is_the_profiles_directory() -> None:
    assert [name for name, _ in builtin_profiles()] == BUILTINS


def test_nginx_profile_keeps_the_contract_keys() -> None:
    """What profiles/nginx.yaml says reaches the loaded profile (its parents' binaries first)."""
    written = yaml.safe_load((REPO / "profiles/nginx.yaml").read_text())
    profile = load_profile("nginx")
    assert profile.files == (*(f"profiles/{parent}.yaml" for parent in written["extends"]), "profiles/nginx.yaml")
    ours = [spec.path for spec, origin in profile.binaries if origin.startswith("profiles/nginx.yaml")]
    assert ours == [b if isinstance(b, str) else b["path"] for b in written["binaries"]]
    assert profile.image.entrypoint == tuple(written["image"]["entrypoint"])
    assert profile.image.expose == tuple(sorted(written["image"]["expose"]))
    assert profile.system.timezone == written["system"]["timezone"]
    assert profile.digest.startswith("sha256:") and len(profile.digest) == 71


def test_full_example_from_the_contract_validates(tmp_path: Path) -> None:
    profile = load(
        tmp_path,
        """\
        schema: distill/v1
        name: nginx
        description: nginx web server
        extends: [glibc]
        binaries:
          - /usr/sbin/nginx
          - {path: /usr/lib/nginx/modules/*.so, optional: true}
        paths:
          /etc/nginx/**: {}
          /var/lib/nginx/: {make: true, mode: "0755", owner: www-data}
          /var/log/nginx/access.log: {symlink: /dev/stdout}
          /etc/motd: {text: "hello\\n", mode: "0644"}
          /etc/app.conf: {copy: /usr/share/app/default.conf}
          /usr/lib/extra.so: {optional: true}
        exclude: [/etc/nginx/*.bak]
        accounts:
          users: [www-data]
          groups: [www-data, {name: app, gid: 1234}]
        system:
          timezone: UTC
          ca-certificates: auto
          nsswitch: yes
        image:
          entrypoint: [/usr/sbin/nginx, -g, daemon off;]
          cmd: []
          env: {}
          workdir: /
          user: root
          expose: [80/tcp, 443/tcp]
          stop-signal: SIGQUIT
        base: scratch
        """,
    )
    kinds = {spec.path: (spec.kind, spec.value, spec.mode) for spec, _ in profile.paths}
    assert kinds["/var/lib/nginx"] == ("make", None, 0o755)
    assert kinds["/var/log/nginx/access.log"] == ("symlink", "/dev/stdout", None)
    assert kinds["/etc/motd"] == ("text", "hello\n", 0o644)
    assert kinds["/etc/app.conf"] == ("copy", "/usr/share/app/default.conf", None)
    assert kinds["/etc/nginx/**"] == ("source", None, None)
    assert profile.exclude == ("/etc/nginx/*.bak",)
    groups = {spec.name: spec.gid for spec, _ in profile.groups}
    assert groups == {"www-data": None, "app": 1234}


CASES = [
    ("missing-schema", "name: x\n", "app.yaml: schema: must be 'distill/v1' (got None)"),
    ("unknown-top-key", "schema: distill/v1\nbinary: [/bin/x]\n", "app.yaml: binary: unknown key; did you mean 'binaries'?"),
    ("wrong-type", "schema: distill/v1\nbinaries: /usr/bin/x\n", "app.yaml: binaries: must be a list, not a string"),
    (
        "two-kinds",
        "schema: distill/v1\npaths:\n  /etc/x: {text: a, symlink: /b}\n",
        "app.yaml: paths['/etc/x']: has 2 kinds (symlink, text); keep exactly one",
    ),
    (
        "unknown-path-key",
        "schema: distill/v1\npaths:\n  /etc/x: {mdoe: '0644'}\n",
        "app.yaml: paths['/etc/x'].mdoe: unknown key; did you mean 'mode'?",
    ),
    (
        "relative-path",
        "schema: distill/v1\npaths:\n  etc/x: {}\n",
        "app.yaml: paths['etc/x']: 'etc/x' must be an absolute path inside the image",
    ),
    (
        "unclean-path",
        "schema: distill/v1\npaths:\n  /etc/../x: {}\n",
        "app.yaml: paths['/etc/../x']: '/etc/../x' is not a clean path (no '.', '..' or '//'); write '/x'",
    ),
    (
        "glob-in-make",
        "schema: distill/v1\npaths:\n  /var/*/x/: {make: true}\n",
        "app.yaml: paths['/var/*/x/']: make entries need a literal path; globs are allowed only for copies from the source",
    ),
    (
        "whiteout-name",
        "schema: distill/v1\npaths:\n  /etc/.wh.passwd: {text: x}\n",
        "app.yaml: paths['/etc/.wh.passwd']: '/etc/.wh.passwd': names starting with .wh. are layer whiteouts and cannot be shipped",
    ),
    (
        "decimal-mode",
        "schema: distill/v1\npaths:\n  /etc/x: {text: a, mode: 755}\n",
        "app.yaml: paths['/etc/x'].mode: 755 is not a mode; write it in octal as a string, e.g. \"0755\"",
    ),
    (
        "bad-timezone",
        "schema: distill/v1\nsystem: {timezone: 'Europe/../x'}\n",
        "app.yaml: system.timezone: 'Europe/../x' is not a zone name such as UTC or Europe/Paris (or `none`)",
    ),
    (
        "ca-value",
        "schema: distill/v1\nsystem: {ca-certificates: sometimes}\n",
        "app.yaml: system.ca-certificates: must be auto, yes or no, not 'sometimes'",
    ),
    (
        "string-entrypoint",
        "schema: distill/v1\nimage: {entrypoint: nginx -g daemon}\n",
        "app.yaml: image.entrypoint: must be a list, not a string",
    ),
    ("env-number", "schema: distill/v1\nimage: {env: {PORT: 80}}\n", "app.yaml: image.env.PORT: must be a string (quote it), not a number"),
    ("bad-port", "schema: distill/v1\nimage: {expose: [http]}\n", "app.yaml: image.expose[0]: 'http' must be a port such as 80 or 80/tcp"),
    (
        "half-account",
        "schema: distill/v1\naccounts: {users: [{name: app, uid: 10}]}\n",
        "app.yaml: accounts.users[0]: a new account needs all of uid, gid; or give only `name` to take it from the source",
    ),
    (
        "alias",
        "schema: distill/v1\nbinaries: &b [/bin/x]\nexclude: *b\n",
        "app.yaml:3:10: aliases are not allowed in profiles; write the value out",
    ),
    ("not-yaml", "schema: [\n", "app.yaml:2:1: expected the node content, but found '<stream end>'"),
    ("empty", "", "app.yaml: profile is empty; start it with `schema: distill/v1`"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in CASES], ids=[c[0] for c in CASES])
def test_bad_profile_is_refused_with_file_key_and_fix(tmp_path: Path, text: str, message: str) -> None:
    issues = refused(tmp_path, text)
    assert any(issue.endswith(message) for issue in issues), issues
    assert all("\n" not in issue for issue in issues)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    issues = refused(tmp_path, "schema: distill/v1\nbinaris: []\npaths:\n  /x: {text: 1}\nsystem: {tmp: maybe}\n")
    assert len(issues) == 3


def test_extends_cycle_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "schema: distill/v1\nextends: [./app.yaml]\n")
    issues = refused(tmp_path, "schema: distill/v1\nextends: [./b.yaml]\n")
    assert any("extends: cycle" in i and "app.yaml -> " in i for i in issues), issues


def test_absolute_extends_is_refused(tmp_path: Path) -> None:
    issues = refused(tmp_path, "schema: distill/v1\nextends: [/etc/passwd]\n")
    assert issues == [f"{tmp_path}/app.yaml: extends[0]: '/etc/passwd' is absolute; use a built-in name or a path relative to this file"]


def test_conflicting_parents_must_be_settled_by_the_child(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "schema: distill/v1\nsystem: {timezone: UTC}\npaths:\n  /etc/x: {text: a}\n")
    write(tmp_path, "b.yaml", "schema: distill/v1\nsystem: {timezone: Europe/Paris}\npaths:\n  /etc/x: {text: b}\n")
    issues = refused(tmp_path, "schema: distill/v1\nextends: [./a.yaml, ./b.yaml]\n")
    assert len(issues) == 2
    assert any("set system.timezone differently" in i for i in issues)
    assert any("set paths['/etc/x'] differently" in i and "a.yaml: paths['/etc/x']" in i for i in issues)
    settled = load(tmp_path, "schema: distill/v1\nextends: [./a.yaml, ./b.yaml]\nsystem: {timezone: UTC}\npaths:\n  /etc/x: {text: c}\n")
    assert settled.system.timezone == "UTC"
    assert [spec.value for spec, _ in settled.paths] == ["c"]


def test_diamond_extends_loads_a_shared_fragment_once(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "schema: distill/v1\nbinaries: [/bin/base]\n")
    write(tmp_path, "a.yaml", "schema: distill/v1\nextends: [./base.yaml]\n")
    write(tmp_path, "b.yaml", "schema: distill/v1\nextends: [./base.yaml]\nbinaries: [/bin/b]\n")
    profile = load(tmp_path, "schema: distill/v1\nextends: [./a.yaml, ./b.yaml]\nbinaries: [/bin/app]\n")
    assert [spec.path for spec, _ in profile.binaries] == ["/bin/base", "/bin/b", "/bin/app"]


def test_unknown_builtin_names_the_known_ones() -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile("ngnix")
    assert caught.value.message.startswith(f"no built-in profile 'ngnix' (did you mean nginx?); known: {', '.join(BUILTINS)}")


def test_profile_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("schema: distill/v1\n" + "# padding\n" * 200_000)
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    assert "larger than 1024 KiB" in caught.value.message


@pytest.mark.parametrize(("value", "mode"), [("0755", 0o755), ("755", 0o755), ("0o1777", 0o1777), ("4755", 0o4755)])
def test_modes_accept_octal_strings(value: str, mode: int) -> None:
    assert parse_mode(value) == mode


def test_modes_accept_yaml_octal_ints(tmp_path: Path) -> None:
    profile = load(tmp_path, "schema: distill/v1\npaths:\n  /etc/x: {text: a, mode: 0640}\n")
    assert [spec.mode for spec, _ in profile.paths] == [0o640]


# -- overriding what a parent gives ----------------------------------------------------------------------


def test_a_child_clears_or_replaces_inherited_lists(tmp_path: Path) -> None:
    write(
        tmp_path,
        "parent.yaml",
        """\
        schema: distill/v1
        extends: [tzdata, gconv]
        binaries: [/bin/a, /bin/b]
        exclude: [/x/**]
        image: {env: {A: "1", B: "2"}, expose: [80]}
        system: {timezone: Europe/Paris, tmp: no}
        """,
    )
    plain = load(tmp_path, "schema: distill/v1\nextends: [./parent.yaml]\nruntime: {tzdata: [UTC]}\n")
    assert plain.runtime.tzdata == ("*", "UTC")  # a list adds to what the parent gives
    child = load(
        tmp_path,
        """\
        schema: distill/v1
        extends: [./parent.yaml]
        binaries: {replace: [/bin/c]}
        exclude: null
        runtime: {tzdata: null, gconv: {replace: [UTF-16]}}
        image: {env: {replace: {C: "3"}}, expose: null}
        system: {timezone: null, tmp: null}
        """,
    )
    assert [spec.path for spec, _ in child.binaries] == ["/bin/c"]
    assert child.exclude == () and child.runtime.tzdata == () and child.runtime.gconv == ("UTF-16",)
    assert child.image.env == {"C": "3"} and child.image.expose == ()
    assert child.system.timezone == "UTC" and child.system.tmp is True  # null: back to the default
    assert load(tmp_path, "schema: distill/v1\nextends: [./parent.yaml]\nruntime: {tzdata: no}\n").runtime.tzdata == ()
    cleared = load(tmp_path, "schema: distill/v1\nextends: [./parent.yaml]\nruntime: null\nimage: null\n")
    assert cleared.runtime.tzdata == () and cleared.runtime.gconv == () and cleared.image.env == {}


def test_an_empty_list_under_an_inherited_one_is_refused_with_the_forms(tmp_path: Path) -> None:
    issues = refused(tmp_path, "schema: distill/v1\nextends: [tzdata]\nruntime: {tzdata: []}\n")
    assert issues == [
        f"{tmp_path}/app.yaml: runtime.tzdata: empty, which adds nothing to what profiles/tzdata.yaml: runtime.tzdata "
        "gives (lists merge as unions); write `null` to clear it, or `{replace: [...]}` to replace it"
    ]


def test_a_cleared_key_settles_a_conflict_between_parents(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "schema: distill/v1\nsystem: {timezone: UTC}\n")
    write(tmp_path, "b.yaml", "schema: distill/v1\nsystem: {timezone: Europe/Paris}\n")
    assert load(tmp_path, "schema: distill/v1\nextends: [./a.yaml, ./b.yaml]\nsystem: {timezone: null}\n").system.timezone == "UTC"


def test_new_keys_shadow_plugins_depends_dangling(tmp_path: Path) -> None:
    profile = load(
        tmp_path,
        """\
        schema: distill/v1
        packages: [{name: nodejs, depends: true}]
        runtime:
          plugins: [{host: /usr/lib/jvm/*/bin/java, paths: [/usr/lib/jvm/*/lib/*.so]}]
        dangling: [/etc/alternatives/**]
        system: {shadow: yes}
        """,
    )
    assert [(spec.name, spec.depends) for spec, _ in profile.packages] == [("nodejs", True)]
    assert [(p.host, p.paths) for p in profile.runtime.plugins] == [("/usr/lib/jvm/*/bin/java", ("/usr/lib/jvm/*/lib/*.so",))]
    assert profile.dangling == ("/etc/alternatives/**",) and profile.system.shadow == "yes"
    assert load_profile("glibc").system.shadow == "auto"


@pytest.mark.parametrize("path", ["/etc/shadow", "/etc/gshadow"])
def test_a_paths_entry_for_a_shadow_file_is_refused(tmp_path: Path, path: str) -> None:
    issues = refused(tmp_path, f"schema: distill/v1\npaths:\n  {path}: {{}}\n")
    assert issues == [
        f"{tmp_path}/app.yaml: paths[{path!r}]: the source's file holds password hashes and never ships; "
        "set `system.shadow: yes` for one with the shipped accounts, locked"
    ]


def test_paths_and_accounts_can_be_replaced_or_cleared(tmp_path: Path) -> None:
    write(
        tmp_path,
        "parent.yaml",
        """\
        schema: distill/v1
        paths: {/etc/a: {}, /etc/b: {text: b}}
        accounts: {users: [www-data], groups: [www-data]}
        """,
    )
    child = load(
        tmp_path, "schema: distill/v1\nextends: [./parent.yaml]\npaths: {replace: {/etc/c: {}}}\naccounts: {users: {replace: [app]}}\n"
    )
    assert [spec.path for spec, _ in child.paths] == ["/etc/c"]
    assert [spec.name for spec, _ in child.users] == ["app"] and [spec.name for spec, _ in child.groups] == ["www-data"]
    cleared = load(tmp_path, "schema: distill/v1\nextends: [./parent.yaml]\npaths: null\naccounts: null\n")
    assert cleared.paths == () and cleared.users == () and cleared.groups == ()


def test_an_app_profile_can_be_extended_and_its_fragment_cleared(tmp_path: Path) -> None:
    profile = load(tmp_path, "schema: distill/v1\nextends: [python3]\nruntime: {tzdata: null}\n")
    assert profile.runtime.tzdata == () and profile.runtime.gconv  # the other fragments stay
