"""Link closure: every symlink that ships has its target ship too.

A symlink copied without following it (a `paths` glob, a package's file list, a runtime
collector's directory) would otherwise dangle in the output: `de_DE.utf8/LC_CTYPE` pointing into
`../de_AT.utf8/`, or squid's `errors -> ../squid-langpack` directory. The target ships as the
rule that shipped the link would have shipped it: a file or a directory entry for a rule that names
one path or a package's files (a package's own files below the target ship anyway, the rest belongs
to other packages), the directory's whole tree for a rule that takes whole trees (`**` globs,
runtime collectors), again and again for the links found there. A target the source does not have
either ships nothing (the link dangles in the source already; only a rule naming the link itself
hears about it); `checks.py` fails the run on any other
symlink that does not resolve in the output, unless the profile lists it under `dangling`.
"""

from __future__ import annotations

from distill import paths
from distill.builder import RUNTIME_PROVIDED, PlanBuilder, PlanContext
from distill.errors import SourceError
from distill.plan import Reason, ReasonKind

__all__ = ["close_links"]


def close_links(builder: PlanBuilder, context: PlanContext) -> None:
    """Ship the targets of the symlinks shipped so far, and of those that brings in, until none is left."""
    view = context.view
    while builder.pending_links:
        link, (whole, named) = builder.pending_links.popitem()
        found = view.resolve(link)
        if found.error:
            raise SourceError(f"{view.name}: {link}: {found.error}")
        if found.node is None:
            builder.plan.broken_in_source.add(link)  # it dangles alike in the output: nothing was left out
            if named is not None and not (found.path + "/").startswith(RUNTIME_PROVIDED):
                builder.warn(f"{named}: {link} is a symlink to {found.path}, which the source does not have")
            continue
        builder.ship(link, Reason(ReasonKind.TARGET, "target of a shipped symlink", via=link))
        if whole and found.node.is_dir:
            reason = Reason(ReasonKind.TARGET, f"in {found.path}, the target of a shipped symlink", via=link)
            for match in view.glob(paths.join(found.path, "**")):
                builder.ship(match, reason, follow=False, whole=True)
