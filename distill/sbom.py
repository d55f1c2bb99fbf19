"""A CycloneDX 1.6 SBOM of what distill shipped, written beside the image (never inside it).

Components are the source packages that contributed files to the output (with package URLs that
name the distribution, as scanners expect), and the base image when there is one. Everything is
derived from the inputs: the timestamp is the image's, the serial number a UUID of the content.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from distill import __version__
from distill.errors import DestinationError
from distill.oci.compose import canonical_json, rfc3339
from distill.packages import DbKind, open_package_db
from distill.staging import staged

if TYPE_CHECKING:
    from distill.pipeline import Prepared

__all__ = ["cyclonedx", "write_sbom"]


def _os_release(prepared: Prepared) -> dict[str, str]:
    try:
        text = prepared.source.view.read_bytes("/etc/os-release", 1 << 16).decode("utf-8", "replace")
    except FileNotFoundError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip('"')
    return out


def _purl(kind: DbKind, distro: dict[str, str], name: str, version: str, arch: str) -> str:
    namespace = distro.get("ID", "debian" if kind is DbKind.DPKG else "alpine")
    qualifiers = [f"arch={quote(arch)}"] if arch else []
    if distro.get("VERSION_ID"):
        qualifiers.append(f"distro={namespace}-{distro['VERSION_ID']}")
    kind_name = "deb" if kind is DbKind.DPKG else "apk"
    return f"pkg:{kind_name}/{namespace}/{quote(name)}@{quote(version)}" + (f"?{'&'.join(qualifiers)}" if qualifiers else "")


def cyclonedx(prepared: Prepared, created: int) -> dict[str, Any]:
    """The SBOM document for a finished (or planned) run."""
    plan = prepared.plan
    db = open_package_db(prepared.source.view)
    distro = _os_release(prepared)
    components: list[dict[str, Any]] = []
    for name, owned in sorted(plan.packages.items()):
        package = db.get(name) if db else None
        if package is None or db is None:
            continue
        purl = _purl(db.kind, distro, name, package.version, package.architecture)
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": purl,
            "name": name,
            "version": package.version,
            "purl": purl,
            "properties": [{"name": "distill:files", "value": str(len(owned))}],
        }
        if package.source and package.source != name:
            component["properties"].append({"name": "distill:source-package", "value": package.source})
        components.append(component)
    if prepared.base is not None:
        components.append(
            {
                "type": "container",
                "bom-ref": prepared.base.manifest_digest,
                "name": prepared.base_name or "base",
                "version": prepared.base.manifest_digest,
            }
        )
    subject = prepared.built.manifest_digest if prepared.built else prepared.request.profile.digest
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'distill:' + subject + json.dumps(sorted(plan.packages)))}",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(created),
            "tools": {"components": [{"type": "application", "name": "distill", "version": __version__}]},
            "component": {"type": "container", "bom-ref": subject, "name": prepared.request.profile.name, "version": subject},
        },
        "components": components,
    }


def write_sbom(document: dict[str, Any], path: Path) -> None:
    """Write the SBOM atomically."""
    try:
        with staged(path.absolute(), directory=False) as temp:
            temp.write_bytes(canonical_json(document) + b"\n")
    except OSError as exc:
        raise DestinationError(f"--sbom {path}: cannot write ({exc.strerror})") from None
