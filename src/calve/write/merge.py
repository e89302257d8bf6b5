"""Merge (upsert on keys) that rewrites only the data files holding a changed key.

pyiceberg's `Table.upsert` builds one OR-of-ANDs filter over every key and crashes on large composite
key sets. Here the key set stays a table: the files that may hold a key are planned with a compact
filter (IN lists, or a min..max range when there are many values), each candidate file is read once
and anti-joined with the keys, and only the files where some row matched are replaced by their
remaining rows. The new rows go in the same overwrite snapshot.

    plan = plan_merge(table, upserts, keys=("account_id", "day"), deletes=None)
    plan.deleted_files, plan.rows   # what the commit removes and writes
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import (
    AlwaysFalse,
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    In,
    LessThanOrEqual,
)
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table
from pyiceberg.types import NestedField

from calve.capture.ranges import file_bounds
from calve.errors import CalveError
from calve.read.planning import plan_files, read_files
from calve.write.mor import matched_positions, merge_on_read

ALWAYS_TRUE = AlwaysTrue()
IN_LIST_LIMIT = 1000  # distinct values per key column above which planning uses a min..max range


@dataclass
class MergePlan:
    deleted_files: list[DataFile] = field(default_factory=list)
    rows: pa.Table | None = None  # rows to write: kept rows of rewritten files, then the upserts
    files_read: int = 0
    bytes_read: int = 0
    rows_read: int = 0
    rows_matched: int = 0  # target rows replaced or deleted
    rows_upserted: int = 0
    # merge-on-read: data file path -> (data file, positions to delete) instead of rewritten files
    positions: dict[str, tuple[DataFile, Any]] = field(default_factory=dict)


def _in_or_range(name: str, column: pa.Array | pa.ChunkedArray) -> BooleanExpression:
    values = pc.unique(column).drop_null().to_pylist()
    if not values:
        return AlwaysFalse()
    if len(values) <= IN_LIST_LIMIT:
        return In(name, values)  # type: ignore[call-arg,arg-type]
    bounds = pc.min_max(column).as_py()
    return And(
        GreaterThanOrEqual(name, bounds["min"]),  # type: ignore[call-arg,arg-type]
        LessThanOrEqual(name, bounds["max"]),  # type: ignore[call-arg,arg-type]
    )


def plan_key_files(
    table: Table,
    keys: pa.Table,
    snapshot_id: int | None = None,
    row_filter: BooleanExpression = ALWAYS_TRUE,
) -> list[FileScanTask]:
    """The files (at `snapshot_id`) that may hold one of the key tuples of `keys`.

    pyiceberg evaluates a scan filter once per file, so an OR over thousands of key tuples makes
    planning cost files x keys in Python. Here the scan gets a small filter (the first key column's
    values), and each planned file is then kept only if, for one of the first-column values it may
    hold, every other key column has a value within the file's bounds (binary search in sorted
    values). Files without bounds are kept.
    """
    if keys.num_rows == 0:
        return []
    names = keys.column_names
    schema = table.schema()
    fields = [schema.find_field(n) for n in names]
    coarse = _in_or_range(names[0], keys.column(0))
    if not isinstance(row_filter, AlwaysTrue):
        coarse = And(row_filter, coarse)
    tasks = plan_files(table, coarse, snapshot_id)
    if len(names) == 1:
        return tasks
    groups = _key_groups(keys)
    firsts = sorted(groups)
    kept = []
    for task in tasks:
        low, high = file_bounds(task.file, fields[0].field_id, fields[0].field_type)
        start = 0 if low is None else bisect.bisect_left(firsts, low)
        stop = len(firsts) if high is None else bisect.bisect_right(firsts, high)
        if any(_may_hold(task, fields[1:], groups[first]) for first in firsts[start:stop]):
            kept.append(task)
    return kept


def read_key_files(
    table: Table,
    tasks: list[FileScanTask],
    keys: pa.Table,
    row_filter: BooleanExpression,
    schema: Schema,
) -> pa.Table:
    """Read planned files keeping (mostly) the rows of the key tuples: the files are grouped by the
    first key column's value (their bounds), and each group is read with `second key IN (the values
    seen with it)` added to the filter, so that Arrow drops the other rows while decoding. The
    caller still matches the tuples exactly."""
    names = keys.column_names
    if len(names) < 2 or not tasks:
        return read_files(table, tasks, row_filter, schema)
    first = table.schema().find_field(names[0])
    groups = _key_groups(keys)
    by_value: dict[Any, list[FileScanTask]] = {}
    rest: list[FileScanTask] = []
    for task in tasks:
        low, high = file_bounds(task.file, first.field_id, first.field_type)
        if low is not None and low == high and low in groups and groups[low].values is not None:
            by_value.setdefault(low, []).append(task)
        else:
            rest.append(task)
    parts = [read_files(table, rest, row_filter, schema)] if rest else []
    for value, group_tasks in by_value.items():
        values = groups[value].values
        assert values is not None
        narrowed = And(row_filter, In(names[1], values[0]))  # type: ignore[call-arg,arg-type]
        parts.append(read_files(table, group_tasks, narrowed, schema))
    return pa.concat_tables(parts) if parts else schema.as_arrow().empty_table()


EXACT_GROUP_LIMIT = 2000  # a group with more keys is pruned by its min..max only


@dataclass(frozen=True)
class _Group:
    """The other key columns' values of the keys sharing one first-column value."""

    lows: list[Any]
    highs: list[Any]
    values: list[list[Any]] | None  # sorted distinct values per column, for small groups


def _key_groups(keys: pa.Table) -> dict[Any, _Group]:
    """Per first-column value: min, max and (for small groups) the sorted values of the others."""
    names = keys.column_names
    first, others = names[0], names[1:]
    stats = keys.group_by(first).aggregate(
        [([], "count_all"), *((n, "min") for n in others), *((n, "max") for n in others)]
    )
    groups: dict[Any, _Group] = {}
    counts = stats.column("count_all").to_pylist()
    lows = [stats.column(f"{n}_min").to_pylist() for n in others]
    highs = [stats.column(f"{n}_max").to_pylist() for n in others]
    for index, value in enumerate(stats.column(first).to_pylist()):
        if value is None:
            continue
        exact = None
        if counts[index] <= EXACT_GROUP_LIMIT:
            rows = keys.filter(pc.equal(keys.column(first), pa.scalar(value, keys.schema.field(first).type)))
            exact = [sorted(set(rows.column(n).drop_null().to_pylist())) for n in others]
        groups[value] = _Group([c[index] for c in lows], [c[index] for c in highs], exact)
    return groups


def _may_hold(task: FileScanTask, fields: list[NestedField], group: _Group) -> bool:
    for position, key_field in enumerate(fields):
        low, high = file_bounds(task.file, key_field.field_id, key_field.field_type)
        if group.values is None:
            if (high is not None and group.lows[position] is not None and high < group.lows[position]) or (
                low is not None and group.highs[position] is not None and low > group.highs[position]
            ):
                return False
            continue
        values = group.values[position]
        start = 0 if low is None else bisect.bisect_left(values, low)
        stop = len(values) if high is None else bisect.bisect_right(values, high)
        if start >= stop:
            return False
    return True


def plan_merge(
    table: Table, upserts: pa.Table, keys: Sequence[str], deletes: pa.Table | None = None
) -> MergePlan:
    """What merging `upserts` (and deleting the `deletes` keys) into `table` removes and writes."""
    keys = list(keys)
    schema_names = table.schema().column_names
    for name in keys:
        if name not in schema_names or name not in upserts.column_names:
            raise CalveError(
                f"merge key {name!r} is not a column of both the output and {'.'.join(table.name())} "
                f"(table columns: {', '.join(schema_names)})"
            )
    key_rows = upserts.select(keys)
    if deletes is not None and deletes.num_rows:
        key_rows = pa.concat_tables([key_rows, deletes.select(keys).cast(key_rows.schema)])
    for name in keys:
        nulls = key_rows.column(name).null_count
        if nulls:
            raise CalveError(f"merge key {name!r} is null in {nulls} output row(s); keys must identify a row")
    counted = key_rows.group_by(keys).aggregate([([], "count_all")])
    duplicates = counted.filter(pc.greater(counted.column("count_all"), 1))
    if duplicates.num_rows:
        example = {k: duplicates.column(k)[0].as_py() for k in keys}
        raise CalveError(
            f"the output has {duplicates.num_rows} key(s) more than once (for example {example}); a merge "
            "needs one row per key: aggregate or deduplicate in the step"
        )

    plan = MergePlan(rows_upserted=upserts.num_rows)
    if key_rows.num_rows == 0 or table.current_snapshot() is None:
        plan.rows = upserts
        return plan
    distinct_keys = key_rows  # unique, checked above
    kept_parts: list[pa.Table] = []
    tasks = plan_key_files(table, distinct_keys)
    if merge_on_read(table):
        for task in tasks:
            positions = matched_positions(table, task, distinct_keys)
            plan.files_read += 1
            if len(positions):
                plan.positions[task.file.file_path] = (task.file, positions)
                plan.rows_matched += len(positions)
        plan.rows = upserts
        return plan
    key_reader = ArrowScan(table.metadata, table.io, table.schema().select(*keys), AlwaysTrue())
    reader = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    for task in tasks:
        # first the key columns only: most candidate files hold none of the keys
        key_columns = key_reader.to_table([task])
        plan.files_read += 1
        plan.rows_read += key_columns.num_rows
        numbered = key_columns.append_column("__calve_row", pa.array(range(key_columns.num_rows), pa.int64()))
        survivors = numbered.join(distinct_keys, keys=keys, join_type="left anti", use_threads=True)
        if survivors.num_rows == key_columns.num_rows:
            continue
        rows = reader.to_table([task])  # a key matched: the file is rewritten without those rows
        plan.bytes_read += task.file.file_size_in_bytes
        row_ids = survivors.column("__calve_row")
        kept = rows.take(pc.take(row_ids, pc.sort_indices(row_ids)))
        plan.deleted_files.append(task.file)
        plan.rows_matched += rows.num_rows - kept.num_rows
        if kept.num_rows:
            kept_parts.append(kept.select(rows.column_names))
    target_schema = upserts.schema
    parts = [p.cast(target_schema) for p in kept_parts] + [upserts]
    plan.rows = pa.concat_tables(parts) if len(parts) > 1 else upserts
    return plan
