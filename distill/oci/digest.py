"""Digests, and readers that check them while the bytes stream past."""

from __future__ import annotations

import hashlib
import io
import re
from typing import BinaryIO, TypeGuard

from distill.errors import SourceError

__all__ = ["sha256_of", "source_digest", "valid_digest", "hex_of", "VerifiedReader"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def source_digest(module_file: str) -> str | None:
    """The sha256 of a module's own source: names the code that made what a cache keeps, so a change to it
    is never served an old result (None where the source cannot be read: then nothing is kept)."""
    try:
        with open(module_file, "rb") as source:
            return hashlib.sha256(source.read()).hexdigest()
    except OSError:
        return None


def valid_digest(digest: object) -> TypeGuard[str]:
    return isinstance(digest, str) and _DIGEST.match(digest) is not None


def hex_of(digest: str) -> str:
    """The hex part of a sha256 digest, after checking its form (it becomes a file name)."""
    if not valid_digest(digest):
        raise SourceError(f"unsupported or malformed digest {digest[:80]!r}; only sha256 digests are accepted")
    return digest.split(":", 1)[1]


class VerifiedReader(io.RawIOBase):
    """Wraps a stream of a blob; raises SourceError when its size or sha256 differs from the descriptor.

    The check fires when the stream reaches its end, so a consumer that reads to EOF has verified
    every byte it used; `verify()` drains what is left and checks explicitly.
    """

    def __init__(self, stream: BinaryIO, digest: str, size: int | None, name: str) -> None:
        super().__init__()
        self.stream = stream
        self.expected = digest
        self.size = size
        self.name_for_errors = name
        self.hash = hashlib.sha256()
        self.count = 0
        self.checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        limit = len(view) if self.size is None else min(len(view), self.size - self.count + 1)
        data = self.stream.read(limit) if limit > 0 else b""
        if not data:
            self._check()
            return 0
        self.count += len(data)
        if self.size is not None and self.count > self.size:
            raise SourceError(f"{self.name_for_errors}: longer than the {self.size} bytes its descriptor declares")
        self.hash.update(data)
        view[: len(data)] = data
        return len(data)

    def _check(self) -> None:
        if self.checked:
            return
        self.checked = True
        if self.size is not None and self.count != self.size:
            raise SourceError(f"{self.name_for_errors}: truncated: {self.count} of {self.size} bytes")
        actual = "sha256:" + self.hash.hexdigest()
        if actual != self.expected:
            raise SourceError(f"{self.name_for_errors}: digest mismatch: expected {self.expected}, got {actual}")

    def verify(self) -> None:
        """Read what is left and check size and digest."""
        while self.read(1 << 20):
            pass
        self._check()

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            super().close()
