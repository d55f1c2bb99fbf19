"""How to talk to registries, as the command line sets it (kept apart from the HTTP client, which loads requests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from distill.errors import DistillError, SourceError

if TYPE_CHECKING:  # the flags' parser imports auth only when --creds is given: a rootfs run loads no registry code
    from distill.registry.auth import Credentials

__all__ = ["RegistryOptions"]


@dataclass(frozen=True)
class RegistryOptions:
    creds: Credentials | None = None
    authfile: str | None = None
    tls_verify: bool = True
    timeout: float = 60.0
    error: type[DistillError] = SourceError  # SourceError when pulling, DestinationError when pushing
