"""`layer:FILE.tar[.gz]`: the plan as one reproducible layer tarball (gzip with mtime 0, no name)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, cast

from distill.plan import Plan
from distill.refs import Ref
from distill.sinks.staging import staged
from distill.tarstream import reproducible_gzip, write_tar
from distill.view import View

__all__ = ["LayerSink"]


class LayerSink:
    def __init__(self, ref: Ref) -> None:
        self.ref = ref

    def write(self, plan: Plan, source: View) -> str:
        dest = Path(self.ref.path).absolute()
        compress = dest.name.endswith((".gz", ".tgz"))
        with staged(dest, directory=False) as temp, open(temp, "wb") as raw:
            if compress:
                with reproducible_gzip(raw) as zipped:
                    write_tar(plan, source, cast(BinaryIO, zipped))
            else:
                write_tar(plan, source, raw)
            raw.flush()
            os.fsync(raw.fileno())
        return f"{self.ref}: {dest.stat().st_size} bytes"
