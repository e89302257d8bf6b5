"""Values in workflow files: typed params, sizes and durations, parsed from YAML or the command line."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

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
