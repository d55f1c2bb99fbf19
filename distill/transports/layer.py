"""`layer:FILE.tar[.gz]`: the plan as one reproducible layer tarball (gzip with mtime 0, no name)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from distill.plan import Plan
from distill.refs import Ref
from distill.staging import staged
from distill.tarstream import gzip_copy, write_tar
from distill.view import View

__all__ = ["write_plan"]


def write_plan(plan: Plan, source: View, ref: Ref) -> str:
    dest = Path(ref.path).absolute()
    compress = dest.name.endswith((".gz", ".tgz"))
    with staged(dest, directory=False) as temp, open(temp, "wb") as raw:
        if compress:  # the tar first, then its gzip as the image's layer is compressed: the same bytes
            with tempfile.TemporaryFile() as tar:
                write_tar(plan, source, tar)
                tar.seek(0)
                gzip_copy(tar, raw)
        else:
            write_tar(plan, source, raw)
        raw.flush()
        os.fsync(raw.fileno())
    return f"{ref}: {dest.stat().st_size} bytes"
