"""`layer:FILE.tar[.gz]`: the plan as one reproducible layer tarball (gzip with mtime 0, no name)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from distill.plan import Plan
from distill.refs import Ref
from distill.sinks import staged
from distill.tarstream import write_tar
from distill.view import View

__all__ = ["LayerSink", "GZIP_LEVEL"]

GZIP_LEVEL = 6  # fixed, so the compressed bytes do not depend on a default


class LayerSink:
    def __init__(self, ref: Ref) -> None:
        self.ref = ref

    def write(self, plan: Plan, source: View) -> str:
        dest = Path(self.ref.path).absolute()
        compress = dest.name.endswith((".gz", ".tgz"))
        with staged(dest, directory=False) as temp:
            with open(temp, "wb") as raw:
                if compress:
                    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as zipped:
                        write_tar(plan, source, zipped)
                else:
                    write_tar(plan, source, raw)
                raw.flush()
                os.fsync(raw.fileno())
            os.chmod(temp, 0o644)
        return f"{self.ref}: {dest.stat().st_size} bytes"
