"""YAML with line numbers: plain Python values plus the line of every key, for errors that point home.

doc = load_yaml(path)
doc.value            # dicts, lists, str, int, float, bool, None (YAML 1.1 safe types)
doc.line(("steps", 1, "output", "mode"))   # 1-based line of that key or item
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from calve.errors import ConfigError

PathKey = tuple[Hashable, ...]


@dataclass
class YamlDocument:
    path: Path
    value: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    # the line where a scalar value's text starts (the line after `|` or `>` for block scalars)
    text_lines: dict[PathKey, int] = field(default_factory=dict)

    def line(self, key: PathKey) -> int | None:
        """The line of `key`, or of its nearest enclosing key that has one."""
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get(())


def load_yaml(path: Path) -> YamlDocument:
    text = path.read_text(encoding="utf-8")
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from exc
    doc = YamlDocument(path, None)
    if node is not None:
        doc.value = _convert(node, (), doc)
    return doc


def _convert(node: yaml.Node, key: PathKey, doc: YamlDocument) -> Any:
    lines = doc.lines
    lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            name = yaml.SafeLoader(b"").construct_object(key_node)
            if isinstance(name, list | dict):
                name = str(name)
            lines[(*key, name)] = key_node.start_mark.line + 1
            result[name] = _convert(value_node, (*key, name), doc)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*key, index), doc) for index, item in enumerate(node.value)]
    block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
    doc.text_lines[key] = node.start_mark.line + 1 + (1 if block else 0)
    return yaml.SafeLoader(b"").construct_object(node)
