"""A Docker Engine API client over its unix socket: save an image to a tar, load a tar.

Works with Docker and with `podman system service`. The API version is negotiated: the
daemon's own, capped at the newest this client knows (Docker 29 refuses below 1.44; podman 4
offers 1.41).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import BinaryIO
from urllib.parse import quote

from distill.errors import DistillError, SourceError

__all__ = ["DaemonClient", "NEWEST_API"]

NEWEST_API = (1, 47)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class DaemonClient:
    """One daemon, named by DOCKER_HOST (unix://PATH) or /var/run/docker.sock."""

    def __init__(self, host: str | None = None, *, error: type[DistillError] = SourceError, timeout: float = 300.0) -> None:
        host = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if not host.startswith("unix://"):
            raise error(f"DOCKER_HOST={host}: only unix:// sockets are supported")
        self.path = host.removeprefix("unix://")
        self.error = error
        self.timeout = timeout
        self._version: str | None = None

    def _request(
        self, method: str, path: str, body: BinaryIO | None = None, headers: dict[str, str] | None = None
    ) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        connection = _UnixConnection(self.path, self.timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            return connection, connection.getresponse()
        except OSError as exc:
            connection.close()
            raise self.error(f"docker daemon at unix://{self.path}: {exc.strerror or exc} (is it running? set DOCKER_HOST)") from None

    def api_version(self) -> str:
        if self._version is None:
            connection, response = self._request("GET", "/version")
            try:
                info = json.loads(response.read(1 << 20)) if response.status == 200 else {}
            except (ValueError, RecursionError):
                info = {}
            finally:
                connection.close()
            version = info.get("ApiVersion", "1.41") if isinstance(info, dict) else "1.41"
            offered = tuple(int(p) for p in str(version).split(".")[:2] if p.isdigit() and len(p) < 6)
            chosen = min(offered or (1, 41), NEWEST_API)
            self._version = f"v{chosen[0]}.{chosen[1]}"
        return self._version

    def save(self, name: str, out: BinaryIO) -> None:
        """Write `docker save NAME` into `out`."""
        connection, response = self._request("GET", f"/{self.api_version()}/images/{quote(name, safe='')}/get")
        try:
            if response.status == 404:
                raise self.error(f"docker-daemon:{name}: no such image in the daemon")
            if response.status != 200:
                raise self.error(f"docker-daemon:{name}: the daemon answered HTTP {response.status}")
            while chunk := response.read(1 << 20):
                out.write(chunk)
        finally:
            connection.close()

    def load(self, archive: BinaryIO, size: int) -> str:
        """`docker load` a docker-archive; returns what the daemon said it loaded."""
        headers = {"Content-Type": "application/x-tar", "Content-Length": str(size)}
        connection, response = self._request("POST", f"/{self.api_version()}/images/load?quiet=1", archive, headers)
        try:
            text = response.read(1 << 20).decode("utf-8", "replace")
        finally:
            connection.close()
        messages = []
        for line in text.splitlines():
            try:
                item = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(item, dict) and item.get("error"):
                raise self.error(f"docker daemon refused the image: {str(item['error'])[:200]}")
            if isinstance(item, dict) and item.get("stream"):
                messages.append(str(item["stream"]).strip())
        if response.status != 200:
            raise self.error(f"docker daemon answered HTTP {response.status} to the load")
        return "; ".join(messages) or "loaded"
