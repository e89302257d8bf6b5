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

import numpy as np
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
from calve.read.duckdb_scan import cast_keys, matching_files, read_unmatched
from calve.read.planning import plan_files, read_files
from calve.read.table_scan import readable_by_name
from calve.write.mor import deleted_rows, matched_positions_of, merge_on_read
from calve.write.staged import StagedOutput

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
    # merge-on-read: data file path -> (data file, positions to delete) instead of rewritten files;
    # positions None: the file is removed and its kept rows are in `rows` (see MOR_REWRITE_SHARE)
    positions: dict[str, tuple[DataFile, Any]] = field(default_factory=dict)
    kept: list[pa.Table] = field(default_factory=list, repr=False)  # while planning: rows to keep
    # an engine's workers wrote the kept rows and the upserts already: these files go in instead of `rows`
    written_files: list[DataFile] | None = None


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
    table: Table, upserts: pa.Table | StagedOutput, keys: Sequence[str], deletes: pa.Table | None = None
) -> MergePlan:
    """What merging `upserts` (and deleting the `deletes` keys) into `table` removes and writes.

    Upserts staged on an engine's workers are merged there (the files are planned here, then the
    workers rewrite the ones holding a key: `plan.written_files`), unless the table is merge-on-read,
    has delete files or files it may not read by name: then the rows come to the driver and merge
    as Arrow."""
    keys = list(keys)
    schema_names = table.schema().column_names
    for name in keys:
        if name not in schema_names or name not in upserts.column_names:
            raise CalveError(
                f"merge key {name!r} is not a column of both the output and {'.'.join(table.name())} "
                f"(table columns: {', '.join(schema_names)})"
            )
    if isinstance(upserts, StagedOutput) and (merge_on_read(table) or not readable_by_name(table)):
        upserts = upserts.to_arrow()
    key_rows = upserts.select_arrow(keys) if isinstance(upserts, StagedOutput) else upserts.select(keys)
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
        if isinstance(upserts, StagedOutput):
            plan.written_files = upserts.write_files(table)
        else:
            plan.rows = upserts
        return plan
    distinct_keys = key_rows  # unique, checked above
    tasks = plan_key_files(table, distinct_keys)
    plan.files_read = len(tasks)
    if isinstance(upserts, StagedOutput):
        if not any(task.delete_files for task in tasks):
            removed, plan.written_files, plan.rows_matched = upserts.merge_files(table, tasks, distinct_keys)
            plan.deleted_files = removed
            plan.rows_read = sum(task.file.record_count for task in tasks)  # their key columns
            plan.bytes_read = sum(f.file_size_in_bytes for f in removed)
            return plan
        upserts = upserts.to_arrow()
    if merge_on_read(table):
        _plan_merge_on_read(plan, table, tasks, distinct_keys)
    else:
        _plan_copy_on_write(plan, table, tasks, distinct_keys)
    kept = [p.select(upserts.column_names).cast(upserts.schema) for p in plan.kept if p.num_rows]
    plan.rows = pa.concat_tables([*kept, upserts]) if kept else upserts
    plan.kept = []
    return plan


# merge-on-read: a file whose deleted rows (already and by this merge) would reach this share of
# its rows is rewritten instead (copy-on-write for that file), so that no file is mostly deletes
MOR_REWRITE_SHARE = 0.5


def _plan_merge_on_read(plan: MergePlan, table: Table, tasks: list[FileScanTask], keys: pa.Table) -> None:
    """Position deletes for the matched rows of each candidate file, except a file where most rows
    would then be deleted: that one is rewritten without them (positions None, its kept rows in
    `plan.kept`), as copy-on-write would."""
    found = matched_positions_of(table, tasks, keys)
    by_path = {task.file.file_path: task for task in tasks}
    plan.rows_read += sum(task.file.record_count for task in tasks)
    rewritten = []
    for path, positions in found.items():
        task = by_path[path]
        plan.rows_matched += len(positions)
        deleted = deleted_rows(table, task) + len(positions)
        if deleted >= MOR_REWRITE_SHARE * task.file.record_count:
            rewritten.append(task)
            plan.positions[path] = (task.file, None)
            plan.deleted_files.append(task.file)
        else:
            plan.positions[path] = (task.file, positions)
    if rewritten:  # their live rows without the matched ones (deletes applied by ArrowScan)
        plan.bytes_read += sum(task.file.file_size_in_bytes for task in rewritten)
        plan.kept.extend(_arrow_kept_rows(table, task, keys) for task in rewritten)


def _plan_copy_on_write(plan: MergePlan, table: Table, tasks: list[FileScanTask], keys: pa.Table) -> None:
    """The candidate files where a key matched are rewritten: `plan.deleted_files`, their other
    rows in `plan.kept`. With DuckDB (one query for the files holding a key, one for the kept rows
    of those files) when exact, else file by file with Arrow."""
    hits = matching_files(table, tasks, keys)
    if hits is None:
        matched = _arrow_copy_on_write(plan, table, tasks, keys)
    else:
        matched = [task for task in tasks if task.file.file_path in hits]
        plan.rows_read += sum(task.file.record_count for task in tasks)  # the key columns of each
        plan.rows_matched += sum(hits.values())
        kept = read_unmatched(table, matched, keys)
        if kept is None:  # a column DuckDB may not read: the kept rows with Arrow
            kept = (
                pa.concat_tables([_arrow_kept_rows(table, task, keys) for task in matched])
                if matched
                else None
            )
        if kept is not None:
            plan.kept.append(kept)
    plan.deleted_files.extend(task.file for task in matched)
    plan.bytes_read += sum(task.file.file_size_in_bytes for task in matched)


def _arrow_copy_on_write(
    plan: MergePlan, table: Table, tasks: list[FileScanTask], keys: pa.Table
) -> list[FileScanTask]:
    """File by file: the key columns first (most candidate files hold none of the keys), joined with
    the keys within the file's bounds; a file where a key matched is read whole."""
    names = keys.column_names
    key_reader = ArrowScan(table.metadata, table.io, table.schema().select(*names), ALWAYS_TRUE)
    reader = ArrowScan(table.metadata, table.io, table.schema(), ALWAYS_TRUE)
    matched = []
    for task in tasks:
        key_columns = key_reader.to_table([task])
        plan.rows_read += key_columns.num_rows
        numbered = key_columns.append_column("__calve_row", _row_numbers(key_columns.num_rows))
        within = keys_within(table, task, keys).cast(key_columns.schema)  # the reader's string types
        survivors = numbered.join(within, keys=names, join_type="left anti", use_threads=True)
        if survivors.num_rows == key_columns.num_rows:
            continue
        rows = reader.to_table([task])  # a key matched: the file is rewritten without those rows
        kept = rows.take(np.sort(survivors.column("__calve_row").to_numpy()))
        matched.append(task)
        plan.rows_matched += rows.num_rows - kept.num_rows
        plan.kept.append(kept)
    return matched


def _arrow_kept_rows(table: Table, task: FileScanTask, keys: pa.Table) -> pa.Table:
    rows = ArrowScan(table.metadata, table.io, table.schema(), ALWAYS_TRUE).to_table([task])
    numbered = rows.select(keys.column_names).append_column("__calve_row", _row_numbers(rows.num_rows))
    within = keys_within(table, task, keys).cast(rows.select(keys.column_names).schema)
    survivors = numbered.join(within, keys=keys.column_names, join_type="left anti")
    return rows.take(np.sort(survivors.column("__calve_row").to_numpy()))


def keys_within(table: Table, task: FileScanTask, keys: pa.Table) -> pa.Table:
    """The key tuples that lie within a data file's column bounds (the others cannot be in it), with
    the table's column types: a smaller hash table for the per-file join."""
    schema = table.schema()
    keys = cast_keys(schema, keys)
    keep = None
    for name in keys.column_names:
        key_field = schema.find_field(name)
        low, high = file_bounds(task.file, key_field.field_id, key_field.field_type)
        column = keys.column(name)
        for bound, compare in ((low, pc.greater_equal), (high, pc.less_equal)):
            if bound is None:
                continue
            try:
                condition = compare(column, pa.scalar(bound, column.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                continue  # a bound Arrow cannot compare here: no narrowing on it
            keep = condition if keep is None else pc.and_(keep, condition)
    return keys if keep is None else keys.filter(keep)


def _row_numbers(count: int) -> pa.Array:
    return pa.array(np.arange(count, dtype=np.int64))
