"""Every JSON document read from an image, checked once for the types, shapes and ranges distill uses.

Index (and `index.json`), manifest, config, Docker's archive `manifest.json`, a token service's
answer: each is parsed here and checked against a small typed description before any field is
read, so a wrong type anywhere is one `SourceError` naming the document and the JSON path
(`oci:x: index.json: $.manifests[0].platform: expected an object, got a string`) instead of a
TypeError deep inside distill. Unknown fields are allowed, as the OCI spec says; a field distill
does not read is still checked when the spec gives its type, because the output may copy it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from distill.errors import SourceError
from distill.oci.digest import valid_digest

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_DEPTH",
    "MAX_TIME",
    "load",
    "load_object",
    "check_index",
    "check_manifest",
    "check_config",
    "check_archive_manifest",
    "check_layout_file",
    "check_token",
    "created_seconds",
]

MAX_DOCUMENT_BYTES = 4 << 20  # manifests and configs are small; a huge one is hostile or broken
MAX_DEPTH = 64  # real documents nest five levels; the output copies some of them
MAX_SIZE = (1 << 63) - 1  # a descriptor's size is an int64
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z: the last second every tool can print

Check = Callable[[Any, str], None]


class _Problem(Exception):
    """A check failed at a JSON path; turned into a SourceError naming the document."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(what)
        self.path, self.what = path, what


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _run(check: Check, value: Any, document: str) -> None:
    try:
        check(value, "$")
    except _Problem as problem:
        raise SourceError(f"{document}: {problem.path}: {problem.what}; fix or rebuild the image") from None


# -- the checks, composable ----------------------------------------------------------------------


def string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise _Problem(path, f"expected a string, got {_kind(value)}")


def boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _Problem(path, f"expected true or false, got {_kind(value)}")


def integer(low: int, high: int) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Problem(path, f"expected a whole number, got {_kind(value)}")
        if not low <= value <= high:
            raise _Problem(path, f"{value} is outside {low}..{high}")

    return check


def number(value: Any, path: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise _Problem(path, f"expected a finite number, got {_kind(value)}")


def digest(value: Any, path: str) -> None:
    if not valid_digest(value):
        raise _Problem(path, f"expected a sha256 digest, got {str(value)[:80]!r}")


def anything(value: Any, path: str) -> None:
    """Any JSON value (its strings and depth were checked when it was loaded)."""


def nullable(check: Check) -> Check:
    def nullable_check(value: Any, path: str) -> None:
        if value is not None:
            check(value, path)

    return nullable_check


def listof(check: Check, *, nonempty: bool = False) -> Check:
    def list_check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise _Problem(path, f"expected a list, got {_kind(value)}")
        if nonempty and not value:
            raise _Problem(path, "expected a non-empty list")
        for number_, item in enumerate(value):
            check(item, f"{path}[{number_}]")

    return list_check


def mapof(check: Check) -> Check:
    """An object whose values all pass `check` (keys are strings in JSON)."""

    def map_check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _Problem(path, f"expected an object, got {_kind(value)}")
        for key, item in value.items():
            check(item, _member_path(path, key))

    return map_check


def obj(fields: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    """An object with these (optional unless `required`) fields; other fields are allowed."""

    def object_check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _Problem(path, f"expected an object, got {_kind(value)}")
        for key in required:
            if key not in value:
                raise _Problem(_member_path(path, key), "missing")
        for key, check in fields.items():
            if key in value:
                check(value[key], _member_path(path, key))

    return object_check


def _member_path(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{key[:80]!r}]"


# -- the documents -------------------------------------------------------------------------------

_ANNOTATIONS = mapof(string)
_PLATFORM = obj(
    {
        "architecture": string,
        "os": string,
        "os.version": string,
        "os.features": listof(string),
        "variant": string,
        "features": listof(string),
    }
)
_DESCRIPTOR_FIELDS: dict[str, Check] = {
    "mediaType": string,
    "digest": digest,
    "size": integer(0, MAX_SIZE),
    "urls": listof(string),
    "annotations": _ANNOTATIONS,
    "data": string,
    "artifactType": string,
    "platform": _PLATFORM,
}
DESCRIPTOR = obj(_DESCRIPTOR_FIELDS, required=("digest", "size"))
_VERSION = integer(0, 1 << 31)
INDEX = obj(
    {
        "schemaVersion": _VERSION,
        "mediaType": string,
        "artifactType": string,
        "manifests": listof(DESCRIPTOR),
        "annotations": _ANNOTATIONS,
        "subject": DESCRIPTOR,
    },
    required=("manifests",),
)
MANIFEST = obj(
    {
        "schemaVersion": _VERSION,
        "mediaType": string,
        "artifactType": string,
        "config": DESCRIPTOR,
        "layers": listof(DESCRIPTOR),
        "annotations": _ANNOTATIONS,
        "subject": DESCRIPTOR,
    },
    required=("config", "layers"),
)
_STRINGS = nullable(listof(string))
_SET = nullable(mapof(mapof(anything)))  # ExposedPorts, Volumes: {"80/tcp": {}}
RUNTIME = obj(
    {
        "User": string,
        "ExposedPorts": _SET,
        "Env": _STRINGS,
        "Entrypoint": _STRINGS,
        "Cmd": _STRINGS,
        "Volumes": _SET,
        "WorkingDir": string,
        "Labels": nullable(mapof(string)),
        "StopSignal": string,
        "ArgsEscaped": boolean,
        "OnBuild": _STRINGS,
        "Shell": _STRINGS,
        "Healthcheck": nullable(mapof(anything)),
    }
)
_HISTORY = obj({"created": string, "author": string, "created_by": string, "comment": string, "empty_layer": boolean})
CONFIG = obj(
    {
        "created": string,
        "author": string,
        "architecture": string,
        "os": string,
        "os.version": string,
        "os.features": listof(string),
        "variant": string,
        "config": nullable(RUNTIME),
        "rootfs": obj({"type": string, "diff_ids": listof(digest)}, required=("diff_ids",)),
        "history": nullable(listof(_HISTORY)),
    },
    required=("rootfs",),
)
ARCHIVE_MANIFEST = listof(
    obj(
        {"Config": string, "Layers": listof(string), "RepoTags": _STRINGS, "LayerSources": nullable(mapof(DESCRIPTOR))},
        required=("Config", "Layers"),
    ),
    nonempty=True,
)
LAYOUT_FILE = obj({"imageLayoutVersion": string}, required=("imageLayoutVersion",))
TOKEN = obj({"token": string, "access_token": string, "expires_in": number, "issued_at": string, "refresh_token": string})


def load(data: bytes, document: str) -> Any:
    """A JSON value, refusing what is too large, not UTF-8, nested too deeply, NaN or Infinity, or holds
    a string that cannot be written back (a lone surrogate)."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise SourceError(f"{document}: {len(data)} bytes, larger than the {MAX_DOCUMENT_BYTES >> 20} MiB a manifest or config may be")
    try:
        value = json.loads(data, parse_constant=_constant)
    except _Problem as problem:
        raise SourceError(f"{document}: {problem.what}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{document}: not valid JSON ({str(exc)[:80]})") from None
    except RecursionError:
        raise SourceError(f"{document}: JSON nested too deeply") from None
    _check_tree(value, document)
    return value


def _constant(name: str) -> Any:
    raise _Problem("$", f"not valid JSON ({name} is not a JSON number)")


def _check_tree(value: Any, document: str) -> None:
    """Depth and strings of every value, without recursion."""
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SourceError(f"{document}: {path}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, str):
            _writable(item, path, document)
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{n}]", depth + 1) for n, child in enumerate(item))
        elif isinstance(item, dict):
            for key, child in item.items():
                _writable(key, path, document)
                stack.append((child, _member_path(path, key), depth + 1))


def _writable(text: str, path: str, document: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(f"{document}: {path}: a string holds an unpaired surrogate (\\ud800-\\udfff)") from None


def load_object(data: bytes, document: str) -> dict[str, Any]:
    value = load(data, document)
    if not isinstance(value, dict):
        raise SourceError(f"{document}: not a JSON object")
    return value


def check_index(value: dict[str, Any], document: str) -> dict[str, Any]:
    _run(INDEX, value, document)
    return value


def check_manifest(value: dict[str, Any], document: str) -> dict[str, Any]:
    _run(MANIFEST, value, document)
    return value


def check_config(value: dict[str, Any], document: str) -> dict[str, Any]:
    _run(CONFIG, value, document)
    return value


def check_archive_manifest(value: Any, document: str) -> list[dict[str, Any]]:
    _run(ARCHIVE_MANIFEST, value, document)
    return value  # type: ignore[no-any-return]


def check_layout_file(value: dict[str, Any], document: str) -> dict[str, Any]:
    _run(LAYOUT_FILE, value, document)
    return value


def check_token(value: Any, document: str) -> dict[str, Any]:
    _run(TOKEN, value, document)
    return value  # type: ignore[no-any-return]


def created_seconds(config: dict[str, Any]) -> tuple[int, bool] | None:
    """The config's `created` in seconds, clamped to 1970..9999 (and whether it was clamped); None when
    absent or not RFC 3339."""
    stamp = config.get("created")
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        seconds = int(moment.timestamp())
    except (OverflowError, ValueError):  # a local time that only exists outside years 1..9999 in UTC
        seconds = -1 if moment.year < 1970 else MAX_TIME + 1
    clamped = min(max(seconds, 0), MAX_TIME)
    return clamped, clamped != seconds
