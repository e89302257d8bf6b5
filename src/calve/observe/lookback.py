"""Rows a lookback of X days would have read: the work incremental processing saves, from metadata.

A lookback pipeline re-reads, on every run, the last X days of its source by a range column (an
event date or time) and prunes with Iceberg's file statistics: it reads every data file whose bounds
of that column reach into the window. `lookback_rows` counts the records of those files at the
pinned snapshot, from the manifests' column bounds: no data file is read. The window is the last X
days up to the newest value of the column in the table (for a date column, the X days ending with
the newest date; for a timestamp, the X * 24 hours before the newest time). A file without a bound
for the column would be read by the lookback too, so it counts.

The range column of a step is, in this order: the source column behind its output table's
partitioning (identity, year, month, day or hour of a date or timestamp column that the source has
too), else the first `ranges` column of its incremental input that is a date or timestamp. Without
one (no incremental input, an output not partitioned by time and no such `ranges`, a column of
another type) there is no estimate, and the run's `lookback_rows_estimate` stays empty.

Reading every manifest of the source on every run would cost more than the estimate is worth, so
the process keeps, per source table and column, the bounds of the live data files at the last
snapshot it estimated, and brings them forward with the change set the step captured anyway (files
added and removed): a scheduler then reads no manifest at all for it. Without a usable previous
state (the first run of a process, a compaction in between, a change set not captured by the
runner) the manifests are read, each once per process (they are immutable: cached by path).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, HourTransform, IdentityTransform, MonthTransform, YearTransform
from pyiceberg.types import DateType, IcebergType, TimestampType, TimestamptzType

from calve.capture.changes import ChangeSet, Operation
from calve.state.records import StepMetrics
from calve.workflows.model import StepSpec

DAY_MICROS = 86_400_000_000
_TIME_TYPES = (DateType, TimestampType, TimestamptzType)
_TIME_TRANSFORMS = (IdentityTransform, YearTransform, MonthTransform, DayTransform, HourTransform)
_CACHE_SIZE = 4096

# (manifest path, field id) -> per live data file: (lower, upper) in micros (None: no bound), records
_FileBounds = tuple[int | None, int | None, int]
_bounds_cache: OrderedDict[tuple[str, int], dict[str, _FileBounds]] = OrderedDict()


@dataclass(frozen=True)
class _LiveFiles:
    """The live data files of a table at one snapshot: path -> bounds of one column and records."""

    snapshot_id: int
    files: dict[str, _FileBounds]


# (table uuid, field id) -> the live files at the snapshot last estimated
_live: dict[tuple[str, int], _LiveFiles] = {}


def range_column(step: StepSpec, source: Table, target: Table | None) -> str | None:
    """The column a lookback over `source` for `step` would window on, or None (see the module)."""
    source_schema = source.schema()

    def is_time(column: str) -> bool:
        try:
            return isinstance(source_schema.find_field(column).field_type, _TIME_TYPES)
        except ValueError:
            return False

    if target is not None:
        target_schema = target.schema()
        for partition_field in target.spec().fields:
            if isinstance(partition_field.transform, _TIME_TRANSFORMS):
                column = target_schema.find_column_name(partition_field.source_id)
                if column is not None and is_time(column):
                    return column
    for spec in step.incremental_inputs:
        if spec.table == ".".join(source.name()):
            for column in spec.ranges:
                if is_time(column):
                    return column
    return None


def lookback_rows(
    table: Table, snapshot_id: int | None, column: str, days: int, changes: ChangeSet | None = None
) -> int | None:
    """Records of the data files at `snapshot_id` whose `column` bounds reach into the last `days`.

    `changes`, the change set a step captured up to `snapshot_id`, spares the manifest reads when the
    process estimated its start snapshot before (see the module docstring).
    """
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    if snapshot is None:
        return 0 if snapshot_id is None else None
    field = table.schema().find_field(column)
    if not isinstance(field.field_type, _TIME_TYPES):
        return None
    key = (str(table.metadata.table_uuid), field.field_id)
    live = _live.get(key)
    if live is None or live.snapshot_id != snapshot.snapshot_id:
        live = _brought_forward(live, changes, snapshot.snapshot_id, field.field_id, field.field_type)
    if live is None:
        live = _LiveFiles(snapshot.snapshot_id, {})
        for manifest in snapshot.manifests(table.io):
            if manifest.content == ManifestContent.DATA:
                live.files.update(_manifest_bounds(table, manifest, field.field_id, field.field_type))
    _live[key] = live
    files = list(live.files.values())
    uppers = [high for _, high, _ in files if high is not None]
    if not uppers:
        return sum(records for _, _, records in files)
    newest = max(uppers)
    # a date covers its whole day: the window is the `days` days that end with the newest one
    end = newest + DAY_MICROS if isinstance(field.field_type, DateType) else newest
    start = end - days * DAY_MICROS
    return sum(records for _, high, records in files if high is None or high >= start)


def _brought_forward(
    live: _LiveFiles | None,
    changes: ChangeSet | None,
    snapshot_id: int,
    field_id: int,
    field_type: IcebergType,
) -> _LiveFiles | None:
    """`live` moved to `snapshot_id` by `changes`, or None when they do not connect (or a compaction,
    whose files change sets leave out, lies between)."""
    if live is None or changes is None:
        return None
    if (
        changes.from_snapshot_id_exclusive != live.snapshot_id
        or changes.to_snapshot_id_inclusive != snapshot_id
    ):
        return None
    if any(s.operation is Operation.REPLACE for s in changes.snapshots):
        return None
    files = dict(live.files)
    for removed in changes.removed_files:
        files.pop(removed.path, None)
    for added in changes.added_files:
        files[added.path] = _file_bounds(added.data_file, field_id, field_type)
    return _LiveFiles(snapshot_id, files)


def _file_bounds(data_file: Any, field_id: int, field_type: IcebergType) -> _FileBounds:
    return (
        _micros(field_type, (data_file.lower_bounds or {}).get(field_id)),
        _micros(field_type, (data_file.upper_bounds or {}).get(field_id)),
        data_file.record_count,
    )


def _manifest_bounds(
    table: Table, manifest: Any, field_id: int, field_type: IcebergType
) -> dict[str, _FileBounds]:
    key = (manifest.manifest_path, field_id)
    cached = _bounds_cache.get(key)
    if cached is not None:
        _bounds_cache.move_to_end(key)
        return cached
    bounds = {
        entry.data_file.file_path: _file_bounds(entry.data_file, field_id, field_type)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    }
    _bounds_cache[key] = bounds
    if len(_bounds_cache) > _CACHE_SIZE:
        _bounds_cache.popitem(last=False)
    return bounds


def _micros(field_type: IcebergType, raw: bytes | None) -> int | None:
    """A date or timestamp bound as microseconds since the epoch (dates: their midnight)."""
    if raw is None:
        return None
    value = int(from_bytes(field_type, raw))  # type: ignore[arg-type]
    return value * DAY_MICROS if isinstance(field_type, DateType) else value


def run_lookback_rows(
    steps: Iterable[tuple[StepSpec, StepMetrics]],
    tables: Mapping[str, Table],
    days: int,
    changes: Mapping[tuple[str, str], ChangeSet] | None = None,
) -> int | None:
    """What a lookback of `days` would have read for these steps, summed over those that have a range
    column (None when none has): per step, its incremental inputs at the snapshots the step read.
    `changes` are the change sets the run captured, by (step id, table)."""
    total: int | None = None
    for step, metrics in steps:
        if step.output is None:
            continue
        target = tables.get(step.output.table)
        seen: set[str] = set()
        for spec in step.incremental_inputs:
            read = metrics.inputs.get(spec.alias)
            source = tables.get(spec.table)
            if spec.table in seen or source is None or read is None:
                continue
            seen.add(spec.table)
            column = range_column(step, source, target)
            if column is None:
                continue
            captured = (changes or {}).get((step.id, spec.table))
            rows = lookback_rows(source, read.to_snapshot_id, column, days, captured)
            if rows is not None:
                total = (total or 0) + rows
    return total
