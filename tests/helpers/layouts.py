"""Handcrafted OCI image layouts, for layer and config shapes the real tools do not produce on demand
(opaque whiteouts, hostile names, a config with a Healthcheck). Images built by real peers come
from `registry.build_image_layout` (umoci) instead."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from distill.oci.image import Platform

Member = tuple[tarfile.TarInfo, "bytes | None"]


def write_layout(root: Path, layers: list[list[Member]], config: dict[str, Any] | None = None) -> Path:
    """A handcrafted OCI layout (for layer shapes umoci does not produce itself)."""
    blobs = root / "blobs/sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    descriptors, diff_ids = [], []
    for members in layers:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in members:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        diff_ids.append("sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gzip.compress(raw.getvalue()))})
    config = {
        "architecture": Platform.host().architecture,
        "os": "linux",
        **(config or {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(json.dumps(config).encode())},
        "layers": descriptors,
    }
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **put(json.dumps(manifest).encode()),
        "annotations": {"org.opencontainers.image.ref.name": "latest"},
    }
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return root


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"", mode: int = 0o644, link: str = ""
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    if kind == tarfile.REGTYPE:
        info.size = len(data or b"")
        return info, data or b""
    return info, None


def tree_members(root: Path) -> list[Member]:
    """Every object under a directory as layer members (owners, modes and links as they are)."""
    members: list[Member] = []
    with tarfile.open(fileobj=io.BytesIO(), mode="w") as scratch:
        for path in sorted(root.rglob("*")):
            info = scratch.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            if info.type == tarfile.LNKTYPE:
                info.type, info.linkname, info.size = tarfile.REGTYPE, "", path.stat().st_size
            members.append((info, path.read_bytes() if info.isreg() else None))
    return members
