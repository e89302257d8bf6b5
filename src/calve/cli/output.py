"""One output abstraction for every command: rich text for people, one JSON object for scripts.

Results go to stdout (text, or one JSON object with --json); progress and log lines go to stderr,
except the scheduler's log, which is its output. Log and progress lines are printed whole, never
wrapped, whatever the terminal: a line that a pipe or a CI log splits in two no longer holds its
run id next to its workflow.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

    # the consoles are built on first use: rich is not imported by commands that print nothing
    @cached_property
    def console(self) -> Console:
        from rich.console import Console

        # piped output is read by people too (CI logs): don't squeeze 19-digit snapshot ids into 80 columns
        return Console(highlight=False, width=None if sys.stdout.isatty() else 200)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)

    def result(self, payload: dict[str, Any], render: Callable[[Console], None]) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps(payload, default=_default, indent=2) + "\n")
        else:
            render(self.console)

    def progress(self, message: str) -> None:
        """Progress for people goes to stderr, so that --json output stays parseable; one line, unwrapped."""
        if not self.json_mode:
            from rich.text import Text

            self.err.print(Text(message, style="dim"), soft_wrap=True)

    def log(self, message: str) -> None:
        """A log line of a long-running command (the scheduler) on stdout: as is, never wrapped."""
        self.console.print(message, markup=False, soft_wrap=True)

    def error(self, message: str) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps({"error": message}) + "\n")
        from rich.text import Text

        self.err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"
