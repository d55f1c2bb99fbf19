"""Small images crafted by hand, document by document, so a test can break any one field.

A real tool never writes an index whose `manifests` is a number; these helpers do, on purpose:
the valid documents are built first (linked by real digests), then each `mutate` hook changes
the parsed JSON of one document after its children were linked, so the change survives.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill import cli
from distill.target import Platform

from helpers.cli import Result

Mutate = Callable[[Any], Any]

TINY_APP = r"""
void _start(void) { __asm__ volatile ("mov $60, %eax\n xor %edi, %edi\n syscall"); }
"""


class AppBytes(bytes):
    """The app's bytes, with a short repr for test reports (hypothesis prints its arguments)."""

    def __repr__(self) -> str:
        return f"<static ELF, {len(self)} bytes>"


def tiny_static_app(path: Path) -> bytes:
    """A real, static ELF executable of a few KB with no libraries (compiled by gcc here)."""
    src = path.with_suffix(".c")
    src.write_text(TINY_APP)
    subprocess.run(["gcc", "-static", "-nostdlib", "-Os", "-s", "-o", str(path), str(src)], check=True, capture_output=True)
    src.unlink()
    return AppBytes(path.read_bytes())


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def app_members(app: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The layer of the small image: /usr/bin/app, a passwd, a group, and a symlink."""

    def entry(name: str, kind: bytes, data: bytes | None = None, mode: int = 0o644, link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.mtime = kind, mode, link, 1_700_000_000
        if data is not None:
            info.size = len(data)
        return info, data

    return [
        entry("usr/", tarfile.DIRTYPE, mode=0o755),
        entry("usr/bin/", tarfile.DIRTYPE, mode=0o755),
        entry("usr/bin/app", tarfile.REGTYPE, app, 0o755),
        entry("etc/", tarfile.DIRTYPE, mode=0o755),
        entry("etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\n"),
        entry("etc/group", tarfile.REGTYPE, b"root:x:0:\n"),
        entry("bin", tarfile.SYMTYPE, link="usr/bin"),
    ]


@dataclass
class Crafted:
    """The documents of one image, before they are written; mutate hooks run after linking."""

    layers: list[bytes]  # uncompressed tars
    config_extra: dict[str, Any] = field(default_factory=dict)
    config_hook: Mutate | None = None
    manifest_hook: Mutate | None = None
    index_hook: Mutate | None = None
    archive_hook: Mutate | None = None  # docker-archive manifest.json

    def documents(self) -> tuple[dict[str, bytes], Any, Any, Any]:
        """(blobs by hex digest, config, manifest, index) as JSON values, hooks applied."""
        blobs: dict[str, bytes] = {}

        def put(data: bytes) -> dict[str, Any]:
            digest = hashlib.sha256(data).hexdigest()
            blobs[digest] = data
            return {"digest": f"sha256:{digest}", "size": len(data)}

        layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gzip.compress(raw, mtime=0))} for raw in self.layers]
        config: Any = {
            "architecture": Platform.host().architecture,
            "os": "linux",
            "created": "2024-01-02T03:04:05Z",
            "config": {"Env": ["PATH=/usr/bin"], "Entrypoint": ["/usr/bin/app"], "Labels": {"a": "b"}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in self.layers]},
            "history": [{"created": "2024-01-02T03:04:05Z", "created_by": "hand"}],
            **copy.deepcopy(self.config_extra),
        }
        config = self.config_hook(config) if self.config_hook else config
        manifest: Any = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(_dump(config))},
            "layers": layers,
            "annotations": {"x": "y"},
        }
        manifest = self.manifest_hook(manifest) if self.manifest_hook else manifest
        index: Any = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **put(_dump(manifest)),
                    "platform": {"architecture": Platform.host().architecture, "os": "linux"},
                    "annotations": {"org.opencontainers.image.ref.name": "latest"},
                }
            ],
        }
        index = self.index_hook(index) if self.index_hook else index
        return blobs, config, manifest, index

    def layout(self, root: Path) -> Path:
        """An OCI layout directory."""
        blobs, _, _, index = self.documents()
        (root / "blobs/sha256").mkdir(parents=True)
        for digest, data in blobs.items():
            (root / "blobs/sha256" / digest).write_bytes(data)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (root / "index.json").write_bytes(_dump(index))
        return root

    def docker_archive(self, path: Path) -> Path:
        """A `docker save` archive (legacy layout: <n>/layer.tar, config JSON, manifest.json)."""
        _blobs, config, _, _ = self.documents()
        config_bytes = _dump(config)
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        members: list[tuple[tarfile.TarInfo, bytes | None]] = []

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            members.append((info, data))

        layer_names = []
        for number, raw in enumerate(self.layers):
            layer_names.append(f"{number}/layer.tar")
            add(layer_names[-1], raw)
        add(config_name, config_bytes)
        entries: Any = [{"Config": config_name, "RepoTags": ["app:1"], "Layers": layer_names}]
        entries = self.archive_hook(entries) if self.archive_hook else entries
        add("manifest.json", _dump(entries))
        path.write_bytes(tar_bytes(members, tarfile.USTAR_FORMAT))
        return path


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


def set_at(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`document` with the value at `path` (keys and indexes) replaced, or deleted when `value` is DELETE."""
    if not path:
        return value
    target = document
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


DELETE = object()


def paths_of(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every JSON path in `document` (the root included), parents before children."""
    found = [prefix]
    stack = [(document, prefix)]
    while stack:
        value, path = stack.pop()
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in children:
            found.append((*path, key))
            stack.append((child, (*path, key)))
    return sorted(found, key=lambda p: (len(p), [str(s) for s in p]))


def run(*args: str) -> Result:
    """The real `main`, in this process (much cheaper than a subprocess per run): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code
    return Result(int(code or 0), out.getvalue(), err.getvalue())


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path below `root` with its bytes (or link target, or 'dir')."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = f"-> {os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir() else path.read_bytes()
    return found
