"""A stand-in for a Docker 25+ Engine on a unix socket: the one fake of the transport tests.

Debian 12 ships Docker 20.10, whose `docker save` writes the legacy archive; Docker 25 and later write
the OCI layout plus `manifest.json`. This server answers the three calls distill makes (`/version`,
`GET /images/NAME/get`, `POST /images/load`) as Docker 25 does (API 1.44), serves the archives it is
given, and keeps what is loaded, so tests can hand the result to real peers (podman, skopeo)."""

from __future__ import annotations

import http.server
import io
import json
import socketserver
import tarfile
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

API_VERSION = "1.44"  # Docker 25.0


class _UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def _familiar(name: str) -> str:
    """Docker finds `docker.io/library/x:1`, `library/x:1` and `x:1` alike."""
    return name.removeprefix("docker.io/").removeprefix("library/")


class FakeDocker25:
    """`with FakeDocker25(socket_path) as daemon:`; `daemon.images[name] = archive_bytes` to serve one."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.images: dict[str, bytes] = {}
        self.loaded: list[bytes] = []
        self.paths: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def address_string(self) -> str:
                return "unix"

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Api-Version", API_VERSION)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = urlparse(self.path).path
                owner.paths.append(f"GET {path}")
                if path == "/version":
                    self._reply(200, json.dumps({"Version": "25.0.0", "ApiVersion": API_VERSION, "MinAPIVersion": "1.24"}).encode())
                elif path.startswith(f"/v{API_VERSION}/images/") and path.endswith("/get"):
                    name = _familiar(unquote(path[len(f"/v{API_VERSION}/images/") : -len("/get")]))
                    if name in owner.images:
                        self._reply(200, owner.images[name], "application/x-tar")
                    else:
                        self._reply(404, json.dumps({"message": f"No such image: {name}"}).encode())
                else:
                    self._reply(404, b'{"message": "page not found"}')

            def do_POST(self) -> None:
                path = urlparse(self.path).path
                owner.paths.append(f"POST {path}")
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if path == f"/v{API_VERSION}/images/load":
                    owner.loaded.append(body)
                    self._reply(200, json.dumps({"stream": "Loaded image: (kept by the test)\n"}).encode())
                else:
                    self._reply(404, b'{"message": "page not found"}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = _UnixHTTPServer(str(socket_path), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeDocker25:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_docker25_archive(layout: Path, archive: Path, tag: str) -> None:
    """What Docker 25+'s `docker save` writes: the OCI layout plus the legacy manifest.json (from a umoci layout)."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    legacy = [
        {
            "Config": f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}",
            "RepoTags": [tag],
            "Layers": [f"blobs/sha256/{layer['digest'].split(':')[1]}" for layer in manifest["layers"]],
        }
    ]
    with tarfile.open(archive, "w") as tar:
        for name in ("oci-layout", "index.json", "blobs"):
            tar.add(layout / name, arcname=name)
        data = json.dumps(legacy).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
