"""The checker of calve's YAML files: collects every problem with file:line and key, in file order.

One public `Checker`, used by the workflow loader and by the project file (calve.yaml) alike: each
problem names the file, the line, the key path, what is wrong and how to fix it, with a "did you
mean" for unknown keys and choices.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

from calve.errors import did_you_mean
from calve.workflows.yamlfile import YamlDocument

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
# words from other tools that mean one of ours
SYNONYMS = {"upsert": "merge", "insert": "append", "replace": "overwrite", "changes": "icdc", "full": "table"}


def key_path(key: tuple[Hashable, ...]) -> str:
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


class Checker:
    """Collects problems with file:line and key; builds the specs from what is valid."""

    def __init__(self, doc: YamlDocument, root: Path) -> None:
        self.doc = doc
        self.root = root
        self.problems: list[str] = []
        self._lines: list[int] = []

    def problem(self, key: tuple[Hashable, ...], message: str) -> None:
        self.problem_at(self.doc.path, self.doc.line(key), key, message)

    def problem_at(self, path: Path, line: int | None, key: tuple[Hashable, ...], message: str) -> None:
        """A problem at a line of another file than the YAML one (a step's sql_file)."""
        try:
            shown = path.relative_to(self.root)
        except ValueError:
            shown = path
        where = f"{shown}:{line}" if line else str(shown)
        self._lines.append(self.doc.line(key) or 0)  # file order: the order of the YAML keys
        self.problems.append(f"{where}: {key_path(key)}: {message}")

    def sorted_problems(self) -> list[str]:
        """Problems in file order (they are found in check order)."""
        order = sorted(range(len(self.problems)), key=lambda i: self._lines[i])
        return [self.problems[i] for i in order]

    def mapping(
        self,
        value: Any,
        key: tuple[Hashable, ...],
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problem(key, f"must be a mapping (key: value), not {type(value).__name__}")
            return {}
        allowed = list(allowed)
        for name in value:
            if name not in allowed:
                self.problem(
                    (*key, name),
                    f"unknown key {name!r}{did_you_mean(str(name), allowed)}; "
                    f"allowed here: {', '.join(allowed)}",
                )
        for name in required:
            if name not in value:
                self.problem(key, f"missing required key {name!r}")
        return {k: v for k, v in value.items() if k in allowed}

    def identifier(self, value: Any, key: tuple[Hashable, ...], what: str) -> str | None:
        if not isinstance(value, str) or not IDENTIFIER.match(value):
            self.problem(
                key,
                f"{what} {value!r} is not valid: use a letter or '_', then letters, digits or '_' "
                "(at most 63 characters)",
            )
            return None
        return value

    def table(self, value: Any, key: tuple[Hashable, ...]) -> str | None:
        if not isinstance(value, str) or not TABLE_NAME.match(value):
            self.problem(key, f"table {value!r} is not valid: write NAMESPACE.TABLE, as in db.events")
            return None
        return value

    def names(self, value: Any, key: tuple[Hashable, ...], what: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            self.problem(key, f"must be a non-empty list of {what}")
            return ()
        return tuple(n for i, v in enumerate(value) if (n := self.identifier(v, (*key, i), what)))

    def choice(self, value: Any, key: tuple[Hashable, ...], choices: Iterable[str]) -> str | None:
        choices = list(choices)
        if value not in choices:
            hint = did_you_mean(str(value), choices)
            if not hint and SYNONYMS.get(str(value)) in choices:
                hint = f" (did you mean {SYNONYMS[str(value)]!r}?)"
            self.problem(key, f"{value!r} is not one of {', '.join(choices)}{hint}")
            return None
        return str(value)
