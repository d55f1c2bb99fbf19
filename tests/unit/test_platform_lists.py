"""Platform lists (`--platform a,b`) and the platforms an image index offers."""

from __future__ import annotations

import pytest

from distill.errors import UsageError
from distill.oci.image import index_platforms
from distill.profile import builtin_dir
from distill.target import ARCHES, Platform


def test_platform_lists_are_parsed_strictly() -> None:
    assert Platform.parse_list("linux/amd64, linux/arm/v7") == (Platform("linux", "amd64"), Platform("linux", "arm", "v7"))
    for bad in ("linux/amd64,linux/amd64", "linux/amd64,", "linux/amd64,arm64"):
        with pytest.raises(UsageError):
            Platform.parse_list(bad)


def test_an_index_offers_its_runnable_platforms_once_in_order() -> None:
    def entry(n: int, platform: dict[str, str], **annotations: str) -> dict:  # type: ignore[type-arg]
        return {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{n:064x}",
            "size": 1,
            "platform": platform,
            **({"annotations": annotations} if annotations else {}),
        }

    index = {
        "manifests": [
            entry(1, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
            entry(2, {"os": "unknown", "architecture": "unknown"}, **{"vnd.docker.reference.type": "attestation-manifest"}),
            entry(3, {"os": "linux", "architecture": "amd64"}),
            entry(4, {"os": "linux", "architecture": "amd64"}),
        ]
    }
    offered = index_platforms(index, "test")
    assert [p for p, _ in offered] == [Platform("linux", "arm64", "v8"), Platform("linux", "amd64")]
    assert [d.digest[-1] for _, d in offered] == ["1", "3"]


def test_built_in_profiles_name_no_architecture() -> None:
    """Every built-in profile and fragment is portable: no triplet or loader of one architecture in it."""
    for path in builtin_dir().glob("*.yaml"):
        text = path.read_text()
        for arch in ARCHES.values():
            assert arch.triplet not in text and arch.glibc_interp not in text, (path.name, arch.triplet)
