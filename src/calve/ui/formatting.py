"""How the web UI's templates write values: times, durations, numbers, sizes, error messages.

Each is a Jinja2 filter (registered in `calve.ui.app`) that takes whatever a record holds — a number,
None, a string from an older or newer calve — and returns text, never raising: a page shows an odd
value as it is rather than failing.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from markupsafe import Markup, escape

from calve.ui.svg import duration_label

# a workflow file and line in an error message: workflows/daily.yaml:12, stage1.sql:3
FILE_LINE = re.compile(r"[\w./-]+\.(?:ya?ml|sql|py):\d+")


def format_time(value: Any) -> str:
    """Epoch seconds (or a datetime) as `YYYY-MM-DD HH:MM:SS` UTC; "" for nothing."""
    if value is None or value == "":
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    try:
        return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)


def format_duration(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ""
    return duration_label(float(value)) if value >= 60 else f"{value:.2f}s"


def format_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"


def format_bytes(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def first_line(value: Any, width: int = 100) -> str:
    if not value:
        return ""
    line = str(value).splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def mark_file_lines(text: Any) -> Markup:
    """An error message, escaped, with each workflow `file:line` in it wrapped in <code class=file-line>."""
    escaped = str(escape(str(text or "")))
    return Markup(FILE_LINE.sub(lambda m: f'<code class="file-line">{m.group(0)}</code>', escaped))
