"""How late data arrives in a table, from metadata alone: commit times against event-time bounds.

`manifest_lateness` walks the table's current line of ancestry, newest first, and for each data file
that a snapshot added (appends and overwrites; compaction's `replace` adds no new data and is
skipped) compares the snapshot's commit time with the file's bounds of the event-time column, read
from the manifest's column statistics: no data file is read.

- `max_lateness_s` = commit time - lower bound: how late the oldest event of the file arrived.
- `min_lateness_s` = commit time - upper bound: every event of the file is at least this late.

A date column's bounds count as midnight UTC of the day; timestamps without a zone as UTC. A file
without a bound for the column is counted in `files_without_bounds` of its snapshot, never guessed.
This is the web UI's own small estimate; the `calve lateness` report supersedes it once it lands
(the UI only needs a list of `FileLateness`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.manifest import DataFileContent, ManifestContent, ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.types import DateType, TimestampType, TimestamptzType

from calve.capture.ranges import file_bounds
from calve.errors import ConfigError

UTC = dt.UTC
EVENT_TIME_TYPES = (DateType, TimestampType, TimestamptzType)


@dataclass(frozen=True)
class FileLateness:
    """One added data file: when it was committed and how old its events were by then."""

    snapshot_id: int
    committed_at: float  # epoch seconds
    records: int
    event_time_min: dt.datetime
    event_time_max: dt.datetime

    @property
    def max_lateness_s(self) -> float:
        return self.committed_at - self.event_time_min.timestamp()

    @property
    def min_lateness_s(self) -> float:
        return self.committed_at - self.event_time_max.timestamp()


@dataclass
class SnapshotLateness:
    """The files one snapshot added, with their lateness."""

    snapshot_id: int
    committed_at: float
    operation: str
    files: list[FileLateness] = field(default_factory=list)
    files_without_bounds: int = 0

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    @property
    def max_lateness_s(self) -> float | None:
        return max((f.max_lateness_s for f in self.files), default=None)


def event_time_columns(table: Table) -> list[str]:
    """The table's date and timestamp columns (top-level), in schema order: event-time candidates."""
    return [f.name for f in table.schema().fields if isinstance(f.field_type, EVENT_TIME_TYPES)]


def manifest_lateness(table: Table, column: str, max_snapshots: int = 100) -> list[SnapshotLateness]:
    """Lateness of the data files added by the last `max_snapshots` snapshots, newest first."""
    schema = table.schema()
    try:
        column_field = schema.find_field(column)
    except ValueError:
        raise ConfigError(
            f"{column!r} is not a column of the table; event-time columns: "
            f"{', '.join(event_time_columns(table)) or '(none: no date or timestamp column)'}"
        ) from None
    if not isinstance(column_field.field_type, EVENT_TIME_TYPES):
        raise ConfigError(
            f"{column!r} is a {column_field.field_type} column: give a date or timestamp column"
        )
    by_id = {s.snapshot_id: s for s in table.metadata.snapshots}
    io = table.io
    found: list[SnapshotLateness] = []
    snapshot = table.current_snapshot()
    while snapshot is not None and len(found) < max_snapshots:
        operation = snapshot.summary.operation.value if snapshot.summary else "unknown"
        if operation != "replace":
            entry = SnapshotLateness(snapshot.snapshot_id, snapshot.timestamp_ms / 1000, operation)
            for manifest in snapshot.manifests(io):
                if (
                    manifest.content != ManifestContent.DATA
                    or manifest.added_snapshot_id != snapshot.snapshot_id
                ):
                    continue
                for item in manifest.fetch_manifest_entry(io, discard_deleted=True):
                    if (
                        item.status != ManifestEntryStatus.ADDED
                        or item.data_file.content != DataFileContent.DATA
                    ):
                        continue
                    low, high = file_bounds(item.data_file, column_field.field_id, column_field.field_type)
                    if low is None or high is None:
                        entry.files_without_bounds += 1
                        continue
                    entry.files.append(
                        FileLateness(
                            snapshot.snapshot_id,
                            entry.committed_at,
                            item.data_file.record_count,
                            _moment(low),
                            _moment(high),
                        )
                    )
            found.append(entry)
        parent = snapshot.parent_snapshot_id
        snapshot = by_id.get(parent) if parent is not None else None
    return found


def _moment(value: Any) -> dt.datetime:
    """A date or timestamp bound as an aware UTC datetime (a date: its midnight)."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise TypeError(f"not a date or timestamp bound: {value!r}")
