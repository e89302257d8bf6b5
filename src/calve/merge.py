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

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    In,
    LessThanOrEqual,
)
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from calve.errors import CalveError

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


def key_filter(keys: pa.Table) -> BooleanExpression:
    """A filter that every target row with one of these keys satisfies (for file pruning)."""
    expression: BooleanExpression = AlwaysTrue()
    for name in keys.column_names:
        column = keys.column(name)
        values = pc.unique(column).to_pylist()
        if len(values) <= IN_LIST_LIMIT:
            term: BooleanExpression = In(name, values)  # type: ignore[call-arg,arg-type]
        else:
            bounds = pc.min_max(column).as_py()
            term = And(
                GreaterThanOrEqual(name, bounds["min"]),  # type: ignore[call-arg]
                LessThanOrEqual(name, bounds["max"]),  # type: ignore[call-arg]
            )
        expression = term if isinstance(expression, AlwaysTrue) else And(expression, term)
    return expression


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
    scan = table.scan(row_filter=key_filter(distinct_keys))
    tasks = list(scan.plan_files())
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
