"""`rootfs:DIR`: the plan as a directory tree, ready for `COPY --from` or `chroot`.

Ownership, modes (setuid bits included when the plan keeps them), symlinks, hard links and
mtimes are applied; directories get their modes and times last, deepest first, so a
read-only directory does not block writing into it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from distill.errors import DestinationError
from distill.plan import Entry, EntryKind, Plan
from distill.refs import Ref
from distill.sinks.staging import staged
from distill.view import View

__all__ = ["RootfsSink"]


class RootfsSink:
    def __init__(self, ref: Ref) -> None:
        self.ref = ref
        self.can_chown = os.geteuid() == 0

    def write(self, plan: Plan, source: View) -> str:
        dest = Path(self.ref.path).absolute()
        with staged(dest, directory=True) as temp:
            entries = plan.ordered()
            for entry in entries:
                self._create(temp, entry, source)
            for entry in reversed(entries):
                if entry.kind is EntryKind.DIR:
                    self._attributes(self._host(temp, entry.path), entry)
        return f"{self.ref}: {len(entries)} entries"

    @staticmethod
    def _host(root: Path, path: str) -> Path:
        return root / path.lstrip("/") if path != "/" else root

    def _create(self, root: Path, entry: Entry, source: View) -> None:
        target = self._host(root, entry.path)
        try:
            if entry.kind is EntryKind.DIR:
                if entry.path != "/":
                    target.mkdir(mode=0o700)
                return
            if entry.kind is EntryKind.SYMLINK:
                os.symlink(entry.target or "", target)
            elif entry.kind is EntryKind.HARDLINK:
                os.link(self._host(root, entry.target or ""), target)
                return
            elif entry.data is not None:
                target.write_bytes(entry.data)
            else:
                assert entry.source is not None
                with source.open(entry.source) as src, open(target, "xb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            self._attributes(target, entry)
        except OSError as exc:
            raise DestinationError(f"{self.ref}: cannot write {entry.path}: {exc.strerror}") from None

    def _attributes(self, target: Path, entry: Entry) -> None:
        symlink = entry.kind is EntryKind.SYMLINK
        if self.can_chown:
            os.chown(target, entry.uid, entry.gid, follow_symlinks=False)
        if not symlink:
            os.chmod(target, entry.mode)  # after chown, which clears setuid bits
        mtime_ns = int(entry.mtime or 0) * 1_000_000_000
        os.utime(target, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
