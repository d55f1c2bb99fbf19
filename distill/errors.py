"""One exception hierarchy; each class carries the exit code the CLI returns for it.

Only `cli.py` prints errors. A message is one line that names the file, key or path at fault
and says what to do; `issues` holds every problem found when validation collects several.
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_SOURCE",
    "EXIT_CLOSURE",
    "EXIT_DESTINATION",
    "EXIT_INTERNAL",
    "DistillError",
    "UsageError",
    "ProfileError",
    "SourceError",
    "ElfError",
    "ClosureError",
    "PlanError",
    "DestinationError",
]

EXIT_OK = 0
EXIT_USAGE = 2  # bad flags, unknown or invalid profile, profile asks for what the source lacks
EXIT_SOURCE = 3  # source missing, unreadable, broken or hostile
EXIT_CLOSURE = 4  # a shipped ELF would not load: missing library or symbol version; plan conflicts
EXIT_DESTINATION = 5  # destination refused or not writable
EXIT_INTERNAL = 70  # a bug in distill (EX_SOFTWARE)


class DistillError(Exception):
    """Base of every error distill reports to the user."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, issues: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.issues = sorted(set(issues)) if issues else [message]

    def __str__(self) -> str:
        return self.message


class UsageError(DistillError):
    """The command line asks for something impossible."""

    exit_code = EXIT_USAGE


class ProfileError(DistillError):
    """A profile is malformed, or asks for something the source does not have."""

    exit_code = EXIT_USAGE


class SourceError(DistillError):
    """The source cannot be read, or holds something broken or hostile."""

    exit_code = EXIT_SOURCE


class ElfError(SourceError):
    """An ELF file could not be parsed."""


class ClosureError(DistillError):
    """A shipped ELF would not load in the output: a library or symbol version is missing."""

    exit_code = EXIT_CLOSURE
    prepared: object = None  # the checked plan that failed, for `--json` (a pipeline.Prepared)


class PlanError(DistillError):
    """The plan is inconsistent: two entries want one path in different ways."""

    exit_code = EXIT_CLOSURE


class DestinationError(DistillError):
    """The destination is refused (not empty, inside the source) or cannot be written."""

    exit_code = EXIT_DESTINATION
