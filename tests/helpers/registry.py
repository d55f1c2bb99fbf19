"""Real container registries for tests: a `docker-registry` (CNCF distribution 2.8) child process
with no auth, HTTP basic auth or Docker token auth, an in-process token server, and helpers that
build OCI image layouts with the real `umoci` and move images around with the real `skopeo`.

This is a plain helper module (not a conftest): tests import it and own the lifetimes, normally
with `with Registry(tmp_path) as registry:` inside a fixture so that every process is stopped
even when a test fails. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGISTRY_BINARY = "/usr/bin/docker-registry"
TOKEN_SERVICE = "distill-test-registry"
TOKEN_ISSUER = "distill-test-issuer"
DEFAULT_BASIC_USERS = {"distill": "distill-password"}
DEFAULT_TOKEN_USERS = {"alice": "alice-password", "reader": "reader-password"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller must cope with a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (header, claims) of a JWT, without verifying anything: for assertions in tests."""
    header, claims, _signature = token.split(".")
    return json.loads(_b64url_decode(header)), json.loads(_b64url_decode(claims))


def libtrust_key_id(public_key_der: bytes) -> str:
    """The key ID docker/libtrust derives from a DER SubjectPublicKeyInfo: the first 240 bits of
    its SHA-256, base32 without padding, in 12 colon-separated groups of 4 characters.
    distribution 2.8 indexes the keys of its `rootcertbundle` certificates by this ID, which is
    what it looks up when a token header carries only `kid`."""
    encoded = base64.b32encode(hashlib.sha256(public_key_der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"<cannot read {path}: {error}>"
    return data[-limit:].decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# Token server
# --------------------------------------------------------------------------------------------


@dataclass
class TokenRequest:
    """One request the token server saw. The password is never recorded."""

    method: str
    path: str
    query: dict[str, list[str]]
    authenticated: bool
    user: str | None
    status: int = 0
    granted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def scopes(self) -> list[str]:
        return self.query.get("scope", [])


def _parse_scopes(values: Iterable[str]) -> list[tuple[str, str, list[str]]]:
    """`repository:library/x:pull,push` (several may share one parameter, separated by spaces)
    as (type, name, actions). The type may carry a class, `repository(plugin)`, which is kept."""
    parsed = []
    for value in values:
        for scope in value.split():
            kind, sep, rest = scope.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not kind or not name:
                raise ValueError(f"malformed scope {scope!r}")
            parsed.append((kind, name, [a for a in actions.split(",") if a]))
    return parsed


class _TokenHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    owner: TokenServer


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    server: _TokenHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.owner._handle(self)

    def do_POST(self) -> None:
        self.server.owner._handle(self)

    def send_json(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


class TokenRefused(RuntimeError):
    """The token server answered `fetch_token` with an HTTP error."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"token server answered HTTP {status}: {body}")
        self.status = status
        self.body = body


class TokenServer:
    """A Docker registry token server (https://distribution.github.io/distribution/spec/auth/token/)
    on 127.0.0.1 and a free port.

    `GET /token?service=S&scope=T:NAME:ACTIONS[&scope=...]`, with optional HTTP basic auth
    checked against `users`, answers `{"token", "access_token", "expires_in", "issued_at"}`. The
    JWT is RS256-signed with a key generated at start; its header carries `x5c` (the self-signed
    certificate, which is also the registry's `rootcertbundle` at `cert_path`) and `kid` (the
    libtrust ID of the key), so distribution can verify it either way.

    Policy: anonymous callers get `pull` only on repositories whose name starts with one of
    `public_prefixes`; authenticated users get exactly what they ask for, except that users in
    `pull_only_users` never get `push` (it is silently dropped, as real token servers do).
    Every request is appended to `requests`.
    """

    def __init__(
        self,
        tmp_dir: Path,
        *,
        users: Mapping[str, str] | None = None,
        public_prefixes: Iterable[str] = ("library/",),
        pull_only_users: Iterable[str] = (),
        service: str = TOKEN_SERVICE,
        issuer: str = TOKEN_ISSUER,
        expires_in: int = 300,
        refresh_tokens: Mapping[str, str] | None = None,
    ) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = dict(DEFAULT_TOKEN_USERS if users is None else users)
        self.public_prefixes = tuple(public_prefixes)
        self.pull_only_users = frozenset(pull_only_users)
        self.refresh_tokens = dict(refresh_tokens or {})  # OAuth2 refresh token -> user (POST /token)
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()

        tmp_dir = Path(tmp_dir)
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "distill test token signer")])
        public_key = self._key.public_key()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = tmp_dir / "token-signer.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()
        self.kid = libtrust_key_id(public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))

        self._server = _TokenHTTPServer(("127.0.0.1", 0), _TokenHandler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.realm = f"{self.url}/token"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"token-server-{self.port}", daemon=True
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop_http_server, self._server, self._thread)

    # -- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        self._finalizer()

    def __enter__(self) -> TokenServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- tokens ---------------------------------------------------------------------------

    def grant(self, user: str | None, scopes: Iterable[str]) -> list[dict[str, Any]]:
        """The `access` claim the policy gives `user` (None: anonymous) for `scopes`."""
        granted: dict[tuple[str, str], list[str]] = {}
        for kind, name, actions in _parse_scopes(scopes):
            if user is None:
                public = kind == "repository" and name.startswith(self.public_prefixes)
                allowed = ["pull"] if public and "pull" in actions else []
            else:
                allowed = list(actions)
                if user in self.pull_only_users:
                    allowed = [a for a in allowed if a not in ("push", "*", "delete")]
            if allowed:
                merged = granted.setdefault((kind, name), [])
                merged.extend(a for a in allowed if a not in merged)
        return [{"type": kind, "name": name, "actions": actions} for (kind, name), actions in granted.items()]

    def make_token(
        self,
        user: str | None,
        access: list[dict[str, Any]],
        *,
        audience: str | None = None,
        lifetime: int | None = None,
        x5c: bool = True,
        kid: bool = True,
    ) -> str:
        """A signed JWT with the given claims (tests may drop `x5c` or `kid` to probe the
        registry's verification)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header: dict[str, Any] = {"typ": "JWT", "alg": "RS256"}
        if kid:
            header["kid"] = self.kid
        if x5c:
            header["x5c"] = [self._x5c]
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            # distribution 2.8 unmarshals `aud` into a Go string: an array is a malformed token.
            "aud": audience or self.service,
            "exp": now + (self.expires_in if lifetime is None else lifetime),
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def fetch_token(
        self, scopes: Iterable[str] = (), *, username: str | None = None, password: str | None = None, service: str | None = None
    ) -> str:
        """Ask this server for a token over HTTP, like a client would; raises on refusal."""
        query = [("service", service or self.service)] + [("scope", s) for s in scopes]
        request = urllib.request.Request(f"{self.realm}?{urllib.parse.urlencode(query)}")
        if username is not None:
            basic = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)["token"]
        except urllib.error.HTTPError as error:
            with error:
                body = error.read().decode("utf-8", "replace")
            raise TokenRefused(error.code, body) from None

    # -- HTTP -------------------------------------------------------------------------------

    def _authenticate(self, header: str | None) -> tuple[bool, str | None, bool]:
        """(credentials offered, user, valid)."""
        if not header:
            return False, None, True
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return True, None, False
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return True, None, False
        expected = self.users.get(user)
        valid = expected is not None and secrets.compare_digest(expected.encode(), password.encode())
        return True, user, valid

    def _handle(self, handler: _TokenHandler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        offered, user, valid = self._authenticate(handler.headers.get("Authorization"))
        record = TokenRequest(
            method=handler.command, path=url.path, query=query, authenticated=offered and valid, user=user if valid else None
        )
        with self._lock:
            self.requests.append(record)
        length = int(handler.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(handler.rfile.read(length).decode()) if length else {}

        def reply(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
            record.status = status
            handler.send_json(status, body, headers)

        if url.path != "/token":
            return reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
        if handler.command == "POST":  # OAuth2: an identity (refresh) token from `docker login` stands for a user
            refresh = form.get("refresh_token", [""])[0]
            if form.get("grant_type", [""])[0] != "refresh_token" or refresh not in self.refresh_tokens:
                return reply(401, {"error": "invalid_grant"})
            record.user, record.authenticated = self.refresh_tokens[refresh], True
            query = {"service": form.get("service", [self.service]), "scope": " ".join(form.get("scope", [])).split()}
        elif handler.command != "GET":
            return reply(405, {"errors": [{"code": "UNSUPPORTED", "message": "use GET or POST"}]}, {"Allow": "GET, POST"})
        if offered and not valid:
            return reply(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                {"WWW-Authenticate": 'Basic realm="distill-test-token"'},
            )
        service = query.get("service", [self.service])[-1]
        if service != self.service:
            return reply(400, {"errors": [{"code": "DENIED", "message": f"unknown service {service!r}"}]})
        try:
            access = self.grant(record.user, query.get("scope", []))
        except ValueError as error:
            return reply(400, {"errors": [{"code": "INVALID_SCOPE", "message": str(error)}]})
        record.granted = access
        token = self.make_token(record.user, access)
        issued = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        reply(200, {"token": token, "access_token": token, "expires_in": self.expires_in, "issued_at": issued})
        return None


def _stop_http_server(server: http.server.HTTPServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


# distribution's access log: `127.0.0.1 - - [time] "GET /v2/... HTTP/1.1" 200 123 "" "user-agent"`
_ACCESS = re.compile(r'^\S+ - \S+ \[[^]]*\] "(\w+) (\S+) HTTP/[\d.]+" (\d+) \S+ "[^"]*" "([^"]*)"$', re.M)


@dataclass(frozen=True)
class Access:
    """One request in the registry's access log."""

    method: str
    path: str
    status: int
    agent: str


class RegistryStartError(RuntimeError):
    pass


def _stop_process(process: subprocess.Popen[bytes], log: Any) -> None:
    try:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    finally:
        log.close()


class Registry:
    """A real `docker-registry serve` (distribution 2.8) on 127.0.0.1 and a free port, plain
    HTTP, filesystem storage under `tmp_dir`, deletes enabled.

    `auth="none"`: anyone may pull and push. `auth="basic"`: an htpasswd file with bcrypt
    hashes of `users` (default `DEFAULT_BASIC_USERS`). `auth="token"`: Docker token auth backed
    by `token_server`; `username`/`password` are then the token server's first user.
    `tls=(certificate, key)`: HTTPS with that certificate instead of plain HTTP.
    """

    def __init__(
        self,
        tmp_dir: Path,
        auth: str = "none",
        *,
        users: Mapping[str, str] | None = None,
        token_server: TokenServer | None = None,
        start_timeout: float = 20.0,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        if auth not in ("none", "basic", "token"):
            raise ValueError(f"auth must be 'none', 'basic' or 'token', not {auth!r}")
        if auth == "token" and token_server is None:
            raise ValueError("auth='token' needs a token_server")
        self.auth = auth
        self.token_server = token_server
        self.tls = tls
        self.dir = Path(tmp_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.storage = self.dir / "storage"
        self.storage.mkdir(exist_ok=True)
        self.config_path = self.dir / "config.yml"
        self.log_path = self.dir / "registry.log"

        if auth == "basic":
            self.users = dict(DEFAULT_BASIC_USERS if users is None else users)
        elif auth == "token":
            assert token_server is not None
            self.users = dict(token_server.users)
        else:
            self.users = dict(users or {})
        first = next(iter(self.users.items()), (None, None))
        self.username: str | None = first[0]
        self.password: str | None = first[1]

        auth_config: dict[str, Any] = {}
        if auth == "basic":
            import bcrypt

            htpasswd = self.dir / "htpasswd"
            # distribution checks bcrypt hashes with golang.org/x/crypto/bcrypt, which takes any
            # $2?$ minor version; cost 5 keeps the per-request check cheap.
            htpasswd.write_text(
                "".join(
                    f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                    for user, password in self.users.items()
                )
            )
            auth_config = {"htpasswd": {"realm": "distill-test-registry", "path": str(htpasswd)}}
        elif auth == "token":
            assert token_server is not None
            auth_config = {
                "token": {
                    "realm": token_server.realm,
                    "service": token_server.service,
                    "issuer": token_server.issuer,
                    "rootcertbundle": str(token_server.cert_path),
                }
            }

        self.process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        last_error: RegistryStartError | None = None
        for _attempt in range(3):
            self.port = free_port()
            self.host = f"127.0.0.1:{self.port}"
            self.url = f"{'https' if tls else 'http'}://{self.host}"
            self._write_config(auth_config)
            try:
                self._start(start_timeout)
                return
            except RegistryStartError as error:
                self.stop()
                last_error = error
                if "address already in use" not in str(error):
                    break
        assert last_error is not None
        raise last_error

    def _write_config(self, auth_config: dict[str, Any]) -> None:
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.host,
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if auth_config:
            config["auth"] = auth_config
        if self.tls:
            config["http"]["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        # JSON is YAML: no need for a YAML writer.
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def _start(self, timeout: float) -> None:
        # REGISTRY_* variables override the configuration file: never inherit any.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
                start_new_session=True,
            )
        except BaseException:
            log.close()
            raise
        self._finalizer = weakref.finalize(self, _stop_process, self.process, log)

        last = "no answer yet"
        for attempt in range(int(timeout / 0.05) + 1):  # polls 50 ms apart: about `timeout` seconds
            if attempt:
                time.sleep(0.05)
            if self.process.poll() is not None:
                raise RegistryStartError(
                    f"docker-registry exited with status {self.process.returncode} before "
                    f"answering on {self.url}; log tail:\n{_tail(self.log_path)}"
                )
            try:
                unverified = ssl._create_unverified_context() if self.tls else None
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1, context=unverified) as response:
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
                error.close()
            except (OSError, urllib.error.URLError) as error:
                status, last = 0, repr(error)
            if status in (200, 401):
                return
            if status:
                last = f"HTTP {status}"
        raise RegistryStartError(
            f"docker-registry did not answer GET {self.url}/v2/ within {timeout:.0f}s (last: {last}); log tail:\n{_tail(self.log_path)}"
        )

    def log_tail(self, limit: int = 4000) -> str:
        return _tail(self.log_path, limit)

    def log_mark(self) -> int:
        """Where the log ends now: `requests(since=mark)` then lists only what came after."""
        return self.log_path.stat().st_size

    def requests(self, since: int = 0) -> list[Access]:
        """The registry's access log (what clients asked for, as the registry saw it) from offset `since`."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            text = log.read().decode("utf-8", "replace")
        return [Access(m.group(1), m.group(2), int(m.group(3)), m.group(4)) for m in _ACCESS.finditer(text)]

    def ref(self, name: str) -> str:
        """`docker://127.0.0.1:PORT/name` for skopeo."""
        return f"docker://{self.host}/{name}"

    @property
    def creds(self) -> str | None:
        """`user:password` for skopeo's --*-creds, or None without users."""
        return None if self.username is None else f"{self.username}:{self.password}"

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# OCI image layouts (umoci) and registry transfers (skopeo)
# --------------------------------------------------------------------------------------------


def _run(command: list[str], *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
    return result


class ToolError(RuntimeError):
    """A peer tool (umoci, skopeo) failed; the message carries its stderr."""

    def __init__(self, command: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(command)} exited with status {returncode}:\n{stderr.strip()}")
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


def _tool(command: list[str], *, timeout: float = 300) -> str:
    try:
        return _run(command, timeout=timeout).stdout
    except subprocess.CalledProcessError as error:
        raise ToolError(command, error.returncode, error.stderr or "") from None


def build_image_layout(
    rootfs: Path,
    layout: Path,
    ref: str = "latest",
    *,
    extra_layer: Callable[[Path], None] | None = None,
) -> None:
    """Pack the directory `rootfs` into the OCI image layout `layout` as tag `ref`, with umoci.

    The first layer holds the whole tree, owners, modes and links included (copied with
    `cp -a` into a bundle unpacked from an empty image, then `umoci repack`). With
    `extra_layer`, `extra_layer(bundle_rootfs)` then edits that tree (a copy: the source is
    never touched) and umoci repacks a second layer: deletions become real `.wh.` whiteouts. Needs root (umoci
    unpack without --rootless). An existing layout gains a tag; an existing tag is replaced.
    """
    rootfs, layout = Path(rootfs), Path(layout)
    if not rootfs.is_dir():
        raise NotADirectoryError(rootfs)
    image = f"{layout}:{ref}"
    if not (layout / "index.json").exists():
        _tool(["umoci", "init", "--layout", str(layout)])
    _tool(["umoci", "new", "--image", image])
    # Note: `umoci insert SRC /` would skip the copy but umoci 0.4.7 writes a truncated tar
    # (with a "/" member) that way, so the bundle route it is.
    work = Path(tempfile.mkdtemp(prefix=".bundle-", dir=layout.parent))
    try:
        bundle = work / "bundle"
        _tool(["umoci", "unpack", "--image", image, str(bundle)])
        _tool(["cp", "-a", "--", f"{rootfs}/.", f"{bundle}/rootfs/"])
        if extra_layer is None:
            _tool(["umoci", "repack", "--image", image, str(bundle)])
        else:
            # --refresh-bundle makes the bundle's mtree describe the packed tree, so the same
            # bundle can be edited and repacked into a diff layer: as good as unpacking the
            # image again, without rewriting the whole tree (8 s for a 190 MB rootfs).
            _tool(["umoci", "repack", "--refresh-bundle", "--image", image, str(bundle)])
            extra_layer(bundle / "rootfs")
            _tool(["umoci", "repack", "--image", image, str(bundle)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _tool(["umoci", "gc", "--layout", str(layout)])


def layout_manifest(layout: Path, ref: str = "latest") -> dict[str, Any]:
    """The image manifest tagged `ref` in an OCI layout."""
    index = json.loads((Path(layout) / "index.json").read_text())
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
            return json.loads(layout_blob(layout, descriptor["digest"]).read_text())
    raise KeyError(f"no tag {ref!r} in {layout}")


def layout_blob(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return Path(layout) / "blobs" / algorithm / hexdigest


def _creds_args(prefix: str, creds: str | None) -> list[str]:
    # Without creds, say so explicitly: never pick up credentials stored on the host.
    return [f"--{prefix}creds", creds] if creds is not None else [f"--{prefix}no-creds"]


def _needs_creds_args(ref: str) -> bool:
    return ref.startswith("docker://")


def skopeo_copy(
    src: str,
    dest: str,
    *,
    src_creds: str | None = None,
    dest_creds: str | None = None,
    extra_args: Iterable[str] = (),
    timeout: float = 300,
) -> None:
    """`skopeo copy` with TLS verification off (local plain-HTTP registries); `*_creds` are
    `user:password`. Raises ToolError with skopeo's stderr on failure."""
    command = ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"]
    if _needs_creds_args(src):
        command += _creds_args("src-", src_creds)
    if _needs_creds_args(dest):
        command += _creds_args("dest-", dest_creds)
    command += [*extra_args, src, dest]
    _tool(command, timeout=timeout)


def skopeo_inspect(ref: str, *, raw: bool = False, creds: str | None = None, config: bool = False, timeout: float = 120) -> dict[str, Any]:
    """`skopeo inspect` (TLS verification off) parsed from JSON; `raw` gives the manifest,
    `config` the image configuration."""
    command = ["skopeo", "--insecure-policy", "inspect", "--tls-verify=false"]
    if _needs_creds_args(ref):
        command += _creds_args("", creds)
    if raw:
        command.append("--raw")
    if config:
        command.append("--config")
    command.append(ref)
    return json.loads(_tool(command, timeout=timeout))


__all__ = [
    "Registry",
    "RegistryStartError",
    "TokenRefused",
    "TokenRequest",
    "TokenServer",
    "ToolError",
    "build_image_layout",
    "decode_jwt",
    "free_port",
    "layout_blob",
    "layout_manifest",
    "libtrust_key_id",
    "skopeo_copy",
    "skopeo_inspect",
]
