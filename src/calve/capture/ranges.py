"""Change ranges: min and max of columns over a change set's files, from manifest bounds only.

The bounds come from the column statistics that writers store per data file in the manifests, so
no data file is read. Where a file has no bound for the column (metrics disabled, a column added
after the file was written) the range says so instead of guessing; where a string or binary bound
may have been truncated by the writer (16 characters by default), it says that too: the lower
bound stays a true lower bound, the upper bound an over-estimate.

Delete files carry no bounds for the data columns. A position delete file (merge-on-read DELETE,
UPDATE, MERGE of Spark, Flink, Trino or calve) says which data files it deletes rows from: its
`referenced_data_file` when set, else the bounds of its `file_path` column (field id 2147483546;
one path when lower equals upper). Given the table, the range takes the bounds of those data files
from the table's manifests instead: the deleted rows lie within them. Still metadata only. An
equality delete file has bounds for its own (equality) columns, which count for those columns;
for any other column it leaves the range incomplete.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import DataFile, DataFileContent, ManifestContent, ManifestFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table
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
FILE_PATH_ID = 2147483546  # the `file_path` column of position delete files (Iceberg spec)
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
    change_set: ChangeSet,
    schema: Schema,
    columns: list[str],
    files: list[FileChange] | None = None,
    table: Table | None = None,
) -> dict[str, ColumnRange]:
    """Min and max of each column over the change set's added and removed files.

    `schema` resolves column names to field ids (use the table's current schema: field ids are
    stable across renames, so old files are matched correctly). Without `table`, a delete file
    counts as a file without bounds (`complete: false`) rather than narrow the range; with it, a
    position delete file counts as the data files it references (read from the manifests).
    """
    if files is None:
        files = [
            *change_set.added_files,
            *change_set.removed_files,
            *change_set.added_delete_files,
            *change_set.removed_delete_files,
        ]
    sources = _bound_sources(table, files)
    return {column: _column_range(schema, column, sources) for column in columns}


def _bound_sources(table: Table | None, files: list[FileChange]) -> list[DataFile | None]:
    """The files whose bounds make the range: each changed data file, each position delete file's
    referenced data files (None where they cannot be found), each equality delete file itself."""
    sources: list[DataFile | None] = []
    seen: set[str] = set()
    index = _DataFileIndex(table) if table is not None else None

    def add(data_file: DataFile) -> None:
        if data_file.file_path not in seen:
            seen.add(data_file.file_path)
            sources.append(data_file)

    for file in files:
        if file.data_file.content != DataFileContent.POSITION_DELETES or index is None:
            add(file.data_file)
            continue
        referenced = index.referenced(file)
        if referenced:
            for data_file in referenced:
                add(data_file)
        else:
            sources.append(None)
    return sources


class _DataFileIndex:
    """Live data files of a table's snapshots, by partition, read from manifests on demand."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._by_snapshot: dict[int, dict[tuple[int, Any], list[DataFile]]] = {}
        self._by_manifest: dict[str, list[DataFile]] = {}

    def _partitions(self, snapshot_id: int | None) -> dict[tuple[int, Any], list[DataFile]]:
        if snapshot_id is None:
            return {}
        if snapshot_id not in self._by_snapshot:
            snapshot = self.table.metadata.snapshot_by_id(snapshot_id)
            partitions: dict[tuple[int, Any], list[DataFile]] = {}
            if snapshot is not None:
                for manifest in snapshot.manifests(self.table.io):
                    if manifest.content != ManifestContent.DATA:
                        continue
                    for data_file in self._files(manifest):
                        partitions.setdefault((data_file.spec_id, data_file.partition), []).append(data_file)
            self._by_snapshot[snapshot_id] = partitions
        return self._by_snapshot[snapshot_id]

    def _files(self, manifest: ManifestFile) -> list[DataFile]:
        """A manifest's live files, read once: successive snapshots share most manifests."""
        if manifest.manifest_path not in self._by_manifest:
            entries = manifest.fetch_manifest_entry(self.table.io, discard_deleted=True)
            self._by_manifest[manifest.manifest_path] = [e.data_file for e in entries]
        return self._by_manifest[manifest.manifest_path]

    def referenced(self, delete: FileChange) -> list[DataFile]:
        """The data files a position delete file may delete rows of, live when it was added or removed
        (its snapshot or that snapshot's parent); empty when none is found."""
        delete_file = delete.data_file
        snapshot = self.table.metadata.snapshot_by_id(delete.snapshot_id)
        parent = snapshot.parent_snapshot_id if snapshot is not None else None
        key = (delete_file.spec_id, delete_file.partition)
        candidates: dict[str, DataFile] = {}
        for snapshot_id in (delete.snapshot_id, parent):
            for data_file in self._partitions(snapshot_id).get(key, []):
                candidates.setdefault(data_file.file_path, data_file)
        low, high = _path_bounds(delete_file)
        within = [p for p in candidates if (low is None or low <= p) and (high is None or p <= high)]
        return [candidates[p] for p in within]


def _path_bounds(delete_file: DataFile) -> tuple[str | None, str | None]:
    """The range of data file paths a position delete file references (None: unbounded)."""
    referenced = getattr(delete_file, "referenced_data_file", None)
    if referenced:
        return referenced, referenced
    lower = (delete_file.lower_bounds or {}).get(FILE_PATH_ID)
    upper = (delete_file.upper_bounds or {}).get(FILE_PATH_ID)
    low = lower.decode("utf-8", "replace") if lower is not None else None
    high = upper.decode("utf-8", "replace") if upper is not None else None
    return low, high  # taken as exact, as readers do when they match delete files to data files


def _column_range(schema: Schema, column: str, files: list[DataFile | None]) -> ColumnRange:
    try:
        field = schema.find_field(column)
    except ValueError as exc:
        names = ", ".join(f.name for f in schema.fields)
        raise CalveError(f"column {column!r} is not in the table's schema (columns: {names})") from exc
    if not isinstance(field.field_type, PrimitiveType):
        raise CalveError(f"column {column!r} is {field.field_type}: ranges need a primitive column")
    lows, highs, without, truncated = [], [], 0, False
    for data_file in files:
        lower = (data_file.lower_bounds or {}).get(field.field_id) if data_file is not None else None
        upper = (data_file.upper_bounds or {}).get(field.field_id) if data_file is not None else None
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
