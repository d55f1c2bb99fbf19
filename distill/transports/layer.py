"""`layer:FILE.tar[.gz]`: the plan as one reproducible layer tarball (gzip with mtime 0, no name)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from distill.plan import Plan
from distill.refs import Ref
from distill.staging import staged
from distill.tarstream import GzipWriter, write_tar
from distill.view import View

__all__ = ["write_built_layer", "write_plan"]


def write_plan(plan: Plan, source: View, ref: Ref) -> str:
    dest = Path(ref.path).absolute()
    compress = _gzipped(dest)
    with staged(dest, directory=False) as temp, open(temp, "wb") as raw:
        if compress:  # gzipped as the image's layer is: the same bytes
            with GzipWriter(raw) as gzipped:
                write_tar(plan, source, gzipped)
        else:
            write_tar(plan, source, raw)
        raw.flush()
        os.fsync(raw.fileno())
    return f"{ref}: {dest.stat().st_size} bytes"


def write_built_layer(open_blob: Callable[[], BinaryIO], plan: Plan, source: View, ref: Ref) -> str:
    """The layer file of a run that also built an image from `plan`: gzipped, it is that image's layer blob
    (`open_blob`), copied rather than compressed a second time; a plain tar is written from the plan."""
    dest = Path(ref.path).absolute()
    if not _gzipped(dest):
        return write_plan(plan, source, ref)
    with staged(dest, directory=False) as temp, open(temp, "wb") as raw, open_blob() as blob:
        shutil.copyfileobj(blob, raw, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
    return f"{ref}: {dest.stat().st_size} bytes"


def _gzipped(dest: Path) -> bool:
    return dest.name.endswith((".gz", ".tgz"))
