"""Which logic built which range of a target: the workflow version of every commit, and stale ranges.

Every commit a run or a backfill makes carries the workflow's version (a hash of its files) in its
snapshot summary (`calve.workflow.version`), and is noted in the state store as a `StepCommit`: the
range of the step's range column it wrote, and whether it rebuilt that range whole (a backfill
chunk, an overwrite of the range) or only touched rows in it (a merge, an append). `stale_ranges`
replays a step's commits over the range column: a value whose rows were last rebuilt, or since then
touched, by another version than the current one was built by an older logic, and `calve status`
prints the backfill that brings it up to date.

The range column of a step is the column its output is partitioned by (identity, or the column of a
year/month/day/hour transform), else the column its output overwrite filter or its inputs' `ranges`
name; it must be a date, timestamp or integer column.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from calve.errors import CalveError
from calve.state.backfills import BackfillLog, StepCommit
from calve.workflows.model import ParamRef, StepSpec
from calve.write.modes import WriteMode
from calve.write.staged import StagedOutput

VERSION_PROPERTY = "calve.workflow.version"  # snapshot summary: the version of the workflow's files
BACKFILL_PROPERTY = "calve.backfill.id"  # snapshot summary of a backfill commit: the backfill's id
CHUNK_PROPERTY = "calve.backfill.chunk"  # ... its chunk (0-based) and range
STEP_PROPERTY = "calve.backfill.step"  # ... and the step that committed it

_TIME_TRANSFORMS = ("year", "month", "day", "hour")


class RangeKind(StrEnum):
    DATE = "date"
    TIMESTAMP = "timestamp"
    INTEGER = "integer"


def range_kind(arrow_type: pa.DataType) -> RangeKind | None:
    """The kind of range a column of this type supports, or None (a backfill cannot range over it)."""
    if pa.types.is_date(arrow_type):
        return RangeKind.DATE
    if pa.types.is_timestamp(arrow_type):
        return RangeKind.TIMESTAMP
    if pa.types.is_integer(arrow_type):
        return RangeKind.INTEGER
    return None


def declared_range_column(step: StepSpec) -> str | None:
    """The step's range column as its spec declares it (partitioning, overwrite filter, `ranges`)."""
    if step.output is None:
        return None
    for field in step.output.partition_by:
        text = field.replace(" ", "")
        if "(" not in text:
            return text
        name, _, rest = text.partition("(")
        if name in _TIME_TRANSFORMS:
            return rest.rstrip(")")
    for predicate in step.output.filter:
        return predicate.column
    for spec in step.inputs:
        if spec.ranges:
            return spec.ranges[0]
    return None


def resolve_range_column(
    step: StepSpec, schema: pa.Schema, column: str | None = None
) -> tuple[str, RangeKind]:
    """The column a backfill of `step` ranges over (`column` if given) and its kind, or a clear error."""
    assert step.output is not None
    name = column or declared_range_column(step)
    if name is None:
        raise CalveError(
            f"step {step.id!r}: its output {step.output.table} has no range column to backfill by; add "
            "`partition_by: [COLUMN]` to the step's output (a date, timestamp or integer column of its rows, "
            "e.g. the event day), or pass --column COLUMN"
        )
    if name not in schema.names:
        raise CalveError(
            f"step {step.id!r}: {step.output.table} has no column {name!r} to backfill by; "
            f"its columns are: {', '.join(schema.names)}"
        )
    kind = range_kind(schema.field(name).type)
    if kind is None:
        raise CalveError(
            f"step {step.id!r}: {step.output.table}.{name} is a {schema.field(name).type} column; a backfill "
            "ranges over a date, timestamp or integer column (pass --column COLUMN)"
        )
    return name, kind


def encode(value: Any) -> str:
    """A range value as stored and shown: ISO text for dates and timestamps, digits for integers."""
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def decode(kind: RangeKind, text: str) -> Any:
    if kind is RangeKind.DATE:
        return dt.date.fromisoformat(text)
    if kind is RangeKind.TIMESTAMP:
        return dt.datetime.fromisoformat(text)
    return int(text)


def successor(kind: RangeKind, value: Any) -> Any:
    """The next value after `value` (closed ranges as half-open ones)."""
    if kind is RangeKind.DATE:
        return value + dt.timedelta(days=1)
    if kind is RangeKind.TIMESTAMP:
        return value + dt.timedelta(microseconds=1)
    return value + 1


def rows_range(rows: pa.Table | StagedOutput, column: str) -> tuple[Any, Any] | None:
    """The smallest and largest value of `column` in `rows` (None when it has none)."""
    if column not in rows.column_names or rows.num_rows == 0:
        return None
    if isinstance(rows, StagedOutput):
        return rows.column_range(column)  # computed where the rows are
    bounds = pc.min_max(rows.column(column))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return None if low is None else (low, high)


def written_range(
    step: StepSpec, rows: pa.Table | StagedOutput, params: Mapping[str, Any], mode: WriteMode
) -> tuple[str | None, tuple[Any, Any] | None, bool]:
    """What a run's commit of `rows` wrote: (range column, its range, whether rebuilt whole).

    An overwrite whose filter bounds the range column on both ends rebuilt that range; an overwrite
    of the whole table rebuilt the range its rows cover; a merge or an append only touched rows.
    """
    column = declared_range_column(step)
    if column is None or step.output is None:
        return None, None, False
    span = rows_range(rows, column)
    if mode is not WriteMode.OVERWRITE:
        return column, span, False
    if not step.output.filter:
        return column, span, True
    low = high = None
    for predicate in step.output.filter:
        if predicate.column != column:
            continue
        values = predicate.value if isinstance(predicate.value, list | tuple) else [predicate.value]
        resolved = [params.get(v.name) if isinstance(v, ParamRef) else v for v in values]
        if predicate.op == "between" and len(resolved) == 2:
            low, high = resolved
        elif predicate.op in ("gte", "gt"):
            low = resolved[0]
        elif predicate.op in ("lte", "lt"):
            high = resolved[0]
        elif predicate.op == "eq":
            low = high = resolved[0]
    if low is None or high is None:
        return column, span, False
    return column, (low, high), True


def note_commit(
    log: BackfillLog,
    workflow: str,
    version: str,
    step: StepSpec,
    snapshot_id: int | None,
    written: tuple[Any, Any] | None,
    *,
    column: str | None,
    complete: bool,
    run_id: str | None = None,
    backfill_id: str | None = None,
    at: float,
) -> None:
    """Note a step's commit (nothing when it made no snapshot)."""
    if snapshot_id is None or step.output is None:
        return
    log.record_commit(
        StepCommit(
            table=step.output.table,
            snapshot_id=snapshot_id,
            workflow=workflow,
            step_id=step.id,
            workflow_version=version,
            range_column=column,
            range_lo=encode(written[0]) if written else None,
            range_hi=encode(written[1]) if written else None,
            complete=complete,
            committed_at=at,
            run_id=run_id,
            backfill_id=backfill_id,
        )
    )


@dataclass(frozen=True)
class StaleRange:
    """A range of a step's target built (wholly or partly) by other versions than the current one."""

    column: str
    low: Any  # inclusive
    high: Any  # inclusive
    versions: tuple[str, ...]  # the versions whose rows it holds, the current one included if so

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "from": encode(self.low),
            "to": encode(self.high),
            "versions": list(self.versions),
        }


def stale_ranges(commits: Iterable[StepCommit], current: str, kind: RangeKind) -> list[StaleRange]:
    """The ranges of a target whose rows were built by a version other than `current`.

    Replays the commits oldest first over the range column: a complete commit replaces what its
    range was built by, a partial one adds its version to it. Adjacent stale values are merged.
    """
    # disjoint half-open segments [low, high) -> versions, kept sorted by low
    segments: list[tuple[Any, Any, frozenset[str]]] = []
    column = None
    for commit in commits:
        if commit.range_column is None or commit.range_lo is None or commit.range_hi is None:
            continue
        column = commit.range_column
        low = decode(kind, commit.range_lo)
        high = successor(kind, decode(kind, commit.range_hi))
        segments = _paint(segments, low, high, commit.workflow_version, commit.complete)
    stale: list[StaleRange] = []
    for low, high, versions in segments:
        if versions == {current}:
            continue
        last = _predecessor(kind, high)
        if stale and stale[-1].versions == tuple(sorted(versions)) and successor(kind, stale[-1].high) == low:
            stale[-1] = StaleRange(stale[-1].column, stale[-1].low, last, stale[-1].versions)
            continue
        assert column is not None
        stale.append(StaleRange(column, low, last, tuple(sorted(versions))))
    return stale


def _paint(
    segments: list[tuple[Any, Any, frozenset[str]]], low: Any, high: Any, version: str, complete: bool
) -> list[tuple[Any, Any, frozenset[str]]]:
    """Segments with [low, high) built by `version` (alone if `complete`, else besides what was)."""
    result: list[tuple[Any, Any, frozenset[str]]] = []
    covered: list[tuple[Any, Any]] = []  # parts of [low, high) already in some segment
    for s_low, s_high, versions in segments:
        if s_high <= low or s_low >= high:  # no overlap
            result.append((s_low, s_high, versions))
            continue
        if s_low < low:
            result.append((s_low, low, versions))
        if s_high > high:
            result.append((high, s_high, versions))
        o_low, o_high = max(s_low, low), min(s_high, high)
        covered.append((o_low, o_high))
        result.append((o_low, o_high, frozenset({version}) if complete else versions | {version}))
    cursor = low
    for c_low, c_high in sorted(covered):  # the gaps of [low, high) no segment covered
        if c_low > cursor:
            result.append((cursor, c_low, frozenset({version})))
        cursor = max(cursor, c_high)
    if cursor < high:
        result.append((cursor, high, frozenset({version})))
    return sorted(result, key=lambda s: s[0])


def _predecessor(kind: RangeKind, value: Any) -> Any:
    if kind is RangeKind.DATE:
        return value - dt.timedelta(days=1)
    if kind is RangeKind.TIMESTAMP:
        return value - dt.timedelta(microseconds=1)
    return value - 1
