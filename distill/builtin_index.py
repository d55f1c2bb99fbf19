"""The built-in profiles, pre-parsed: `profiles/parsed.json` holds each built-in file's YAML document
with the sha256 of the text it was parsed from, so a run that loads only built-ins never imports
PyYAML (its import and parse were about a tenth of a rootfs run).

The digest ties an entry to the YAML text it was parsed from (the index itself is part of the
package, like the code): a file whose text no longer matches (a built-in edited in a checkout) is
parsed from its YAML as before, so a stale index costs time, not correctness; `make profiles` writes
it again, and tests/unit/test_profile.py fails while it is stale. Only documents that JSON carries
exactly are kept (mappings with string keys, lists, strings, booleans, null): an integer would lose
how it was written, which the schema reads (`mode: 755` is refused as a likely typo for octal), so
built-ins write numbers as strings (`mode: '0755'`) and `make profiles` refuses one that does not.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["INDEX_NAME", "carried_by_json", "indexed_document", "write_index"]

INDEX_NAME = "parsed.json"
_FORMAT = 1


def indexed_document(path: Path, text: str) -> tuple[Any] | None:
    """(document,) of a built-in file from the index when its text is the one indexed; None otherwise."""
    entry = _index(path.parent).get(path.name)
    if not isinstance(entry, dict) or entry.get("sha256") != hashlib.sha256(text.encode()).hexdigest() or "document" not in entry:
        return None
    return (entry["document"],)


@functools.cache
def _index(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / INDEX_NAME).read_bytes())
    except (OSError, ValueError):
        return {}
    documents = data.get("documents") if isinstance(data, dict) and data.get("format") == _FORMAT else None
    return documents if isinstance(documents, dict) else {}


def write_index(directory: Path) -> tuple[Path, list[str]]:
    """Parse every built-in in `directory` the way a user file is parsed and write the index beside them;
    (the index, why each file left out is left out)."""
    from distill.yamlsafe import parse_yaml

    documents, left_out = {}, []
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        document, error = parse_yaml(text, path.name)
        if error is not None:
            left_out.append(error)
        elif not carried_by_json(document):
            left_out.append(f"{path.name}: holds a number or a date; write it as a string (mode: '0755')")
        else:
            documents[path.name] = {"sha256": hashlib.sha256(text.encode()).hexdigest(), "document": document}
    target = directory / INDEX_NAME
    # keys in document order, not sorted: the schema reads the order (paths, accounts)
    target.write_text(json.dumps({"format": _FORMAT, "documents": documents}, indent=1) + "\n")
    return target, left_out


def carried_by_json(value: Any) -> bool:
    """Whether JSON gives `value` back exactly (no integer whose spelling the schema reads, no date)."""
    if isinstance(value, dict):
        return all(isinstance(key, str) and carried_by_json(item) for key, item in value.items())
    if isinstance(value, list):
        return all(carried_by_json(item) for item in value)
    return value is None or isinstance(value, (str, bool))


if __name__ == "__main__":  # `make profiles`: python -m distill.builtin_index profiles
    import sys

    written, skipped = write_index(Path(sys.argv[1]))
    print(written)
    for reason in skipped:
        print(f"not indexed: {reason}", file=sys.stderr)
    sys.exit(1 if skipped else 0)
