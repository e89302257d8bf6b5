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

Manifests are immutable, so the bounds read from each are cached in the process by manifest path:
a scheduler reads only the manifests that new commits wrote.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, HourTransform, IdentityTransform, MonthTransform, YearTransform
from pyiceberg.types import DateType, IcebergType, TimestampType, TimestamptzType

from calve.state.records import StepMetrics
from calve.workflows.model import StepSpec

DAY_MICROS = 86_400_000_000
_TIME_TYPES = (DateType, TimestampType, TimestamptzType)
_TIME_TRANSFORMS = (IdentityTransform, YearTransform, MonthTransform, DayTransform, HourTransform)
_CACHE_SIZE = 4096

# (manifest path, field id) -> per live data file: (lower, upper) in micros (None: no bound), records
_FileBounds = tuple[int | None, int | None, int]
_bounds_cache: OrderedDict[tuple[str, int], list[_FileBounds]] = OrderedDict()


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


def lookback_rows(table: Table, snapshot_id: int | None, column: str, days: int) -> int | None:
    """Records of the data files at `snapshot_id` whose `column` bounds reach into the last `days`."""
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    if snapshot is None:
        return 0 if snapshot_id is None else None
    field = table.schema().find_field(column)
    if not isinstance(field.field_type, _TIME_TYPES):
        return None
    files: list[_FileBounds] = []
    for manifest in snapshot.manifests(table.io):
        if manifest.content == ManifestContent.DATA:
            files.extend(_manifest_bounds(table, manifest, field.field_id, field.field_type))
    uppers = [high for _, high, _ in files if high is not None]
    if not uppers:
        return sum(records for _, _, records in files)
    newest = max(uppers)
    # a date covers its whole day: the window is the `days` days that end with the newest one
    end = newest + DAY_MICROS if isinstance(field.field_type, DateType) else newest
    start = end - days * DAY_MICROS
    return sum(records for _, high, records in files if high is None or high >= start)


def _manifest_bounds(
    table: Table, manifest: Any, field_id: int, field_type: IcebergType
) -> list[_FileBounds]:
    key = (manifest.manifest_path, field_id)
    cached = _bounds_cache.get(key)
    if cached is not None:
        _bounds_cache.move_to_end(key)
        return cached
    bounds = [
        (
            _micros(field_type, (entry.data_file.lower_bounds or {}).get(field_id)),
            _micros(field_type, (entry.data_file.upper_bounds or {}).get(field_id)),
            entry.data_file.record_count,
        )
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    ]
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
    steps: Iterable[tuple[StepSpec, StepMetrics]], tables: Mapping[str, Table], days: int
) -> int | None:
    """What a lookback of `days` would have read for these steps, summed over those that have a range
    column (None when none has): per step, its incremental inputs at the snapshots the step read."""
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
            rows = lookback_rows(source, read.to_snapshot_id, column, days)
            if rows is not None:
                total = (total or 0) + rows
    return total
