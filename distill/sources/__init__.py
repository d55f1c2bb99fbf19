"""Sources turn a `--from` reference into a read-only View of one merged filesystem."""

from __future__ import annotations

from distill.refs import Ref
from distill.sources.rootfs import DirView
from distill.view import View

__all__ = ["open_source", "source_root"]


def open_source(ref: Ref) -> View:
    """The View for a parsed `--from` reference."""
    return DirView(ref.path)


def source_root(view: View) -> str | None:
    """The host directory behind a view, when there is one (to refuse writing into it)."""
    return view.root if isinstance(view, DirView) else None
