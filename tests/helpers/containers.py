"""Run a distilled image the way a container runtime would: `umoci unpack` it, then `runc run` it in
a private network namespace (the test's own, via examples/netns_http.py), with Docker's default
capabilities, and fetch pages from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from distill.sandbox import DOCKER_CAPABILITIES  # runs as a runtime would: Docker's default capability set

from helpers import REPO


def unpack_bundle(image: str, bundle: Path) -> dict:  # type: ignore[type-arg]
    """`umoci unpack --image LAYOUT:REF BUNDLE`, then fit config.json to run in the caller's network namespace."""
    subprocess.run(["umoci", "unpack", "--image", image, str(bundle)], check=True, capture_output=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
    process = config["process"]
    process["terminal"] = False
    process.pop("rlimits", None)  # this sandbox refuses setrlimit; Docker's defaults would not change anything here
    for kind in ("bounding", "effective", "permitted"):
        process.setdefault("capabilities", {})[kind] = list(DOCKER_CAPABILITIES)
    config_path.write_text(json.dumps(config))
    return config


def run_bundle_http(bundle: Path, *paths: str, port: int = 80) -> dict:  # type: ignore[type-arg]
    """Start the bundle's own process with runc inside a private network namespace and GET `paths`."""
    command = [
        sys.executable,
        str(REPO / "examples/netns_http.py"),
        str(bundle),
        "--runc",
        "--port",
        str(port),
        *[a for p in paths for a in ("--get", p)],
    ]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
