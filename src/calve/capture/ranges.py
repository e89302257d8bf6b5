"""Change ranges: min and max of columns over a change set's files, from manifest bounds only.

The bounds come from the column statistics that writers store per data file in the manifests, so
no data file is read. Where a file has no bound for the column (metrics disabled, a column added
after the file was written) the range says so instead of guessing; where a string or binary bound
may have been truncated by the writer (16 characters by default), it says that too: the lower
bound stays a true lower bound, the upper bound an over-estimate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pyiceberg.conversions import from_bytes
from pyiceberg.schema import Schema
from pyiceberg.types import (
    BinaryType,
    DateType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    PrimitiveType,
    StringType,
    TimestampType,
    TimestamptzType,
    TimeType,
)

from calve.capture.changes import ChangeSet, FileChange
from calve.errors import CalveError

# pyiceberg's default `write.metadata.metrics.default` is truncate(16)
TRUNCATE_LENGTH = 16
_EPOCH = dt.datetime(1970, 1, 1)


@dataclass(frozen=True)
class ColumnRange:
    """The range of one column over the changed files."""

    column: str
    min: Any
    max: Any
    files: int  # files that have bounds for the column
    files_without_bounds: int  # files whose range is unknown: the range may be wider
    truncated: bool  # a string/binary bound may be a prefix: min is still a lower bound

    @property
    def complete(self) -> bool:
        return self.files_without_bounds == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "min": _json_value(self.min),
            "max": _json_value(self.max),
            "files": self.files,
            "files_without_bounds": self.files_without_bounds,
            "complete": self.complete,
            "truncated": self.truncated,
        }


def change_ranges(
    change_set: ChangeSet, schema: Schema, columns: list[str], files: list[FileChange] | None = None
) -> dict[str, ColumnRange]:
    """Min and max of each column over the change set's added and removed files.

    Delete files carry no bounds for data columns, so a change set with delete files reports its
    ranges as incomplete (`files_without_bounds`) rather than narrower than they are. `schema`
    resolves column names to field ids (use the table's current schema: field ids are
    stable across renames, so old files are matched correctly).
    """
    if files is None:
        files = [
            *change_set.added_files,
            *change_set.removed_files,
            *change_set.added_delete_files,
            *change_set.removed_delete_files,
        ]
    return {column: _column_range(schema, column, files) for column in columns}


def _column_range(schema: Schema, column: str, files: list[FileChange]) -> ColumnRange:
    try:
        field = schema.find_field(column)
    except ValueError as exc:
        names = ", ".join(f.name for f in schema.fields)
        raise CalveError(f"column {column!r} is not in the table's schema (columns: {names})") from exc
    if not isinstance(field.field_type, PrimitiveType):
        raise CalveError(f"column {column!r} is {field.field_type}: ranges need a primitive column")
    lows, highs, without, truncated = [], [], 0, False
    for file in files:
        lower = (file.data_file.lower_bounds or {}).get(field.field_id)
        upper = (file.data_file.upper_bounds or {}).get(field.field_id)
        if lower is None or upper is None:
            without += 1
            continue
        low, high = _decode(field.field_type, lower), _decode(field.field_type, upper)
        lows.append(low)
        highs.append(high)
        if isinstance(field.field_type, StringType | BinaryType):
            truncated |= _maybe_truncated(low) or _maybe_truncated(high)
    return ColumnRange(
        column=column,
        min=_typed(field.field_type, min(lows)) if lows else None,
        max=_typed(field.field_type, max(highs)) if highs else None,
        files=len(lows),
        files_without_bounds=without,
        truncated=truncated,
    )


def _decode(field_type: IcebergType, raw: bytes) -> Any:
    """Decode a bound, allowing for type promotion (int -> long, float -> double)."""
    if isinstance(field_type, LongType) and len(raw) == 4:
        field_type = IntegerType()
    elif isinstance(field_type, DoubleType) and len(raw) == 4:
        field_type = FloatType()
    return from_bytes(field_type, raw)  # type: ignore[arg-type]


def _maybe_truncated(value: Any) -> bool:
    return value is not None and len(value) >= TRUNCATE_LENGTH


def _typed(field_type: IcebergType, value: Any) -> Any:
    """Iceberg's physical values (days, micros) as Python dates and times."""
    if value is None:
        return None
    if isinstance(field_type, DateType):
        return dt.date(1970, 1, 1) + dt.timedelta(days=value)
    if isinstance(field_type, TimestampType):
        return _EPOCH + dt.timedelta(microseconds=value)
    if isinstance(field_type, TimestamptzType):
        return (_EPOCH + dt.timedelta(microseconds=value)).replace(tzinfo=dt.UTC)
    if isinstance(field_type, TimeType):
        return (dt.datetime.min + dt.timedelta(microseconds=value)).time()
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def file_bounds(data_file: Any, field_id: int, field_type: IcebergType) -> tuple[Any, Any]:
    """A data file's (lower, upper) bound of a column as Python values; None where unknown.

    A string or binary upper bound that may be a truncated prefix is reported as unknown (None),
    so that it can never exclude a file that holds a larger value.
    """
    lower = (data_file.lower_bounds or {}).get(field_id)
    upper = (data_file.upper_bounds or {}).get(field_id)
    low = _typed(field_type, _decode(field_type, lower)) if lower is not None else None
    high = _typed(field_type, _decode(field_type, upper)) if upper is not None else None
    if high is not None and isinstance(field_type, StringType | BinaryType) and _maybe_truncated(high):
        high = None
    return low, high
