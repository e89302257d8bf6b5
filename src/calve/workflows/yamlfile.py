"""YAML with line numbers: plain Python values plus the line of every key, for errors that point home.

doc = load_yaml(path, root)
doc.value            # dicts, lists, str, int, float, bool, None, dates (YAML 1.1 safe types)
doc.line(("steps", 1, "output", "mode"))   # 1-based line of that key or item

Anchors, aliases and merge keys work (`<<: *base`, or `<<: [*a, *b]`): a mapping's own keys win over
merged ones, and an earlier merged mapping over a later one, as in YAML 1.1. A key that a merge
brings in is placed at the line of its `<<`, where this mapping takes it; what is inside the merged
value keeps the lines where it is written, as for any alias. A scalar's text line (`text_lines`) is
always where the text is written, so that SQL error lines stay right.

Whatever is wrong with the text (its syntax, a tag that is not a plain value, a recursive alias, a
merge of something that is not a mapping) raises a ConfigError that starts with `file:line:`; no
YAML exception escapes.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from calve.errors import ConfigError

PathKey = tuple[Hashable, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"


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


def load_yaml(path: Path, root: Path | None = None) -> YamlDocument:
    """Read and parse `path`; errors name it relative to `root` (when it is under `root`)."""
    text = path.read_text(encoding="utf-8")
    return parse_yaml(text, path, root)


def parse_yaml(text: str, path: Path, root: Path | None = None) -> YamlDocument:
    shown = _shown(path, root)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}" if mark is not None else shown
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    doc = YamlDocument(path, None)
    if node is not None:
        doc.value = _Converter(doc, shown).convert(node, ())
    return doc


def _shown(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


class _Converter:
    """Turns a composed node tree into plain values, recording lines as it goes."""

    def __init__(self, doc: YamlDocument, shown: str) -> None:
        self.doc = doc
        self.shown = shown
        self.constructor = yaml.SafeLoader("")
        self.active: set[int] = set()  # the nodes being converted: an alias among them is recursive

    def error(self, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(f"{self.shown}:{node.start_mark.line + 1}: {message}")

    def convert(self, node: yaml.Node, key: PathKey) -> Any:
        self.doc.lines.setdefault(key, node.start_mark.line + 1)
        if id(node) in self.active:
            raise self.error(node, "an alias refers to a node that contains it (a recursive anchor)")
        if isinstance(node, yaml.MappingNode):
            self.active.add(id(node))
            result: dict[Any, Any] = {}
            for name, (value_node, line) in self.pairs(node).items():
                self.doc.lines[(*key, name)] = line
                result[name] = self.convert(value_node, (*key, name))
            self.active.discard(id(node))
            return result
        if isinstance(node, yaml.SequenceNode):
            self.active.add(id(node))
            items = [self.convert(item, (*key, index)) for index, item in enumerate(node.value)]
            self.active.discard(id(node))
            return items
        block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
        self.doc.text_lines[key] = node.start_mark.line + 1 + (1 if block else 0)
        return self.construct(node)

    def pairs(self, node: yaml.MappingNode) -> dict[Any, tuple[yaml.Node, int]]:
        """The mapping's keys with their value node and line, merges resolved (the winner of each)."""
        merged: dict[Any, tuple[yaml.Node, int]] = {}
        own: dict[Any, tuple[yaml.Node, int]] = {}
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                own[self.key(key_node)] = (value_node, key_node.start_mark.line + 1)
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise self.error(
                        source,
                        "a merge key (<<) takes a mapping, an alias of one (<<: *base) or a list of "
                        "them (<<: [*a, *b])",
                    )
                if id(source) in self.active or source is node:
                    raise self.error(source, "a merge key (<<) merges a mapping that contains it")
                self.active.add(id(source))
                for name, (value, _) in self.pairs(source).items():
                    merged.setdefault(name, (value, key_node.start_mark.line + 1))  # earlier wins
                self.active.discard(id(source))
        return {**merged, **own}

    def key(self, node: yaml.Node) -> Any:
        name = self.construct(node)
        return str(name) if isinstance(name, list | dict) else name

    def construct(self, node: yaml.Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise self.error(
                node,
                f"{problem}: write plain values (strings, numbers, booleans, dates, lists, mappings; "
                "anchors, aliases and << merge keys work)",
            ) from None
        except (TypeError, ValueError) as exc:
            raise self.error(
                node,
                f"{node.value!r} cannot be read as {node.tag.rsplit(':', 1)[-1]}: {exc}; fix the value, "
                "or quote it (without a tag) to keep it a string",
            ) from None
