"""Foreign-architecture test sources: Debian 12 roots for arm64 and armhf unpacked by mmdebstrap
(`--variant=extract` runs nothing from the packages, so no emulation is needed), packed by umoci
into one OCI layout with the amd64 root under a two- or three-platform image index, cached.

The index itself is written here (umoci writes single-platform images only); its bytes come from
distill's canonical JSON, and the tests read it back with skopeo, a peer that checks it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from distill.oci import media
from distill.oci.compose import canonical_json
from distill.oci.digest import sha256_of

from helpers import fat_rootfs
from helpers.images import _cached
from helpers.registry import build_image_layout

PACKAGES = ("nginx", "jq", "base-passwd", "tzdata")
# Debian architecture -> (OCI architecture, variant, qemu-user-static binary, Debian triplet)
ARCHES = {
    "amd64": ("amd64", None, None, "x86_64-linux-gnu"),
    "arm64": ("arm64", None, "qemu-aarch64-static", "aarch64-linux-gnu"),
    "armhf": ("arm", "v7", "qemu-arm-static", "arm-linux-gnueabihf"),
    "ppc64el": ("ppc64le", None, "qemu-ppc64le-static", "powerpc64le-linux-gnu"),
}


def platform_root(arch: str) -> Path:
    """A Debian 12 root with nginx and jq for `arch` (unpacked, no maintainer scripts run)."""
    return fat_rootfs(PACKAGES, arch=arch, variant="extract")


def platform_name(arch: str) -> str:
    oci, variant, _, _ = ARCHES[arch]
    return "/".join(p for p in ("linux", oci, variant) if p)


def index_layout(arches: tuple[str, ...] = ("amd64", "arm64"), *, broken: str | None = None) -> Path:
    """An OCI layout whose `latest` is an image index over one umoci-packed image per architecture.

    With `broken`, that architecture's image gets a second layer deleting libonig (a real
    whiteout), so jq's closure is incomplete on that platform only.
    """
    roots = [platform_root(arch) for arch in arches]
    key = hashlib.sha256("|".join([*map(str, roots), str(broken)]).encode()).hexdigest()[:16]

    def build(work: Path) -> None:
        layout = work / "layout"
        entries = []
        for arch in arches:
            oci, variant, _, _ = ARCHES[arch]
            build_image_layout(platform_root(arch), layout, arch, extra_layer=_without_libonig if arch == broken else None)
            config = ["umoci", "config", "--image", f"{layout}:{arch}", "--os", "linux", "--architecture", oci]
            subprocess.run(config, check=True, capture_output=True)
            index = json.loads((layout / "index.json").read_text())
            descriptor = next(d for d in index["manifests"] if d["annotations"]["org.opencontainers.image.ref.name"] == arch)
            platform = {"architecture": oci, "os": "linux", **({"variant": variant} if variant else {})}
            if variant:  # umoci config has no --variant: give the config its variant as well
                descriptor = _with_variant(layout, descriptor, variant)
            entries.append(
                {"mediaType": media.OCI_MANIFEST, "digest": descriptor["digest"], "size": descriptor["size"], "platform": platform}
            )
        data = canonical_json({"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": entries})
        digest = sha256_of(data)
        (layout / "blobs/sha256" / digest.split(":")[1]).write_bytes(data)
        index = json.loads((layout / "index.json").read_text())
        index["manifests"].append(
            {
                "mediaType": media.OCI_INDEX,
                "digest": digest,
                "size": len(data),
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        )
        (layout / "index.json").write_text(json.dumps(index))

    return _cached("layouts", f"multiarch-{'-'.join(arches)}-{key}", build) / "layout"


def _without_libonig(root: Path) -> None:
    for path in root.glob("usr/lib/*/libonig.so*"):
        path.unlink()


def _with_variant(layout: Path, descriptor: dict, variant: str) -> dict:  # type: ignore[type-arg]
    """Rewrite one image's config with `variant` (and its manifest); return the new manifest descriptor."""
    blobs = layout / "blobs/sha256"
    manifest = json.loads((blobs / descriptor["digest"].split(":")[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
    config["variant"] = variant
    config_bytes = canonical_json(config)
    (blobs / sha256_of(config_bytes).split(":")[1]).write_bytes(config_bytes)
    manifest["config"] = {**manifest["config"], "digest": sha256_of(config_bytes), "size": len(config_bytes)}
    manifest_bytes = canonical_json(manifest)
    (blobs / sha256_of(manifest_bytes).split(":")[1]).write_bytes(manifest_bytes)
    return {"digest": sha256_of(manifest_bytes), "size": len(manifest_bytes)}


def qemu(arch: str) -> str | None:
    """The qemu-user-static binary for `arch` (None: native), checked to be installed."""
    binary = ARCHES[arch][2]
    if binary is not None and shutil.which(binary) is None:
        raise AssertionError(f"{binary} is missing: install qemu-user-static (the Makefile's DEB_PACKAGES has it)")
    return binary
