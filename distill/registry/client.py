"""A small OCI distribution client on requests: pull and push what distill needs, nothing more.

Authentication follows the registry's challenge: Basic with the user's credentials, or Bearer
tokens from the realm it names (anonymous when there are no credentials), one token per set of
scopes, reused until it expires. 429 and 5xx answers are retried, honouring Retry-After.
Redirects are followed without carrying credentials to another host (requests strips them).
Plain http is used only for loopback registries, unless TLS verification is turned off.
Nothing here logs a header, a token or a password.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlencode, urljoin

import requests

from distill import __version__
from distill.errors import DistillError, SourceError
from distill.oci import documents, media
from distill.oci.digest import sha256_of
from distill.oci.image import MAX_MANIFEST_BYTES
from distill.reference import ImageReference
from distill.registry.options import RegistryOptions

if TYPE_CHECKING:  # the credentials and challenge parser load at the first 401: an anonymous pull needs neither
    from distill.registry.auth import Challenge, Credentials

__all__ = ["RegistryClient"]

_RETRY_STATUS = (429, 500, 502, 503, 504)
_ATTEMPTS = 5
_MAX_WAIT = 30.0
_CHUNK = 8 << 20


def _loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if host.count(":") <= 1 or host.startswith("[") else host
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass
class _Token:
    value: str
    expires: float


class _Raw:
    """The undecoded body of a streamed response, as a file object (for VerifiedReader)."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response

    def read(self, size: int = -1) -> bytes:
        return self.response.raw.read(None if size < 0 else size, decode_content=False)

    def close(self) -> None:
        self.response.close()


class RegistryClient:
    """One registry host; repositories are named per call."""

    def __init__(self, image: ImageReference, options: RegistryOptions) -> None:
        self.registry = image.registry
        self.host = image.api_host
        self.options = options
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"distill/{__version__}"
        self.session.verify = options.tls_verify  # each request passes it too: see _verify
        secure = not _loopback(self.host)
        self.base = f"{'https' if secure else 'http'}://{self.host}"
        self.tokens: dict[frozenset[str], _Token] = {}
        self._auth_lock = threading.Lock()
        self._basic: Credentials | None = None
        self._basic_known = False
        self.retry_sleep: Callable[[float], None] = time.sleep

    # -- authentication ------------------------------------------------------------------

    def _credentials(self, repository: str) -> Credentials | None:
        if not self._basic_known:
            from distill.registry.auth import CredentialsError, find_credentials

            self._basic_known = True
            try:
                self._basic = self.options.creds or find_credentials(self.registry, repository, authfile=self.options.authfile)
            except CredentialsError as exc:
                raise self._error(str(exc)) from None
        return self._basic

    def _authorize(self, challenge: Challenge, scopes: frozenset[str], repository: str) -> dict[str, str]:
        with self._auth_lock:  # layers are fetched on several threads: credentials looked up and a token asked for once
            return self._authorize_locked(challenge, scopes, repository)

    def _authorize_locked(self, challenge: Challenge, scopes: frozenset[str], repository: str) -> dict[str, str]:
        creds = self._credentials(repository)
        if challenge.scheme == "basic":
            if creds is None:
                raise self._error(f"{self.registry} requires a user name and password; give --creds USER:PASSWORD or an auth file")
            return {"Authorization": requests.auth._basic_auth_str(creds.username, creds.password)}
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise self._error(f"{self.registry} asks for an unsupported authentication scheme {challenge.scheme!r}")
        cached = self.tokens.get(scopes)
        if cached is None or cached.expires <= time.monotonic():
            cached = self._fetch_token(challenge, scopes, creds)
            self.tokens[scopes] = cached
        return {"Authorization": f"Bearer {cached.value}"}

    def _fetch_token(self, challenge: Challenge, scopes: frozenset[str], creds: Credentials | None) -> _Token:
        from distill.registry.auth import IDENTITY_TOKEN_USER

        realm = challenge.params["realm"]
        service = challenge.params.get("service")
        try:
            if creds is not None and creds.username == IDENTITY_TOKEN_USER:
                # an identity token (from `docker login`) is an OAuth2 refresh token: exchange it with a POST
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.password,
                    "client_id": "distill",
                    "scope": " ".join(sorted(scopes)),
                    **({"service": service} if service else {}),
                }
                response = self.session.post(realm, data=form, timeout=self.options.timeout, verify=self._verify)
            else:
                query = [("service", service)] if service else []
                query.extend(("scope", scope) for scope in sorted(scopes))
                auth = (creds.username, creds.password) if creds is not None else None
                response = self.session.get(f"{realm}?{urlencode(query)}", auth=auth, timeout=self.options.timeout, verify=self._verify)
        except requests.RequestException as exc:
            raise self._error(f"{self.registry}: cannot reach its token service ({type(exc).__name__})") from None
        if response.status_code in (400, 401, 403):
            if creds is None:
                raise self._error(f"{self.registry} requires authentication; give --creds USER:PASSWORD or an auth file")
            raise self._error(
                f"{self.registry}: the token service refused these credentials (HTTP {response.status_code}); "
                "check --creds or the auth file"
            )
        if response.status_code != 200:
            raise self._error(f"{self.registry}: the token service answered HTTP {response.status_code}")
        where = f"{self.registry}: token service answer"
        try:
            body = documents.check_token(documents.load_object(response.content, where), where)
        except SourceError as exc:
            raise self._error(str(exc)) from None
        value = body.get("token") or body.get("access_token")
        lifetime = min(float(body.get("expires_in") or 60), 86400.0)
        if not isinstance(value, str) or not value:
            raise self._error(f"{self.registry}: the token service answered without a token")
        return _Token(value, time.monotonic() + max(lifetime - 10, 1))

    def _error(self, message: str) -> DistillError:
        return self.options.error(message)

    # -- requests --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        repository: str,
        *,
        actions: tuple[str, ...] = ("pull",),
        extra_scopes: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
    ) -> requests.Response:
        """One request with auth, retries and a clear error; `body` makes a fresh payload for each attempt."""
        if not url.startswith("http"):
            url = self.base + url
        scopes = frozenset((f"repository:{repository}:{','.join(actions)}", *extra_scopes))
        auth: dict[str, str] = {}
        challenged = False
        for attempt in range(_ATTEMPTS):
            try:
                response = self.session.request(
                    method,
                    url,
                    headers={**(headers or {}), **auth},
                    stream=stream,
                    data=body() if body else None,
                    timeout=self.options.timeout,
                    verify=self._verify,
                )
            except requests.exceptions.SSLError:
                if self._plain_http_allowed(url):
                    url = self._downgrade(url)
                    continue
                raise self._error(
                    f"{self.registry}: TLS verification failed; use --tls-verify=false for a registry without a trusted certificate"
                ) from None
            except requests.exceptions.ConnectionError:
                if self._plain_http_allowed(url):
                    url = self._downgrade(url)
                    continue
                if attempt >= 1:
                    raise self._error(f"{self.registry}: cannot connect to {self.base} (is the registry running?)") from None
                self.retry_sleep(0.5)
                continue
            except requests.exceptions.Timeout:
                if attempt >= 1:
                    raise self._error(f"{self.registry}: no answer within {self.options.timeout:g} s") from None
                continue
            except requests.exceptions.TooManyRedirects:
                raise self._error(f"{self.registry}: too many redirects for {method} {url.split('?')[0]}") from None
            except requests.exceptions.RequestException as exc:
                raise self._error(f"{self.registry}: request failed ({type(exc).__name__})") from None
            if response.status_code == 401 and not challenged:
                challenged = True
                challenges = self._challenges(response)
                response.close()
                auth = self._authorize(challenges[0], scopes, repository)
                continue
            if response.status_code in _RETRY_STATUS and attempt < _ATTEMPTS - 1:
                wait = self._retry_after(response, attempt)
                response.close()
                self.retry_sleep(wait)
                continue
            if response.status_code in ok:
                return response
            raise self._status_error(response, method, repository, actions)
        raise self._error(f"{self.registry}: gave up after {_ATTEMPTS} attempts")

    @property
    def _verify(self) -> bool:
        """Given on every request: requests lets $REQUESTS_CA_BUNDLE or $CURL_CA_BUNDLE override a session's
        `verify=False`, which would turn --tls-verify=false back on (and, after the failure, fall to http)."""
        return self.options.tls_verify

    def _plain_http_allowed(self, url: str) -> bool:
        """With --tls-verify=false, a registry that does not speak TLS is tried over plain http (as skopeo does)."""
        return not self.options.tls_verify and url.startswith(self.base) and self.base.startswith("https://")

    def _downgrade(self, url: str) -> str:
        self.base = f"http://{self.host}"
        return "http://" + url.removeprefix("https://")

    def _challenges(self, response: requests.Response) -> list[Challenge]:
        from distill.registry.auth import parse_www_authenticate

        header = response.headers.get("WWW-Authenticate", "")
        try:
            challenges = parse_www_authenticate(header)
        except ValueError:
            challenges = []
        usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
        if not usable:
            raise self._error(f"{self.registry}: answered 401 without a usable authentication challenge")
        return sorted(usable, key=lambda c: c.scheme != "bearer")

    @staticmethod
    def _retry_after(response: requests.Response, attempt: int) -> float:
        header = response.headers.get("Retry-After", "")
        try:
            wait: float = float(header)
            return min(max(wait, 0.0), _MAX_WAIT)
        except ValueError:
            return min(0.5 * 2.0**attempt, _MAX_WAIT)

    def _status_error(self, response: requests.Response, method: str, repository: str, actions: tuple[str, ...]) -> DistillError:
        code = response.status_code
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(str(e.get("code", "")) for e in errors if isinstance(e, dict))
        except (ValueError, AttributeError, RecursionError):
            pass
        response.close()
        if code in (401, 403) and "push" in actions:
            return self._error(
                f"{self.registry}/{repository}: push denied: these credentials (or the token they got) do not grant push to this repository"
            )
        if code in (401, 403):
            return self._error(f"{self.registry}/{repository}: access denied; check --creds or the auth file")
        if code == 404:
            return self._error(f"{self.registry}/{repository}: not found ({detail or 'no such repository, tag or blob'})")
        return self._error(f"{self.registry}/{repository}: {method} answered HTTP {code}{f' ({detail})' if detail else ''}")

    # -- pulling -----------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """The raw manifest or index and its media type, checked against the digest asked for or announced."""
        response = self.request(
            "GET", f"/v2/{repository}/manifests/{reference}", repository, headers={"Accept": media.ACCEPT}, stream=True, ok=(200, 404)
        )
        if response.status_code == 404:
            response.close()
            separator = "@" if reference.startswith("sha256:") else ":"
            raise self._error(f"{self.registry}/{repository}{separator}{reference}: no such repository or tag in the registry")
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_MANIFEST_BYTES:
            response.close()
            raise self._error(
                f"{self.registry}/{repository}:{reference}: the manifest is {declared} bytes; refusing more "
                f"than {MAX_MANIFEST_BYTES >> 20} MiB"
            )
        data = response.raw.read(MAX_MANIFEST_BYTES + 1, decode_content=True)
        response.close()
        if len(data) > MAX_MANIFEST_BYTES:
            raise self._error(f"{self.registry}/{repository}:{reference}: the manifest is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
        actual = sha256_of(data)
        announced = response.headers.get("Docker-Content-Digest")
        for expected in (reference if reference.startswith("sha256:") else None, announced):
            if expected and expected != actual:
                raise self._error(f"{self.registry}/{repository}@{expected}: manifest digest mismatch (got {actual})")
        return data, response.headers.get("Content-Type", "").split(";")[0].strip()

    def open_blob(self, repository: str, digest: str) -> BinaryIO:
        """A stream of the blob's bytes as stored (undecoded); the caller verifies them."""
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}", repository, stream=True)
        return _Raw(response)  # type: ignore[return-value]

    # -- pushing -----------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", repository, actions=("pull", "push"), ok=(200, 404))
        response.close()
        return response.status_code == 200

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Ask the registry to link a blob from another repository; False when it would rather have an upload."""
        query = urlencode({"mount": digest, "from": source_repository})
        response = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/?{query}",
            repository,
            actions=("pull", "push"),
            extra_scopes=(f"repository:{source_repository}:pull",),
            ok=(201, 202),
        )
        response.close()
        if response.status_code == 202 and response.headers.get("Location"):
            self.request(
                "DELETE", urljoin(self.base + "/", response.headers["Location"]), repository, actions=("pull", "push"), ok=(204, 404, 405)
            ).close()
        return response.status_code == 201

    def upload_blob(self, repository: str, digest: str, size: int, opener: Callable[[], BinaryIO]) -> None:
        """Monolithic upload (POST, then one PUT); chunked PATCHes when the registry refuses that."""
        location = self._start_upload(repository)
        response = self.request(
            "PUT",
            _with_query(location, digest),
            repository,
            actions=("pull", "push"),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=opener,
            ok=(201, 400, 404, 405, 413, 416),
        )
        response.close()
        if response.status_code == 201:
            return
        self._upload_chunked(repository, digest, size, opener)

    def _start_upload(self, repository: str) -> str:
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/", repository, actions=("pull", "push"), ok=(202,))
        response.close()
        location = response.headers.get("Location")
        if not location:
            raise self._error(f"{self.registry}/{repository}: upload started without a Location")
        return urljoin(self.base + "/", location)

    def _upload_chunked(self, repository: str, digest: str, size: int, opener: Callable[[], BinaryIO]) -> None:
        location = self._start_upload(repository)
        with opener() as stream:
            start = 0
            while start < size:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                end = start + len(chunk) - 1
                response = self.request(
                    "PATCH",
                    location,
                    repository,
                    actions=("pull", "push"),
                    ok=(202,),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{start}-{end}",
                        "Content-Length": str(len(chunk)),
                    },
                    body=functools.partial(bytes, chunk),
                )
                response.close()
                location = urljoin(self.base + "/", response.headers.get("Location", location))
                start = end + 1
        self.request(
            "PUT", _with_query(location, digest), repository, actions=("pull", "push"), ok=(201,), headers={"Content-Length": "0"}
        ).close()

    def put_document(
        self, repository: str, reference: str, data: bytes, media_type: str, *, also_ok: tuple[int, ...] = ()
    ) -> requests.Response:
        """PUT a manifest or an index under `reference`: the (closed) response, 201 or one of `also_ok`."""
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            repository,
            actions=("pull", "push"),
            headers={"Content-Type": media_type},
            body=lambda: data,
            ok=(201, *also_ok),
        )
        response.close()
        return response

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        return self.stored_digest(self.put_document(repository, reference, data, media_type), repository, data)

    def stored_digest(self, response: requests.Response, repository: str, data: bytes, what: str = "manifest") -> str:
        """The digest of a document just PUT, refused when the registry announces it stored something else."""
        digest = sha256_of(data)
        announced = response.headers.get("Docker-Content-Digest")
        if announced and announced != digest:
            raise self._error(f"{self.registry}/{repository}: the registry stored the {what} as {announced}, not {digest}")
        return digest


def _with_query(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}{urlencode({'digest': digest})}"
