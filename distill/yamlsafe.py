"""YAML for profiles: safe, without aliases (no billion-laughs expansion), remembering how integers
were written (so `mode: 755` can be refused as a likely typo), and with one-line errors.

A profile file is read by PyYAML's pure-Python parser, whose errors carry the positions messages
name. The built-in profiles are read from their pre-parsed index (distill.builtin_index), which this
parser wrote, so a run that uses only built-ins does not import PyYAML.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["parse_yaml"]


class _Int(int):
    """A YAML integer that remembers how it was written (so `mode: 755` can be refused)."""

    text: str


def _construct_int(loader: Any, node: yaml.ScalarNode) -> int:
    value = _Int(loader.construct_yaml_int(node))
    value.text = node.value
    return value


class _Loader(yaml.SafeLoader):
    """Safe YAML without aliases (no billion-laughs expansion)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stubs leave it untyped
            raise yaml.MarkedYAMLError("", None, "aliases are not allowed in profiles; write the value out", event.start_mark)
        return super().compose_node(parent, index)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def parse_yaml(text: str, where: str) -> tuple[Any, str | None]:
    """(document, error); the error is one line naming the file and position."""
    try:
        return yaml.load(text, Loader=_Loader), None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        return None, f"{where}{position}: {exc.problem or exc.context}"
    except yaml.YAMLError as exc:
        return None, f"{where}: not valid YAML ({str(exc).splitlines()[0]})"
    except RecursionError:
        return None, f"{where}: nested too deeply to be a profile"
