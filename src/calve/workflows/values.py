"""Values in workflow files: typed params, sizes, durations, grains and defaults, from YAML or the CLI.

Pure and light: this module imports nothing beyond the standard library, so that validating a file
never loads an engine or pyiceberg. The defaults of settings that workflow files may omit live here,
once: the code that applies them imports them from here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any, TypeVar

# `compact:` steps (and `calve compact`): a file smaller than this is small, and a partition is
# compacted when it has at least this many small files (or files with deletes)
from calve.write.defaults import DEFAULT_MIN_FILES as DEFAULT_MIN_FILES
from calve.write.defaults import DEFAULT_SMALL_FILE_BYTES as DEFAULT_SMALL_FILE_BYTES

# the grains a change range can be widened to (`ranges: {order_day: month}`), finest first
GRAINS = ("day", "month", "year")

DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

PARAM_TYPES: dict[str, Callable[[Any], Any]] = {}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def _to_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value).strip())


def _to_timestamp(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    return dt.datetime.fromisoformat(str(value).strip())


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


PARAM_TYPES.update(
    {
        "string": lambda v: v if isinstance(v, str) else str(v),
        "int": _to_int,
        "float": float,
        "bool": _to_bool,
        "date": _to_date,
        "timestamp": _to_timestamp,
    }
)
PARAM_TYPE_NAMES = [*PARAM_TYPES, *(f"list[{t}]" for t in PARAM_TYPES)]


RELATIVE_DATE = re.compile(r"^\s*logical_date\s*(?:([+-])\s*(\w+)\s*(?:days?)?)?\s*$")

SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_BYTES = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 10**6,
    "MiB": 1 << 20,
    "GB": 10**9,
    "GiB": 1 << 30,
}


def parse_size(value: Any) -> int:
    """'8MiB', '500KB', 1048576 -> bytes."""
    match = SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size: use a number of bytes or a unit, as in 8MiB or 500KB")
    return int(match.group(1)) * _SIZE_BYTES[match.group(2)]


def parse_duration(value: Any) -> int:
    """'90s', '15m', '2h', '1d' (or a number of seconds) -> seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration: use a number and a unit, as in 90s, 15m, 2h, 1d")
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def format_duration(seconds: int) -> str:
    """900 -> '15m': the largest unit that divides `seconds` (what parse_duration reads back)."""
    for unit, size in sorted(_DURATION_SECONDS.items(), key=lambda item: -item[1]):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


DateOrTime = TypeVar("DateOrTime", dt.date, dt.datetime)


def widen(value: DateOrTime, grain: str) -> tuple[DateOrTime, DateOrTime]:
    """The first and the last moment of the `grain` (day, month, year) that `value` falls in.

    For a range overwrite at a coarser grain: widen a change range's min to `widen(low, g)[0]` and its
    max to `widen(high, g)[1]`. A date gives the first and last day; a datetime gives midnight of the
    first day and the last microsecond of the last day, in the value's own tzinfo (inclusive bounds,
    as `between` takes them).

        widen(dt.date(2026, 2, 14), "month") == (dt.date(2026, 2, 1), dt.date(2026, 2, 28))
    """
    if grain not in GRAINS:
        raise ValueError(f"{grain!r} is not a grain: use {', '.join(GRAINS)}")
    if not isinstance(value, dt.date):
        raise TypeError(f"only dates and timestamps can be widened to a {grain}, not {value!r}")
    day = value.date() if isinstance(value, dt.datetime) else value
    if grain == "day":
        first = last = day
    elif grain == "month":
        first = day.replace(day=1)
        last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    else:
        first, last = dt.date(day.year, 1, 1), dt.date(day.year, 12, 31)
    if isinstance(value, dt.datetime):
        start = dt.datetime.combine(first, dt.time.min, value.tzinfo)
        end = dt.datetime.combine(last, dt.time.max, value.tzinfo)
        return start, end  # type: ignore[return-value]  # the TypeVar is datetime here
    return first, last
