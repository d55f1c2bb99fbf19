"""Every transport distill reads or writes: one table, one module per transport, and the only dispatch.

A transport is the `name:` prefix of a `--from`, `--base` or `--out` reference, in the syntax
of skopeo and podman. Parsing (`refs`), destination checks (`staging`), the pipeline and the
docs' table consult `TRANSPORTS`; nothing else decides by name what a transport is.

Each row names the module that reads and writes it (several rows may share one: `oci:` and
`oci-archive:` are both layouts). The module is imported when a reference of that transport is
opened or written, so a run loads only the transports it uses (and `requests` only for a
registry). A transport module provides, for what its row allows:

- `read_image(ref, options) -> Image`: an image source (`image` and `source`);
- `read_view(ref, options) -> DirView`: a filesystem source (`source`, not `image`);
- `write_image(built, ref, registry) -> str`: an image destination (`image` and `destination`),
  given one `BuiltImage`, or a `BuiltIndex` when the row has `platforms`;
- `write_plan(plan, view, ref) -> str`: a filesystem destination (`destination`, not `image`),
  written atomically through `distill.staging`.

Writers return a one-line summary of what they wrote. The table itself lives in `table` (re-exported
here) so that `refs`, which this dispatch names, can read it without an import cycle. Adding a
transport is a row there and a module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

from distill.target import Platform
from distill.transports.table import TRANSPORTS, UNSUPPORTED, Transport, destination_names, source_names, transport

if TYPE_CHECKING:
    from distill.oci.compose import BuiltImage, BuiltIndex
    from distill.oci.image import Image
    from distill.oci.layers import Cache
    from distill.plan import Plan
    from distill.refs import Ref
    from distill.registry.options import RegistryOptions
    from distill.view import View

__all__ = [
    "Transport",
    "TRANSPORTS",
    "UNSUPPORTED",
    "Source",
    "SourceOptions",
    "transport",
    "source_names",
    "destination_names",
    "open_image",
    "open_source",
    "write_image",
    "write_plan",
]


def _module(ref: Ref) -> ModuleType:
    return importlib.import_module(transport(ref.transport).module)


def _registry_options() -> RegistryOptions:
    from distill.registry.options import RegistryOptions

    return RegistryOptions()


class _LayerCache:
    """The layer cache, made when an image is first read, so a directory run loads none of the image
    machinery; one per run, shared by every copy of the options (`replace` per platform), so that what
    one platform uses stays protected from eviction while the others run."""

    def __init__(self) -> None:
        self._cache: Cache | None = None

    def get(self) -> Cache:
        if self._cache is None:
            from distill.oci.layers import Cache

            self._cache = Cache()
        return self._cache


@dataclass
class SourceOptions:
    platform: Platform = field(default_factory=Platform.host)
    registry: RegistryOptions = field(default_factory=_registry_options)
    layer_cache: _LayerCache = field(default_factory=_LayerCache, repr=False)

    @property
    def cache(self) -> Cache:
        return self.layer_cache.get()


@dataclass
class Source:
    """What `--from` names: a View, plus the image or the host directory behind it."""

    ref: Ref
    view: View
    image: Image | None = None
    host_root: str | None = None


def open_image(ref: Ref, options: SourceOptions) -> Image:
    """The image an image reference names, for the wanted platform."""
    assert transport(ref.transport).image, f"not an image transport: {ref.transport}"
    image: Image = _module(ref).read_image(ref, options)
    return image


def open_source(ref: Ref, options: SourceOptions) -> Source:
    """The View (and image or directory) a `--from` reference names."""
    if not transport(ref.transport).image:
        view = _module(ref).read_view(ref, options)
        return Source(ref, view, host_root=view.root)
    from distill.oci.merged import open_image_view

    image = open_image(ref, options)
    return Source(ref, open_image_view(image, options.cache), image=image)


def write_image(built: BuiltImage | BuiltIndex, ref: Ref, registry: RegistryOptions) -> str:
    """Write `built` to one image destination; return a one-line summary."""
    from distill.oci.compose import BuiltIndex

    row = transport(ref.transport)
    assert row.image and row.destination, f"not an image destination: {ref.transport}"
    if isinstance(built, BuiltIndex) and not row.platforms:
        raise AssertionError(f"{ref.transport} takes one platform")  # the pipeline refuses this before planning
    summary: str = _module(ref).write_image(built, ref, registry)
    return summary


def write_plan(plan: Plan, view: View, ref: Ref) -> str:
    """Write a checked plan to one filesystem destination; return a one-line summary."""
    row = transport(ref.transport)
    assert row.destination and not row.image, f"not a filesystem destination: {ref.transport}"
    summary: str = _module(ref).write_plan(plan, view, ref)
    return summary
