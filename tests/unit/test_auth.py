"""Registry auth: the WWW-Authenticate parser against real registry challenges and hostile input, and
credential lookup through podman's and Docker's files and credential helpers, never leaking a secret."""

from __future__ import annotations

import base64
import json
import os
import random
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distill.registry.auth import (
    MAX_HEADER_LENGTH,
    Challenge,
    Credentials,
    CredentialsError,
    find_credentials,
    parse_creds_flag,
    parse_www_authenticate,
)

SECRET = "hunter2:s3cr3t"  # holds a colon, as passwords may
TOKEN = "identity-token-s3cr3t"
SECRETS = ("s3cr3t", base64.b64encode(f"bob:{SECRET}".encode()).decode())  # every secret here holds "s3cr3t"


def b(scheme: str, **params: str) -> Challenge:
    return Challenge(scheme, params)


# --- WWW-Authenticate --------------------------------------------------------------------------------

PARSE_CASES: list[tuple[str, str, list[Challenge]]] = [
    (
        "docker hub",
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"',
        [b("bearer", realm="https://auth.docker.io/token", service="registry.docker.io", scope="repository:library/nginx:pull")],
    ),
    (
        "distribution push scope",
        'Bearer realm="https://registry.example.com/auth",service="registry.example.com",scope="repository:samalba/my-app:pull,push"',
        [
            b(
                "bearer",
                realm="https://registry.example.com/auth",
                service="registry.example.com",
                scope="repository:samalba/my-app:pull,push",
            )
        ],
    ),
    (
        "distribution insufficient scope",
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:samalba/my-app:push",error="insufficient_scope"',
        [
            b(
                "bearer",
                realm="https://auth.example.com/token",
                service="registry.example.com",
                scope="repository:samalba/my-app:push",
                error="insufficient_scope",
            )
        ],
    ),
    ("distribution htpasswd", 'Basic realm="basic-realm"', [b("basic", realm="basic-realm")]),
    (
        "ghcr",
        'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:octo/app:pull"',
        [b("bearer", realm="https://ghcr.io/token", service="ghcr.io", scope="repository:octo/app:pull")],
    ),
    (
        "two challenges",
        'Basic realm="x", Bearer realm="y",service="z"',
        [b("basic", realm="x"), b("bearer", realm="y", service="z")],
    ),
    (
        "rfc 7235 example",
        'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
        [b("newauth", realm="apps", type="1", title='Login to "apps"'), b("basic", realm="simple")],
    ),
    ("token68", "Negotiate abc==", [Challenge("negotiate", {}, "abc==")]),
    ("token68 alphabet", "Negotiate YII+/a-._~b=", [Challenge("negotiate", {}, "YII+/a-._~b=")]),
    (
        "token68 then params",
        'Negotiate   abc==  , Basic realm="x"',
        [Challenge("negotiate", {}, "abc=="), b("basic", realm="x")],
    ),
    ("bare token68 word", "Basic realm", [Challenge("basic", {}, "realm")]),
    ("scheme alone", "Basic", [b("basic")]),
    ("schemes alone", "Basic, Negotiate", [b("basic"), b("negotiate")]),
    ("case folded", 'BEARER Realm="Mixed Case",SERVICE=Reg', [b("bearer", realm="Mixed Case", service="Reg")]),
    ("escapes", r'Basic realm="say \"hi\" \\ the\re"', [b("basic", realm='say "hi" \\ there')]),
    ("comma and equals inside quotes", 'Bearer scope="a=b,c=d", realm="r"', [b("bearer", scope="a=b,c=d", realm="r")]),
    (
        "extra whitespace",
        '  Bearer   realm = "y" ,\tservice=\tz  ',
        [b("bearer", realm="y", service="z")],
    ),
    ("tab after scheme", 'Basic\trealm="x"', [b("basic", realm="x")]),
    (
        "empty list elements",
        ', Basic realm="a",, ,Bearer realm="b", ,',
        [b("basic", realm="a"), b("bearer", realm="b")],
    ),
    ("empty values", 'Bearer realm="",service=""', [b("bearer", realm="", service="")]),
    ("token values", "Bearer realm=foo,service=bar.example", [b("bearer", realm="foo", service="bar.example")]),
    ("obs-text", 'Basic realm="café"', [b("basic", realm="café")]),
]


@pytest.mark.parametrize(("header", "expected"), [case[1:] for case in PARSE_CASES], ids=[case[0] for case in PARSE_CASES])
def test_parse_www_authenticate(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


BAD_HEADERS = {
    "empty": "",
    "blank": "   ",
    "only commas": " , ,, ",
    "unterminated quote": 'Bearer realm="https://auth',
    "missing comma": 'Bearer realm="x" service="y"',
    "missing value": 'Bearer realm="x",service=',
    "double equals": "Bearer realm==x",
    "repeated param": 'Bearer realm="x",REALM="y"',
    "no scheme": 'realm="x"',
    "quoted scheme": '"Bearer"',
    "scheme glued to equals": 'Bearer="x"',
    "control char in quotes": 'Bearer realm="a\x01b"',
    "trailing backslash": 'Bearer realm="a\\',
    "escaped control char": 'Bearer realm="a\\\nb"',
    "newline": 'Bearer realm="x"\r\n',
    "space in token value": "Bearer realm=a b",
    "params after token68": "Negotiate abc==, realm=x",
    "quote after value": 'Basic realm=x"y"',
    "nul": "\x00",
    "non-ascii scheme": 'Bäsic realm="x"',
    "too long": 'Basic realm="' + "a" * MAX_HEADER_LENGTH + '"',
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_bad_headers_raise_a_one_line_value_error(header: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_www_authenticate(header)
    assert "\n" not in str(caught.value)


def test_header_at_the_size_cap_is_accepted() -> None:
    header = 'Basic realm=""'
    header = header[:-1] + "a" * (MAX_HEADER_LENGTH - len(header)) + '"'
    assert len(header) == MAX_HEADER_LENGTH
    assert parse_www_authenticate(header)[0].params["realm"] == "a" * (MAX_HEADER_LENGTH - 14)


def test_random_mutations_only_ever_raise_value_error() -> None:
    rng = random.Random(7235)
    seeds = [case[1] for case in PARSE_CASES] + list(BAD_HEADERS.values())[:-1]
    alphabet = ' \t,="\\\x00\x7f\r\néaZ9=/+~'
    for _ in range(20000):
        text = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            where = rng.randint(0, len(text))
            action = rng.randint(0, 2)
            if action == 0:
                text.insert(where, rng.choice(alphabet))
            elif text and action == 1:
                del text[min(where, len(text) - 1)]
            else:
                text[where:where] = text[: rng.randint(0, len(text))]
        try:
            challenges = parse_www_authenticate("".join(text))
        except ValueError as err:
            assert "\n" not in str(err)
        else:
            assert challenges and all(c.scheme == c.scheme.lower() for c in challenges)


# --- credentials ---------------------------------------------------------------------------------------


def assert_secret_free(*things: object) -> None:
    """The contract for every Credentials and CredentialsError: no secret in str() or repr()."""
    for thing in things:
        for text in (str(thing), repr(thing)):
            for secret in SECRETS:
                assert secret not in text, text


def refused(call: Callable[[], Any], match: str) -> CredentialsError:
    with pytest.raises(CredentialsError, match=match) as caught:
        call()
    error = caught.value
    assert_secret_free(error)
    assert "\n" not in str(error)
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return error


def auth(user: str = "bob", password: str = SECRET) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A HOME with no config at all; tests add the files and variables they need."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home)}


class FakeHelper:
    """Stands in for `docker-credential-*` programs: the helper protocol is the one part with no real
    peer in the test environment (no keychain), so a fake answers here and one test runs a real script."""

    def __init__(self, answers: dict[str, str | subprocess.CalledProcessError]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def __call__(self, program: str, server: str) -> str:
        self.calls.append((program, server))
        answer = self.answers.get(server, not_found())
        if isinstance(answer, subprocess.CalledProcessError):
            raise answer
        return answer


def helper_json(user: str = "bob", secret: str = SECRET, server: str = "") -> str:
    return json.dumps({"ServerURL": server, "Username": user, "Secret": secret})


def not_found() -> subprocess.CalledProcessError:
    return subprocess.CalledProcessError(1, ["helper", "get"], output="credentials not found in native keychain\n")


def test_credentials_repr_hides_the_password() -> None:
    creds = Credentials("bob", SECRET)
    assert repr(creds) == "Credentials(username='bob', password=<redacted>)"
    assert str(creds) == repr(creds)
    assert_secret_free(creds, Credentials("<token>", TOKEN), [creds])


def test_parse_creds_flag_keeps_colons_in_the_password() -> None:
    creds = parse_creds_flag(f"bob:{SECRET}")
    assert creds == Credentials("bob", SECRET)
    assert_secret_free(creds)


@pytest.mark.parametrize("value", ["bob", f":{SECRET}", "bob:", ""])
def test_parse_creds_flag_refuses_incomplete_values(value: str) -> None:
    refused(lambda: parse_creds_flag(value), "--creds needs USER:PASSWORD")


def test_no_files_means_anonymous(env: dict[str, str]) -> None:
    assert find_credentials("quay.io", "org/app", env=env) is None


def test_authfile_argument_is_read(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_json(tmp_path / "auth.json", {"auths": {"quay.io": auth()}})
    assert find_credentials("quay.io", "org/app", authfile=str(path), env=env) == Credentials("bob", SECRET)


def test_missing_authfile_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    refused(lambda: find_credentials("quay.io", "org/app", authfile=str(tmp_path / "nope.json"), env=env), "nope.json")


def test_registry_auth_file_is_the_only_file_read(tmp_path: Path, env: dict[str, str]) -> None:
    write_json(Path(env["HOME"], ".docker", "config.json"), {"auths": {"quay.io": auth("docker")}})
    explicit = write_json(tmp_path / "explicit.json", {"auths": {"ghcr.io": auth("explicit")}})
    env["REGISTRY_AUTH_FILE"] = str(explicit)
    assert find_credentials("ghcr.io", "org/app", env=env) == Credentials("explicit", SECRET)
    assert find_credentials("quay.io", "org/app", env=env) is None
    other = write_json(tmp_path / "argument.json", {"auths": {"quay.io": auth("argument")}})
    assert find_credentials("quay.io", "org/app", authfile=str(other), env=env) == Credentials("argument", SECRET)


def test_default_files_in_podman_order(tmp_path: Path, env: dict[str, str]) -> None:
    env |= {
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
    }
    files = [
        write_json(tmp_path / "run/containers/auth.json", {"auths": {"quay.io": auth("runtime")}}),
        write_json(tmp_path / "config/containers/auth.json", {"auths": {"quay.io": auth("config")}}),
        write_json(tmp_path / "docker/config.json", {"auths": {"quay.io": auth("docker")}}),
    ]
    for path, user in zip(files, ["runtime", "config", "docker"], strict=False):
        assert find_credentials("quay.io", "org/app", env=env) == Credentials(user, SECRET)
        path.unlink()
    assert find_credentials("quay.io", "org/app", env=env) is None


def test_default_files_under_home(env: dict[str, str]) -> None:
    home = Path(env["HOME"])
    write_json(home / ".config/containers/auth.json", {"auths": {"quay.io": auth("podman")}})
    write_json(home / ".docker/config.json", {"auths": {"docker.io": auth("docker")}})
    assert find_credentials("quay.io", "org/app", env=env) == Credentials("podman", SECRET)
    # podman reads on when a file has nothing for this registry: `docker login` still counts
    assert find_credentials("docker.io", "library/nginx", env=env) == Credentials("docker", SECRET)


NAMESPACE_AUTHS = {
    "quay.io": auth("host"),
    "quay.io/org": auth("org"),
    "quay.io/org/app": auth("app"),
    "quay.io/org/app/sub": auth("sub"),
}


@pytest.mark.parametrize(
    ("repository", "user"),
    [("org/app", "app"), ("org/app/sub", "sub"), ("org/other", "org"), ("else/app", "host"), ("org", "org"), ("", "host")],
)
def test_most_specific_namespace_key_wins(tmp_path: Path, env: dict[str, str], repository: str, user: str) -> None:
    path = write_json(tmp_path / "auth.json", {"auths": NAMESPACE_AUTHS})
    assert find_credentials("quay.io", repository, authfile=str(path), env=env) == Credentials(user, SECRET)


def test_a_namespace_key_never_matches_a_sibling_prefix(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_json(tmp_path / "auth.json", {"auths": {"quay.io/org": auth()}})
    assert find_credentials("quay.io", "organisation/app", authfile=str(path), env=env) is None
    assert find_credentials("quay.io.evil.example", "org/app", authfile=str(path), env=env) is None


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("https://registry.example.com/v1/", "registry.example.com"),
        ("http://localhost:5000", "localhost:5000"),
        ("HTTPS://Registry.Example.com", "registry.example.com"),
        ("docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("docker.io", "index.docker.io"),
        ("docker.io", "registry-1.docker.io"),
    ],
)
def test_legacy_and_docker_hub_keys(tmp_path: Path, env: dict[str, str], key: str, registry: str) -> None:
    path = write_json(tmp_path / "auth.json", {"auths": {key: auth()}})
    assert find_credentials(registry, "library/nginx", authfile=str(path), env=env) == Credentials("bob", SECRET)


def test_scheme_keys_only_name_a_whole_registry(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_json(tmp_path / "auth.json", {"auths": {"https://quay.io/org/app": auth("legacy"), "quay.io/org": auth("org")}})
    assert find_credentials("quay.io", "org/app", authfile=str(path), env=env) == Credentials("org", SECRET)
    assert find_credentials("quay.io", "other/app", authfile=str(path), env=env) == Credentials("legacy", SECRET)


def test_exact_key_beats_a_legacy_spelling(tmp_path: Path, env: dict[str, str]) -> None:
    auths = {"https://index.docker.io/v1/": auth("legacy"), "docker.io": auth("podman")}
    path = write_json(tmp_path / "auth.json", {"auths": auths})
    assert find_credentials("docker.io", "library/nginx", authfile=str(path), env=env) == Credentials("podman", SECRET)


def test_identity_token(tmp_path: Path, env: dict[str, str]) -> None:
    entry = auth("bob", "") | {"identitytoken": TOKEN}
    path = write_json(tmp_path / "auth.json", {"auths": {"myregistry.azurecr.io": entry}})
    creds = find_credentials("myregistry.azurecr.io", "app", authfile=str(path), env=env)
    assert creds == Credentials("<token>", TOKEN)
    assert_secret_free(creds)


def test_cred_helper_wins_over_auths(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_json(
        tmp_path / "auth.json",
        {
            "auths": {"123.dkr.ecr.eu-west-1.amazonaws.com/app": auth("file")},
            "credHelpers": {"123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"},
            "credsStore": "desktop",
        },
    )
    helper = FakeHelper({"123.dkr.ecr.eu-west-1.amazonaws.com": helper_json("AWS")})
    creds = find_credentials("123.dkr.ecr.eu-west-1.amazonaws.com", "app", authfile=str(path), env=env, run_helper=helper)
    assert creds == Credentials("AWS", SECRET)
    assert helper.calls == [("docker-credential-ecr-login", "123.dkr.ecr.eu-west-1.amazonaws.com")]


def test_cred_helper_saying_not_found_is_final_for_that_file(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_json(tmp_path / "auth.json", {"auths": {"quay.io": auth()}, "credHelpers": {"quay.io": "pass"}})
    helper = FakeHelper({})
    assert find_credentials("quay.io", "org/app", authfile=str(path), env=env, run_helper=helper) is None
    assert helper.calls == [("docker-credential-pass", "quay.io")]


def test_creds_store_behind_docker_empty_entries(tmp_path: Path, env: dict[str, str]) -> None:
    # `docker login` with a credsStore leaves an empty entry under auths
    env["DOCKER_CONFIG"] = str(tmp_path / "docker")
    write_json(tmp_path / "docker/config.json", {"auths": {"ghcr.io": {}}, "credsStore": "secretservice"})
    helper = FakeHelper({"ghcr.io": helper_json("octo", server="ghcr.io")})
    assert find_credentials("ghcr.io", "octo/app", env=env, run_helper=helper) == Credentials("octo", SECRET)
    assert helper.calls == [("docker-credential-secretservice", "ghcr.io")]


def test_docker_hub_helper_tries_the_legacy_url_then_docker_io(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_json(tmp_path / "auth.json", {"credsStore": "desktop"})
    helper = FakeHelper({"docker.io": helper_json("podman-user")})
    creds = find_credentials("index.docker.io", "library/nginx", authfile=str(path), env=env, run_helper=helper)
    assert creds == Credentials("podman-user", SECRET)
    assert helper.calls == [
        ("docker-credential-desktop", "https://index.docker.io/v1/"),
        ("docker-credential-desktop", "docker.io"),
    ]
    helper = FakeHelper({"https://index.docker.io/v1/": helper_json("docker-user")})
    creds = find_credentials("docker.io", "library/nginx", authfile=str(path), env=env, run_helper=helper)
    assert creds == Credentials("docker-user", SECRET)
    assert len(helper.calls) == 1


def test_helper_with_an_empty_secret_has_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_json(tmp_path / "auth.json", {"credsStore": "desktop"})
    helper = FakeHelper({"quay.io": helper_json("", "")})
    assert find_credentials("quay.io", "org/app", authfile=str(path), env=env, run_helper=helper) is None


HELPER_FAILURES: dict[str, str | subprocess.CalledProcessError] = {
    "exit code 3: gpg: decryption failed": subprocess.CalledProcessError(
        3, ["docker-credential-pass", "get"], output="", stderr="gpg: decryption failed\nmore detail\n"
    ),
    "exit code 1: error getting credentials": subprocess.CalledProcessError(
        1, ["docker-credential-pass", "get"], output="error getting credentials - err: exit status 1\n"
    ),
    "did not answer with JSON": f"Username: bob Secret: {SECRET}",
    "did not answer with JSON holding": json.dumps({"Username": "bob", "Password": SECRET}),
}


@pytest.mark.parametrize(("message", "answer"), HELPER_FAILURES.items(), ids=range(len(HELPER_FAILURES)))
def test_helper_failures_name_the_helper(
    tmp_path: Path, env: dict[str, str], message: str, answer: str | subprocess.CalledProcessError
) -> None:
    path = str(write_json(tmp_path / "auth.json", {"credHelpers": {"quay.io": "pass"}}))
    helper = FakeHelper({"quay.io": answer})
    error = refused(lambda: find_credentials("quay.io", "a/b", authfile=path, env=env, run_helper=helper), "-credential-pass")
    assert message in str(error)


def test_missing_helper_program(tmp_path: Path, env: dict[str, str]) -> None:
    path = write_json(tmp_path / "auth.json", {"credsStore": "not-installed"})
    env["PATH"] = str(tmp_path / "empty")
    refused(lambda: find_credentials("quay.io", "a/b", authfile=str(path), env=env), "docker-credential-not-installed is not on")


@pytest.mark.parametrize("name", ["../../bin/sh", "", "a b", 7])
def test_helper_names_cannot_escape(tmp_path: Path, env: dict[str, str], name: object) -> None:
    path = write_json(tmp_path / "auth.json", {"credHelpers": {"quay.io": name}})
    helper = FakeHelper({})
    refused(lambda: find_credentials("quay.io", "a/b", authfile=str(path), env=env, run_helper=helper), "credential helper name")
    assert helper.calls == []


BAD_FILES: dict[str, str] = {
    "is not valid JSON": '{"auths": {"quay.io": {"auth": "' + SECRET,
    "does not hold a JSON object": json.dumps([SECRET]),
    "auths is not a JSON object": json.dumps({"auths": [SECRET]}),
    "auths\\['quay.io'\\] is not a JSON object": json.dumps({"auths": {"quay.io": SECRET}}),
    "must be strings": json.dumps({"auths": {"quay.io": {"auth": 42, "password": SECRET}}}),
    "not base64": json.dumps({"auths": {"quay.io": {"auth": f"bob:{SECRET}"}}}),
    "not base64 of USER:PASSWORD": json.dumps({"auths": {"quay.io": {"auth": base64.b64encode(b"bob-s3cr3t").decode()}}}),
    "not base64 of": json.dumps({"auths": {"quay.io": {"auth": base64.b64encode(b"bob:\xffs3cr3t").decode()}}}),
    "credHelpers is not a JSON object": json.dumps({"credHelpers": "pass"}),
}


@pytest.mark.parametrize(("message", "text"), BAD_FILES.items(), ids=range(len(BAD_FILES)))
def test_malformed_files_name_the_file_not_the_secret(tmp_path: Path, env: dict[str, str], message: str, text: str) -> None:
    path = tmp_path / "broken-auth.json"
    path.write_text(text)
    error = refused(lambda: find_credentials("quay.io", "org/app", authfile=str(path), env=env), message)
    assert str(path) in str(error)


def test_unreadable_default_file_is_an_error(env: dict[str, str]) -> None:
    Path(env["HOME"], ".docker", "config.json").mkdir(parents=True)
    refused(lambda: find_credentials("quay.io", "org/app", env=env), "cannot read auth file .*config.json")


def test_empty_file_holds_nothing(env: dict[str, str]) -> None:
    home = Path(env["HOME"])
    (home / ".config/containers").mkdir(parents=True)
    (home / ".config/containers/auth.json").write_text("\n")
    write_json(home / ".docker/config.json", {"auths": {"quay.io": auth()}})
    assert find_credentials("quay.io", "org/app", env=env) == Credentials("bob", SECRET)


def test_real_helper_program_end_to_end(tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "docker-credential-test"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 2\n'
        "server=$(cat)\n"
        'case "$server" in\n'
        f'  registry.example.com) printf \'{{"ServerURL":"%s","Username":"bob","Secret":"%s"}}\\n\' '
        f"\"$server\" '{SECRET}' ;;\n"
        "  broken.example.com) echo 'cannot reach the keyring' >&2; exit 4 ;;\n"
        "  *) echo 'credentials not found in native keychain'; exit 1 ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    env["PATH"] = path
    monkeypatch.setenv("PATH", path)
    authfile = str(write_json(tmp_path / "auth.json", {"credHelpers": {"registry.example.com": "test"}, "credsStore": "test"}))

    creds = find_credentials("registry.example.com", "team/app", authfile=authfile, env=env)
    assert creds == Credentials("bob", SECRET)
    assert_secret_free(creds)
    assert find_credentials("quay.io", "team/app", authfile=authfile, env=env) is None
    error = refused(lambda: find_credentials("broken.example.com", "app", authfile=authfile, env=env), "docker-credential-test")
    assert "exit code 4: cannot reach the keyring" in str(error)
