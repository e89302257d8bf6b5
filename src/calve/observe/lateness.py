"""How late a table's rows arrive, per snapshot and over its history: `calve lateness`.

A row's lateness is its arrival minus its event time. Arrival is the commit time of the snapshot
that added the row, or the value of an arrival column (`arrival_column`, such as the demo's
`ingest_day`). Dates count as their midnight (UTC), so two dates differ by whole days.

By default nothing but metadata is read: each data file a snapshot added carries lower and upper
bounds of its columns in the manifest, so its rows' lateness lies between (earliest arrival - latest
event) and (latest arrival - earliest event). When that interval is one point (a file of one event
day, arriving on one day or in one commit) every row of the file has exactly that lateness; else
the file's rows are counted as `uncertain` in the distribution, and the lookback windows give a
range (`rows_missed` certain, `rows_missed_max` possible). With `exact`, the event (and arrival)
columns of the added files are read, and only those columns: the distribution, the percentiles and
the windows are then exact.

A lookback of X re-reads the last X of the range column on every run, so a row that arrives X or
more after its event time is never processed: `rows_missed` counts those rows. With dates, a lookback
of 14d misses the rows that arrive 14 or more days after their event day (the demo's definition).

Files that an `overwrite` or `delete` snapshot added (a copy-on-write rewrite) hold rows copied from
earlier files: with the commit time as arrival they count as arriving again. Give the arrival column
for tables with row-level changes. `replace` snapshots (compaction) are never counted.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.conversions import from_bytes
from pyiceberg.table import FileScanTask, Table
from pyiceberg.types import DateType, IcebergType, TimestampType, TimestamptzType

from calve.capture.changes import FileChange, SnapshotChange, capture_changes
from calve.errors import CalveError, did_you_mean

DAY_S = 86_400
# the distribution's buckets: lower bounds in seconds (the first, below 0, is "early")
BUCKETS: tuple[tuple[str, float], ...] = (
    ("early", -math.inf),
    ("0-1d", 0),
    ("1-2d", DAY_S),
    ("2-3d", 2 * DAY_S),
    ("3-7d", 3 * DAY_S),
    ("7-14d", 7 * DAY_S),
    ("14-30d", 14 * DAY_S),
    (">=30d", 30 * DAY_S),
)
_BUCKET_STARTS = [start for _, start in BUCKETS]
_TIME_TYPES = (DateType, TimestampType, TimestamptzType)


@dataclass(frozen=True)
class Window:
    """A lookback window and the rows it would have missed (arrived `seconds` or more late)."""

    name: str  # as given, e.g. "14d"
    seconds: int
    rows_missed: int  # certainly missed
    rows_missed_max: int  # possibly missed (equal to rows_missed when every lateness is known)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.name,
            "seconds": self.seconds,
            "rows_missed": self.rows_missed,
            "rows_missed_max": self.rows_missed_max,
        }


@dataclass(frozen=True)
class SnapshotLateness:
    """How late the rows one snapshot added are; lateness in seconds."""

    snapshot_id: int
    timestamp_ms: int
    operation: str
    files: int
    rows: int
    event_min: Any  # the earliest and latest event time of its rows (from bounds)
    event_max: Any
    lateness_min_s: float | None  # bounds: no row is less late than this ...
    lateness_max_s: float | None  # ... or later than this
    files_without_bounds: int = 0
    # exact only: percentiles of the rows' lateness (rows with a null event or arrival time left out)
    p50_s: float | None = None
    p90_s: float | None = None
    p99_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "snapshot_id": self.snapshot_id,
            "timestamp_ms": self.timestamp_ms,
            "operation": self.operation,
            "files": self.files,
            "rows": self.rows,
            "event_min": _iso(self.event_min),
            "event_max": _iso(self.event_max),
            "lateness_min_s": self.lateness_min_s,
            "lateness_max_s": self.lateness_max_s,
            "files_without_bounds": self.files_without_bounds,
        }
        if self.p50_s is not None:
            data.update(p50_s=self.p50_s, p90_s=self.p90_s, p99_s=self.p99_s)
        return data


@dataclass(frozen=True)
class LatenessReport:
    table: str
    event_time: str
    arrival: str  # "commit" or the arrival column
    exact: bool
    snapshots: tuple[SnapshotLateness, ...]
    distribution: dict[str, int]  # bucket -> rows
    uncertain_rows: int  # rows whose lateness spans buckets (bounds only)
    windows: tuple[Window, ...]
    rows: int = 0
    percentiles: dict[str, float] = field(default_factory=dict)  # exact only: p50_s, p90_s, p99_s, max_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "event_time": self.event_time,
            "arrival": self.arrival,
            "exact": self.exact,
            "rows": self.rows,
            "snapshots": [s.to_dict() for s in self.snapshots],
            "distribution": [{"bucket": name, "rows": self.distribution[name]} for name, _ in BUCKETS],
            "uncertain_rows": self.uncertain_rows,
            "percentiles": self.percentiles,
            "windows": [w.to_dict() for w in self.windows],
        }


def lateness_report(
    table: Table,
    event_time: str,
    *,
    arrival_column: str | None = None,
    since_snapshot_id: int | None = None,
    since_time: dt.datetime | None = None,
    windows: Sequence[tuple[str, int]] = (),
    exact: bool = False,
) -> LatenessReport:
    """The lateness of `table`'s rows per snapshot after `since_snapshot_id` (or committed at or after
    `since_time`), its distribution, and the rows each `(name, seconds)` lookback window would miss."""
    name = ".".join(table.name())
    event_field = _time_field(table, event_time, "--event-time")
    arrival_field = _time_field(table, arrival_column, "--arrival") if arrival_column else None
    changes = capture_changes(table, since_snapshot_id)
    snapshots = [
        s
        for s in changes.logical_snapshots
        if since_time is None or s.timestamp_ms >= since_time.timestamp() * 1000
    ]
    distribution = {bucket: 0 for bucket, _ in BUCKETS}
    uncertain = 0
    missed = [0] * len(windows)
    missed_max = [0] * len(windows)
    per_snapshot: list[SnapshotLateness] = []
    everything: list[np.ndarray] = []
    for snapshot in snapshots:
        files = [f for f in snapshot.added_files if f.content == "data"]
        if not files:
            continue
        bounds = [_file_lateness(f, snapshot, event_field, arrival_field) for f in files]
        known = [b for b in bounds if b is not None]
        events = [_event_bounds(f, event_field) for f in files]
        lows = [e[0] for e in events if e[0] is not None]
        highs = [e[1] for e in events if e[1] is not None]
        entry = SnapshotLateness(
            snapshot_id=snapshot.snapshot_id,
            timestamp_ms=snapshot.timestamp_ms,
            operation=snapshot.operation.value,
            files=len(files),
            rows=sum(f.record_count for f in files),
            event_min=_typed(event_field.field_type, min(lows)) if lows else None,
            event_max=_typed(event_field.field_type, max(highs)) if highs else None,
            lateness_min_s=min(b[0] for b in known) if known else None,
            lateness_max_s=max(b[1] for b in known) if known else None,
            files_without_bounds=len(files) - len(known),
        )
        if exact:
            late = _exact_lateness(table, snapshot, files, event_field, arrival_field)
            everything.append(late)
            for bucket, count in _histogram(late).items():
                distribution[bucket] += count
            for i, (_, seconds) in enumerate(windows):
                count = int(np.count_nonzero(late >= seconds))
                missed[i] += count
                missed_max[i] += count
            if late.size:
                p50, p90, p99 = (float(v) for v in np.percentile(late, [50, 90, 99]))
                entry = _with_percentiles(entry, p50, p90, p99)
        else:
            for f, b in zip(files, bounds, strict=True):
                if b is not None and _bucket(b[0]) == _bucket(b[1]):
                    distribution[_bucket(b[0])] += f.record_count
                else:
                    uncertain += f.record_count
                for i, (_, seconds) in enumerate(windows):
                    if b is not None and b[0] >= seconds:
                        missed[i] += f.record_count
                    if b is None or b[1] >= seconds:
                        missed_max[i] += f.record_count
        per_snapshot.append(entry)
    percentiles: dict[str, float] = {}
    if exact and everything:
        late = np.concatenate(everything)
        if late.size:
            p50, p90, p99, top = (float(v) for v in np.percentile(late, [50, 90, 99, 100]))
            percentiles = {"p50_s": p50, "p90_s": p90, "p99_s": p99, "max_s": top}
    return LatenessReport(
        table=name,
        event_time=event_time,
        arrival=arrival_column or "commit",
        exact=exact,
        snapshots=tuple(per_snapshot),
        distribution=distribution,
        uncertain_rows=uncertain,
        windows=tuple(Window(n, s, missed[i], missed_max[i]) for i, (n, s) in enumerate(windows)),
        rows=sum(s.rows for s in per_snapshot),
        percentiles=percentiles,
    )


def _time_field(table: Table, column: str | None, option: str) -> Any:
    schema = table.schema()
    try:
        found = schema.find_field(column or "")
    except ValueError:
        raise CalveError(
            f"{option} {column!r}: {'.'.join(table.name())} has no such column"
            f"{did_you_mean(column, schema.column_names)}; its columns: {', '.join(schema.column_names)}"
        ) from None
    if not isinstance(found.field_type, _TIME_TYPES):
        raise CalveError(
            f"{option} {column!r} is a {found.field_type} column; lateness needs a date or timestamp column"
        )
    return found


def _seconds(field_type: IcebergType, raw: bytes | None) -> float | None:
    """A bound as seconds since the epoch (a date: its midnight UTC)."""
    if raw is None:
        return None
    value = from_bytes(field_type, raw)  # type: ignore[arg-type]
    return float(value) * DAY_S if isinstance(field_type, DateType) else float(value) / 1e6


def _event_bounds(f: FileChange, event_field: Any) -> tuple[float | None, float | None]:
    data_file = f.data_file
    return (
        _seconds(event_field.field_type, (data_file.lower_bounds or {}).get(event_field.field_id)),
        _seconds(event_field.field_type, (data_file.upper_bounds or {}).get(event_field.field_id)),
    )


def _file_lateness(
    f: FileChange, snapshot: SnapshotChange, event_field: Any, arrival_field: Any | None
) -> tuple[float, float] | None:
    """(least, most) lateness of a file's rows in seconds, from bounds; None without them."""
    event_low, event_high = _event_bounds(f, event_field)
    arrival_low: float | None = snapshot.timestamp_ms / 1000
    arrival_high = arrival_low
    if arrival_field is not None:
        arrival_low, arrival_high = _event_bounds(f, arrival_field)
    if event_low is None or event_high is None or arrival_low is None or arrival_high is None:
        return None
    return arrival_low - event_high, arrival_high - event_low


def _exact_lateness(
    table: Table,
    snapshot: SnapshotChange,
    files: list[FileChange],
    event_field: Any,
    arrival_field: Any | None,
) -> np.ndarray:
    """Every row's lateness in seconds, from the event (and arrival) columns of the files alone."""
    from calve.capture.changelog import read_tasks

    names = [event_field.name] + ([arrival_field.name] if arrival_field is not None else [])
    rows = read_tasks(table, table.schema().select(*names), [FileScanTask(f.data_file) for f in files])
    event = _column_seconds(rows.column(event_field.name))
    if arrival_field is None:
        arrival = np.full(len(event), snapshot.timestamp_ms / 1000)
    else:
        arrival = _column_seconds(rows.column(arrival_field.name))
    late: np.ndarray = arrival - event
    known: np.ndarray = late[~np.isnan(late)]
    return known


def _column_seconds(column: pa.ChunkedArray) -> np.ndarray:
    """A date or timestamp column as float seconds since the epoch; nulls as NaN."""
    if pa.types.is_date(column.type):
        values = pc.cast(column, pa.date32()).cast(pa.int32())
        scale = float(DAY_S)
    else:
        values = pc.cast(column, pa.timestamp("us", tz=column.type.tz)).cast(pa.int64())
        scale = 1e-6
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64) * scale


def _bucket(seconds: float) -> str:
    return BUCKETS[bisect.bisect_right(_BUCKET_STARTS, seconds) - 1][0]


def _histogram(late: np.ndarray) -> dict[str, int]:
    positions = np.searchsorted(np.array(_BUCKET_STARTS[1:]), late, side="right")
    counts = np.bincount(positions, minlength=len(BUCKETS))
    return {name: int(counts[i]) for i, (name, _) in enumerate(BUCKETS)}


def _with_percentiles(entry: SnapshotLateness, p50: float, p90: float, p99: float) -> SnapshotLateness:
    from dataclasses import replace

    return replace(entry, p50_s=p50, p90_s=p90, p99_s=p99)


def _typed(field_type: IcebergType, seconds: float) -> Any:
    if isinstance(field_type, DateType):
        return dt.date(1970, 1, 1) + dt.timedelta(days=round(seconds / DAY_S))
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=round(seconds * 1e6))
    return moment.replace(tzinfo=dt.UTC) if isinstance(field_type, TimestamptzType) else moment


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value
