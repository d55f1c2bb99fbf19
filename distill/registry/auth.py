"""Registry authentication: parse `WWW-Authenticate` challenges and find the user's credentials.

Credentials come from the same places podman, skopeo and Docker read, so a `podman login` or
`docker login` just works. No secret is ever put in a message, a repr or an exception chain.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "MAX_HEADER_LENGTH",
    "IDENTITY_TOKEN_USER",
    "HELPER_TIMEOUT",
    "Challenge",
    "parse_www_authenticate",
    "Credentials",
    "CredentialsError",
    "parse_creds_flag",
    "find_credentials",
    "run_credential_helper",
]

MAX_HEADER_LENGTH = 16 * 1024  # far above any real challenge; bounds the work a hostile server can cause
IDENTITY_TOKEN_USER = "<token>"  # Docker's user name meaning "the password is an OAuth2 refresh token"
HELPER_TIMEOUT = 60.0  # seconds; a helper may wait on a keyring unlock, but must not hang us forever

# --- WWW-Authenticate (RFC 7235 section 4.1, RFC 9110 section 11) ---------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_OWS = re.compile(r"[ \t]*")
_LIST_GAP = re.compile(r"[ \t,]*")  # list elements may be empty: `a, ,b`
_QDTEXT = re.compile(r'[^\x00-\x08\x0a-\x1f\x7f"\\]*')
_QUOTABLE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class Challenge:
    """One challenge; `token68` holds the bare credential form (`Negotiate abc==`), which has no params."""

    scheme: str
    params: dict[str, str]
    token68: str | None = None


class _Scanner:
    """A cursor over the header; every failure is a one-line ValueError giving the offset."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip(self, pattern: re.Pattern[str]) -> str:
        match = pattern.match(self.text, self.pos)
        assert match is not None  # only used with patterns that match the empty string
        self.pos = match.end()
        return match.group()

    def fail(self, problem: str) -> NoReturn:
        raise ValueError(f"bad WWW-Authenticate header: {problem} at offset {self.pos}")

    def token(self, what: str) -> str:
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            self.fail(f"expected {what}")
        self.pos = match.end()
        return match.group()

    def expect(self, char: str) -> None:
        if self.peek() != char:
            self.fail(f"expected {char!r}")
        self.pos += 1

    def quoted(self) -> str:
        self.expect('"')
        parts = []
        while True:
            parts.append(self.skip(_QDTEXT))
            char = self.peek()
            if char == '"':
                self.pos += 1
                return "".join(parts)
            if char == "\\":
                escaped = self.text[self.pos + 1 : self.pos + 2]
                if not _QUOTABLE.fullmatch(escaped):
                    self.fail("bad escape in quoted string")
                parts.append(escaped)
                self.pos += 2
            elif char == "":
                self.fail("unterminated quoted string")
            else:
                self.fail("control character in quoted string")

    def param_follows(self) -> bool:
        """After a comma: `name=` continues this challenge, anything else starts the next one."""
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            return False
        after = _OWS.match(self.text, match.end())
        assert after is not None
        return self.text[after.end() : after.end() + 1] == "="

    def end_of_element(self) -> None:
        """Consume the comma(s) closing a list element, or stop at the end of the header."""
        self.skip(_OWS)
        if self.peek():
            self.expect(",")
            self.skip(_LIST_GAP)


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Every challenge in a `WWW-Authenticate` value, in order; ValueError if it is malformed."""
    if len(header) > MAX_HEADER_LENGTH:
        raise ValueError(f"WWW-Authenticate header longer than {MAX_HEADER_LENGTH} characters")
    scanner = _Scanner(header)
    scanner.skip(_LIST_GAP)
    challenges = []
    while scanner.peek():
        challenges.append(_challenge(scanner))
    if not challenges:
        raise ValueError("WWW-Authenticate header holds no challenge")
    return challenges


def _challenge(scanner: _Scanner) -> Challenge:
    scheme = scanner.token("an auth scheme").lower()
    spaced = scanner.skip(_OWS)
    if scanner.peek() in ("", ","):
        scanner.end_of_element()
        return Challenge(scheme, {})
    if not spaced:
        scanner.fail("expected a space after the auth scheme")
    start = scanner.pos
    if token68 := _TOKEN68.match(scanner.text, start):
        scanner.pos = token68.end()
        scanner.skip(_OWS)
        if scanner.peek() in ("", ","):
            scanner.end_of_element()
            return Challenge(scheme, {}, token68.group())
        scanner.pos = start
    params: dict[str, str] = {}
    while True:
        name = scanner.token("a parameter name").lower()
        scanner.skip(_OWS)
        scanner.expect("=")
        scanner.skip(_OWS)
        value = scanner.quoted() if scanner.peek() == '"' else scanner.token("a parameter value")
        if name in params:
            scanner.fail(f"parameter {name!r} repeated")
        params[name] = value
        scanner.end_of_element()
        if not scanner.peek() or not scanner.param_follows():
            return Challenge(scheme, params)


# --- credentials ---------------------------------------------------------------------------------

_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HUB_LEGACY_SERVER = "https://index.docker.io/v1/"  # where `docker login` stores Docker Hub credentials
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # so a config file cannot name an arbitrary path
_NOT_FOUND = "credentials not found"

RunHelper = Callable[[str, str], str]


@dataclass(frozen=True, repr=False)
class Credentials:
    """A user name and password; `password` is an identity token when `username` is `<token>`."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<redacted>)"


class CredentialsError(Exception):
    """Credentials were given or configured but cannot be used; names the flag, file or helper, never a secret."""


def parse_creds_flag(value: str) -> Credentials:
    """`USER:PASSWORD` as podman's `--creds` takes it; the password may itself hold colons."""
    username, colon, password = value.partition(":")
    if not colon:
        raise CredentialsError("--creds needs USER:PASSWORD, but has no ':'")
    if not username:
        raise CredentialsError("--creds needs USER:PASSWORD, but the user name is empty")
    if not password:
        raise CredentialsError("--creds needs USER:PASSWORD, but the password is empty")
    return Credentials(username, password)


def run_credential_helper(program: str, server: str, env: Mapping[str, str] | None = None) -> str:
    """Docker's helper protocol: `PROGRAM get`, server on stdin, JSON on stdout; CalledProcessError on failure."""
    result = subprocess.run(
        [program, "get"],
        input=server,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        env=dict(os.environ if env is None else env),
        timeout=HELPER_TIMEOUT,
        check=True,
    )
    return result.stdout


def find_credentials(
    registry: str,
    repository: str,
    *,
    authfile: str | None = None,
    env: Mapping[str, str] | None = None,
    run_helper: RunHelper | None = None,
) -> Credentials | None:
    """Credentials for `registry/repository` from podman's and Docker's files, or None for anonymous access.

    An explicit `authfile` (or `$REGISTRY_AUTH_FILE`) is the only file read and must exist. Otherwise the
    default files are read in podman's order and the first that yields credentials wins. `run_helper(program,
    server)` returns a helper's stdout or raises CalledProcessError (with `output`), as `run_credential_helper` does.
    """
    env = os.environ if env is None else env
    run = run_helper if run_helper is not None else partial(run_credential_helper, env=env)
    host = _normalize_key(registry)
    scopes = _scopes(host, repository)
    explicit = authfile or env.get("REGISTRY_AUTH_FILE")
    if explicit:
        config = _load(Path(explicit))
        if config is None:
            raise CredentialsError(f"auth file {explicit} does not exist")
        return _from_config(config, Path(explicit), host, scopes, run)
    for path in _default_files(env):
        config = _load(path)
        creds = None if config is None else _from_config(config, path, host, scopes, run)
        if creds is not None:
            return creds
    return None


def _default_files(env: Mapping[str, str]) -> Iterator[Path]:
    home = env.get("HOME")
    if runtime := env.get("XDG_RUNTIME_DIR"):
        yield Path(runtime, "containers", "auth.json")
    if config_home := env.get("XDG_CONFIG_HOME") or (home and os.path.join(home, ".config")):
        yield Path(config_home, "containers", "auth.json")
    if docker := env.get("DOCKER_CONFIG") or (home and os.path.join(home, ".docker")):
        yield Path(docker, "config.json")


def _normalize_key(key: str) -> str:
    """`https://host/v1/` is Docker's spelling of a whole registry; other keys are `host[/namespace/...]`."""
    for scheme in ("https://", "http://"):
        if key[: len(scheme)].lower() == scheme:
            key = key[len(scheme) :].split("/", 1)[0]
            break
    host, slash, rest = key.partition("/")
    host = host.lower()
    return (_HUB if host in _HUB_ALIASES else host) + slash + rest


def _scopes(host: str, repository: str) -> list[str]:
    """`host/a/b`, `host/a`, `host`: the keys an auth file may use for this repository, most specific first."""
    parts = [part for part in repository.split("/") if part]
    return ["/".join([host, *parts[:depth]]) for depth in range(len(parts), -1, -1)]


def _load(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise CredentialsError(f"cannot read auth file {path}: {err.strerror}") from None
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError):
        raise CredentialsError(f"auth file {path} is not valid JSON") from None
    if not isinstance(config, dict):
        raise CredentialsError(f"auth file {path} does not hold a JSON object")
    return config


def _section(config: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    section = config.get(name) or {}
    if not isinstance(section, dict):
        raise CredentialsError(f"auth file {path}: {name} is not a JSON object")
    return section


def _from_config(config: dict[str, Any], path: Path, host: str, scopes: list[str], run: RunHelper) -> Credentials | None:
    """Podman's precedence within one file: a registry's credHelper, then auths, then credsStore."""
    for key, helper in _section(config, "credHelpers", path).items():
        if _normalize_key(key) == host:
            return _from_helper(_helper_program(helper, path, f"credHelpers[{key!r}]"), host, run)
    auths = _section(config, "auths", path)
    for scope in scopes:
        for key in sorted(auths, key=lambda name: name != scope):  # the exact spelling before a legacy one
            if _normalize_key(key) == scope and (creds := _from_entry(auths[key], path, key)) is not None:
                return creds
    if store := config.get("credsStore"):
        return _from_helper(_helper_program(store, path, "credsStore"), host, run)
    return None


def _from_entry(entry: Any, path: Path, key: str) -> Credentials | None:
    """None for an empty entry, which Docker writes next to a credsStore."""
    where = f"auth file {path}: auths[{key!r}]"
    if not isinstance(entry, dict):
        raise CredentialsError(f"{where} is not a JSON object")
    token, auth = entry.get("identitytoken"), entry.get("auth")
    if not isinstance(token, str | None) or not isinstance(auth, str | None):
        raise CredentialsError(f"{where}: auth and identitytoken must be strings")
    if token:
        return Credentials(IDENTITY_TOKEN_USER, token)
    if not auth:
        return None
    try:
        decoded = base64.b64decode(auth, validate=True).decode("utf-8")
    except ValueError:
        decoded = ""
    username, colon, password = decoded.partition(":")
    if not colon:
        raise CredentialsError(f"{where}.auth is not base64 of USER:PASSWORD")
    return Credentials(username, password)


def _helper_program(name: Any, path: Path, where: str) -> str:
    if not isinstance(name, str) or not _HELPER_NAME.fullmatch(name):
        raise CredentialsError(f"auth file {path}: {where} is not a credential helper name")
    return f"docker-credential-{name}"


def _from_helper(program: str, host: str, run: RunHelper) -> Credentials | None:
    """Ask the helper; for Docker Hub try `docker login`'s legacy server URL, then podman's `docker.io`."""
    for server in (_HUB_LEGACY_SERVER, _HUB) if host == _HUB else (host,):
        try:
            answer = run(program, server)
        except subprocess.CalledProcessError as err:
            if _NOT_FOUND in _text(err.output):
                continue
            detail = (_text(err.stderr).strip() or _text(err.output).strip()).split("\n", 1)[0][:200]
            reason = f": {detail}" if detail else ""
            raise CredentialsError(f"credential helper {program} failed with exit code {err.returncode}{reason}") from None
        except subprocess.TimeoutExpired:
            raise CredentialsError(f"credential helper {program} did not answer within {HELPER_TIMEOUT:g}s") from None
        except FileNotFoundError:
            raise CredentialsError(f"credential helper {program} is not on PATH") from None
        except OSError as err:
            raise CredentialsError(f"cannot run credential helper {program}: {err.strerror}") from None
        return _parse_helper_answer(answer, program)
    return None


def _text(output: str | bytes | None) -> str:
    return output.decode("utf-8", "replace") if isinstance(output, bytes) else output or ""


def _parse_helper_answer(answer: str, program: str) -> Credentials | None:
    """`{"ServerURL", "Username", "Secret"}`; an empty Secret means the helper has nothing for us."""
    try:
        data = json.loads(answer)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("Username"), str) or not isinstance(data.get("Secret"), str):
        raise CredentialsError(f"credential helper {program} did not answer with JSON holding Username and Secret")
    return Credentials(data["Username"], data["Secret"]) if data["Secret"] else None
