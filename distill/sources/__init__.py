"""Sources turn a `--from` (or `--base`) reference into a read-only View of one merged filesystem."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from distill.refs import Ref
from distill.registry.options import RegistryOptions
from distill.sources.rootfs import DirView
from distill.target import Platform
from distill.view import View

if TYPE_CHECKING:
    from distill.oci.image import Image
    from distill.oci.layers import Cache

# the image readers (and the layer cache behind them) are imported when an image is opened, so a
# directory source does not load them

__all__ = ["Source", "SourceOptions", "open_source", "open_image"]


def _cache() -> Cache:
    from distill.oci.layers import Cache

    return Cache()


@dataclass
class SourceOptions:
    platform: Platform = field(default_factory=Platform.host)
    cache: Cache = field(default_factory=_cache)
    registry: RegistryOptions = field(default_factory=RegistryOptions)


@dataclass
class Source:
    """What `--from` names: a View, plus the image or the host directory behind it."""

    ref: Ref
    view: View
    image: Image | None = None
    host_root: str | None = None


def open_image(ref: Ref, options: SourceOptions) -> Image:
    """The image an image reference names, for the wanted platform."""
    from distill.sources.dockerarchive import archive_image
    from distill.sources.layout import DirStore, TarStore, layout_image

    if ref.transport == "docker":
        from distill.sources.registry import registry_image  # loads requests only when a registry is used

        assert ref.image is not None
        return registry_image(ref.image, options.platform, options.cache, options.registry)
    if ref.transport == "oci":
        return layout_image(DirStore(ref.path, str(ref)), ref.name, options.platform)
    if ref.transport == "oci-archive":
        return layout_image(TarStore(ref.path, str(ref)), ref.name, options.platform)
    if ref.transport == "docker-archive":
        return archive_image(TarStore(ref.path, str(ref)), ref.name, ref.index, options.platform)
    if ref.transport == "docker-daemon":
        from distill.daemon import DaemonClient

        saved = tempfile.TemporaryFile()  # removed by the OS when the store lets go of it
        DaemonClient().save(ref.name or "", saved)
        saved.seek(0)
        return archive_image(TarStore(saved, str(ref)), None, None, options.platform)
    raise AssertionError(f"not an image transport: {ref.transport}")


def open_source(ref: Ref, options: SourceOptions) -> Source:
    """The View (and image or directory) a `--from` reference names."""
    if ref.transport == "rootfs":
        view = DirView(ref.path)
        return Source(ref, view, host_root=view.root)
    from distill.oci.merged import open_image_view

    image = open_image(ref, options)
    return Source(ref, open_image_view(image, options.cache), image=image)
