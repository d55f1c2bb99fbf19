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

__all__ = ["write_blob", "write_plan"]


def write_plan(plan: Plan, source: View, ref: Ref) -> str:
    dest = Path(ref.path).absolute()
    compress = dest.name.endswith((".gz", ".tgz"))
    with staged(dest, directory=False) as temp, open(temp, "wb") as raw:
        if compress:  # gzipped as the image's layer is: the same bytes
            with GzipWriter(raw) as gzipped:
                write_tar(plan, source, gzipped)
        else:
            write_tar(plan, source, raw)
        raw.flush()
        os.fsync(raw.fileno())
    return f"{ref}: {dest.stat().st_size} bytes"


def write_blob(open_blob: Callable[[], BinaryIO], ref: Ref) -> str:
    """A gzipped layer file from the layer blob of the image the same run built from the same plan: those
    are the bytes `write_plan` would compress again."""
    dest = Path(ref.path).absolute()
    with staged(dest, directory=False) as temp, open(temp, "wb") as raw, open_blob() as blob:
        shutil.copyfileobj(blob, raw, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
    return f"{ref}: {dest.stat().st_size} bytes"
