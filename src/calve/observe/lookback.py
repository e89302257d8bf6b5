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

Reading every manifest of the source on every run would cost more than the estimate is worth. The
estimate needs, of the live data files, only their records by upper bound of the column, so that
is the state kept per source table and column: a histogram {upper bound (None: no bound): (files,
records)} at one snapshot. It is exact: the window's start follows from the newest upper bound
(the histogram's largest key with files), and a file counts exactly when its upper bound reaches
the start or it has none, so the estimate is a sum over the histogram's keys. The change set the
step captured anyway (net files added and removed, with their bounds) brings it forward exactly:
each added data file adds (1, records) at its upper bound, each removed one subtracts its own. A
compaction (`replace` snapshot) in between, whose files change sets leave out, or a change set that
does not start at the state's snapshot, makes it unusable (as does a count going negative, which an
exact state cannot do): the manifests of the pinned snapshot are read instead, each once per process
(they are immutable: cached by path).

The state is looked for in the process's memory first (a scheduler reads nothing), then in the
state store (`lookback_state`, calve.state.lookback: a one-shot `calve run` reads one row instead of
every manifest), and written back to both after each estimate (one upsert, skipped when the store
already holds that snapshot's state from this process).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, HourTransform, IdentityTransform, MonthTransform, YearTransform
from pyiceberg.types import DateType, IcebergType, TimestampType, TimestamptzType

from calve.capture.changes import ChangeSet, Operation
from calve.state.records import StepMetrics
from calve.workflows.model import StepSpec

if TYPE_CHECKING:
    from calve.state.store import StateStore

log = logging.getLogger(__name__)

DAY_MICROS = 86_400_000_000
_TIME_TYPES = (DateType, TimestampType, TimestamptzType)
_TIME_TRANSFORMS = (IdentityTransform, YearTransform, MonthTransform, DayTransform, HourTransform)
_CACHE_SIZE = 4096
_STATE_FORMAT = 1  # of the JSON in the state store; another format is ignored (rebuilt)

# (manifest path, field id) -> per live data file: (lower, upper) in micros (None: no bound), records
_FileBounds = tuple[int | None, int | None, int]
_bounds_cache: OrderedDict[tuple[str, int], dict[str, _FileBounds]] = OrderedDict()

# what the estimates of this process cost: manifests read (cache misses), states read from and
# written to the state store (for tests and benchmarks)
counters: dict[str, int] = {"manifest_reads": 0, "states_loaded": 0, "states_saved": 0}


@dataclass(frozen=True)
class _Histogram:
    """The live data files of a table at one snapshot, by upper bound of one column (micros; None: no
    bound) -> (files, records). Every entry has files > 0."""

    snapshot_id: int
    uppers: dict[int | None, tuple[int, int]]

    def to_json(self, field_type: IcebergType) -> str:
        entries = sorted(self.uppers.items(), key=lambda item: (item[0] is not None, item[0] or 0))
        return json.dumps(
            {
                "format": _STATE_FORMAT,
                "type": str(field_type),
                "uppers": [[upper, files, records] for upper, (files, records) in entries],
            },
            separators=(",", ":"),
        )

    @staticmethod
    def from_json(snapshot_id: int, text: str, field_type: IcebergType) -> _Histogram | None:
        """The histogram stored as `text`, or None when it is not one of this format and type."""
        try:
            data = json.loads(text)
            if data.get("format") != _STATE_FORMAT or data.get("type") != str(field_type):
                return None
            uppers: dict[int | None, tuple[int, int]] = {}
            for upper, files, records in data["uppers"]:
                if (upper is not None and not isinstance(upper, int)) or files <= 0 or records < 0:
                    return None
                uppers[upper] = (int(files), int(records))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return _Histogram(snapshot_id, uppers)


# (table uuid, field id) -> the histogram at the snapshot last estimated
_live: dict[tuple[str, int], _Histogram] = {}
# (state store path, table uuid, field id) -> the snapshot whose state this process read or wrote there
_stored: dict[tuple[str, str, int], int] = {}


def forget() -> None:
    """Forget this process's states and manifest cache (as a new process would start)."""
    _bounds_cache.clear()
    _live.clear()
    _stored.clear()


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
    table: Table,
    snapshot_id: int | None,
    column: str,
    days: int,
    changes: ChangeSet | None = None,
    state: StateStore | None = None,
) -> int | None:
    """Records of the data files at `snapshot_id` whose `column` bounds reach into the last `days`.

    `changes`, the change set a step captured up to `snapshot_id`, spares the manifest reads when the
    process, or the state store `state`, holds the state of its start snapshot (see the module).
    """
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    if snapshot is None:
        return 0 if snapshot_id is None else None
    field = table.schema().find_field(column)
    if not isinstance(field.field_type, _TIME_TYPES):
        return None
    key = (str(table.metadata.table_uuid), field.field_id)
    histogram = _usable(_live.get(key), changes, snapshot.snapshot_id, field.field_id, field.field_type)
    if histogram is None and state is not None:
        stored = _load(state, key, field.field_type)
        histogram = _usable(stored, changes, snapshot.snapshot_id, field.field_id, field.field_type)
    if histogram is None:
        files: dict[str, _FileBounds] = {}
        for manifest in snapshot.manifests(table.io):
            if manifest.content == ManifestContent.DATA:
                files.update(_manifest_bounds(table, manifest, field.field_id, field.field_type))
        histogram = _histogram(snapshot.snapshot_id, files.values())
    _live[key] = histogram
    if state is not None:
        _save(state, key, histogram, field.field_type)
    return _estimate(histogram, days, isinstance(field.field_type, DateType))


def _estimate(histogram: _Histogram, days: int, dates: bool) -> int:
    uppers = [upper for upper in histogram.uppers if upper is not None]
    if not uppers:
        return sum(records for _, records in histogram.uppers.values())
    newest = max(uppers)
    # a date covers its whole day: the window is the `days` days that end with the newest one
    end = newest + DAY_MICROS if dates else newest
    start = end - days * DAY_MICROS
    return sum(records for upper, (_, records) in histogram.uppers.items() if upper is None or upper >= start)


def _histogram(snapshot_id: int, files: Iterable[_FileBounds]) -> _Histogram:
    uppers: dict[int | None, tuple[int, int]] = {}
    for _, upper, records in files:
        count, total = uppers.get(upper, (0, 0))
        uppers[upper] = (count + 1, total + records)
    return _Histogram(snapshot_id, uppers)


def _usable(
    histogram: _Histogram | None,
    changes: ChangeSet | None,
    snapshot_id: int,
    field_id: int,
    field_type: IcebergType,
) -> _Histogram | None:
    """`histogram` at `snapshot_id`: as it is, brought forward by `changes`, or None when they do not
    connect (or a compaction, whose files change sets leave out, lies between)."""
    if histogram is None or histogram.snapshot_id == snapshot_id:
        return histogram
    if changes is None:
        return None
    if (
        changes.from_snapshot_id_exclusive != histogram.snapshot_id
        or changes.to_snapshot_id_inclusive != snapshot_id
    ):
        return None
    if any(s.operation is Operation.REPLACE for s in changes.snapshots):
        return None
    uppers = dict(histogram.uppers)
    moves = [(f, -1) for f in changes.removed_files] + [(f, 1) for f in changes.added_files]
    for change, sign in moves:
        _, upper, records = _file_bounds(change.data_file, field_id, field_type)
        count, total = uppers.get(upper, (0, 0))
        count, total = count + sign, total + sign * records
        if count < 0 or total < 0 or (count == 0 and total != 0):
            return None  # the change set removes files the state does not hold: not the same table
        if count == 0:
            uppers.pop(upper, None)
        else:
            uppers[upper] = (count, total)
    return _Histogram(snapshot_id, uppers)


def _load(state: StateStore, key: tuple[str, int], field_type: IcebergType) -> _Histogram | None:
    from calve.state.lookback import LookbackStates

    try:
        found = LookbackStates(state).get(*key)
    except Exception as exc:  # a cache: an estimate from manifests is always possible
        log.warning("reading the lookback state of %s from the state store failed: %s", key, exc)
        return None
    if found is None:
        return None
    counters["states_loaded"] += 1
    snapshot_id, text = found
    histogram = _Histogram.from_json(snapshot_id, text, field_type)
    if histogram is not None:
        _stored[(state.location, *key)] = snapshot_id
    return histogram


def _save(state: StateStore, key: tuple[str, int], histogram: _Histogram, field_type: IcebergType) -> None:
    stored_key = (state.location, *key)
    if _stored.get(stored_key) == histogram.snapshot_id:
        return
    from calve.state.lookback import LookbackStates

    try:
        LookbackStates(state).put(*key, histogram.snapshot_id, histogram.to_json(field_type))
    except Exception as exc:  # a cache: the next process reads the manifests instead
        log.warning("writing the lookback state of %s to the state store failed: %s", key, exc)
        return
    counters["states_saved"] += 1
    _stored[stored_key] = histogram.snapshot_id


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
    counters["manifest_reads"] += 1
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
    state: StateStore | None = None,
) -> int | None:
    """What a lookback of `days` would have read for these steps, summed over those that have a range
    column (None when none has): per step, its incremental inputs at the snapshots the step read.
    `changes` are the change sets the run captured, by (step id, table); `state` the state store that
    keeps the estimate's state between processes."""
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
            rows = lookback_rows(source, read.to_snapshot_id, column, days, captured, state)
            if rows is not None:
                total = (total or 0) + rows
    return total
