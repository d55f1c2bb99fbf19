"""YAML for profiles: safe, without aliases (no billion-laughs expansion), remembering how integers
were written (so `mode: 755` can be refused as a likely typo), and with one-line errors.

A profile file is read by PyYAML's pure-Python parser, whose errors carry the positions messages
name. The built-in profiles, which ship with distill and parse cleanly, are read by libyaml's parser
(`yaml.CSafeLoader`, about 20 times faster) where PyYAML has it; tests/unit/test_profile.py proves it
gives every built-in the same document, integers' spelling included, and the pure-Python parser still
reads a built-in whenever the fast one finds anything to complain about.
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

_FastLoader: type[Any] | None = None
if hasattr(yaml, "CSafeLoader"):  # PyYAML built with libyaml

    class _CLoader(yaml.CSafeLoader):
        """The built-ins' reader: libyaml's parser and composer, the same constructors."""

    _CLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
    _FastLoader = _CLoader


def parse_yaml(text: str, where: str, *, builtin: bool = False) -> tuple[Any, str | None]:
    """(document, error); the error is one line naming the file and position. `builtin`: a built-in profile."""
    if builtin and _FastLoader is not None:
        document = _fast(text)
        if document is not None:
            return document[0], None
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


def _fast(text: str) -> tuple[Any] | None:
    """(document,) through libyaml, or None when it objects or the document holds an alias (libyaml
    composes an alias as the anchored node again), so that the pure-Python parser says what is wrong."""
    assert _FastLoader is not None
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _has_alias(node):
            return None
        return (loader.construct_document(node) if node is not None else None,)
    except (yaml.YAMLError, RecursionError):
        return None
    finally:
        loader.dispose()


def _has_alias(root: yaml.Node) -> bool:
    """Whether a node is reached twice (an alias, or a cycle through one)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            return True
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(item for pair in node.value for item in pair)
    return False
