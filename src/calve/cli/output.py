"""One output abstraction for every command: rich text for people, one JSON object for scripts."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from rich.console import Console


def _default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


class Output:
    """Prints a command's result as text (`render`) or, with --json, as one JSON object."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        # piped output is read by people too (CI logs): don't squeeze 19-digit snapshot ids into 80 columns
        self.console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
        self.err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)

    def result(self, payload: dict[str, Any], render: Callable[[Console], None]) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps(payload, default=_default, indent=2) + "\n")
        else:
            render(self.console)

    def progress(self, message: str) -> None:
        """Progress for people goes to stderr, so that --json output stays parseable."""
        if not self.json_mode:
            self.err.print(f"[dim]{message}[/dim]")

    def error(self, message: str) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps({"error": message}) + "\n")
        self.err.print(f"[bold red]error:[/bold red] {message}")


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"
