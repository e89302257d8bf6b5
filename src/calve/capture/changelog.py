"""Changelog rows: the rows a change set actually inserted and deleted.

For an append-only range the inserted rows are the rows of the appended files and nothing was
deleted. For ranges with overwrite/delete snapshots (copy-on-write rewrites, merge-on-read delete
files written by Spark, Flink or Trino) calve compares the two ends of the range, but only the
touched files: data files present at one end and not the other, and data files whose set of delete
files changed. Rows of the touched files are read with their deletes applied, projected onto one
schema (the `to` snapshot's, by field id), and the multiset difference removes the copy-on-write
carry-over rows (rows a rewrite copied unchanged into a new file). Compaction cancels out the
same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table

from calve.capture.changes import ChangeSet
from calve.read.planning import plan_files

CHANGE_TYPE_COLUMN = "_change_type"
INSERT = "insert"
DELETE = "delete"
_SIDE = "__calve_side"


@dataclass(frozen=True)
class Changelog:
    """The net rows inserted and deleted over a change set, as Arrow tables of one schema."""

    inserted: pa.Table
    deleted: pa.Table
    files_read: int
    bytes_read: int

    def to_arrow(self) -> pa.Table:
        """Both sides in one table, with a `_change_type` column ('insert' or 'delete')."""
        return pa.concat_tables(
            [
                self.deleted.append_column(
                    CHANGE_TYPE_COLUMN, pa.array([DELETE] * self.deleted.num_rows, pa.string())
                ),
                self.inserted.append_column(
                    CHANGE_TYPE_COLUMN, pa.array([INSERT] * self.inserted.num_rows, pa.string())
                ),
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted.num_rows,
            "deleted": self.deleted.num_rows,
            "files_read": self.files_read,
            "bytes_read": self.bytes_read,
        }


def compute_changelog(table: Table, change_set: ChangeSet) -> Changelog:
    """The rows inserted and deleted between the change set's two snapshots, reading only touched files."""
    to_id = change_set.to_snapshot_id_inclusive
    if to_id is None:
        empty = table.schema().as_arrow().empty_table()
        return Changelog(empty, empty, 0, 0)
    schema = snapshot_schema(table, to_id)
    if change_set.is_append_only:
        files = change_set.appended_files
        tasks = [FileScanTask(f.data_file) for f in files]
        inserted = read_tasks(table, schema, tasks)
        return Changelog(
            inserted, inserted.schema.empty_table(), len(tasks), sum(f.file_size_in_bytes for f in files)
        )

    before = _live_tasks(table, change_set.from_snapshot_id_exclusive)
    after = _live_tasks(table, to_id)
    touched_before = [t for path, t in before.items() if _task_key(after.get(path)) != _task_key(t)]
    touched_after = [t for path, t in after.items() if _task_key(before.get(path)) != _task_key(t)]
    deleted_side = read_tasks(table, schema, touched_before)
    inserted_side = read_tasks(table, schema, touched_after)
    inserted, deleted = multiset_difference(deleted_side, inserted_side)
    touched = touched_before + touched_after
    return Changelog(
        inserted=inserted,
        deleted=deleted,
        files_read=len(touched),
        bytes_read=sum(
            t.file.file_size_in_bytes + sum(d.file_size_in_bytes for d in t.delete_files) for t in touched
        ),
    )


def snapshot_schema(table: Table, snapshot_id: int) -> Schema:
    """The schema a snapshot was written with (the current schema if the snapshot does not say)."""
    snapshot = table.metadata.snapshot_by_id(snapshot_id)
    schemas = table.schemas()
    if snapshot is not None and snapshot.schema_id is not None and snapshot.schema_id in schemas:
        return schemas[snapshot.schema_id]
    return table.schema()


def read_tasks(table: Table, schema: Schema, tasks: Iterable[FileScanTask]) -> pa.Table:
    """Read planned files (deletes applied) projected onto `schema` by field id."""
    tasks = list(tasks)
    if not tasks:
        return schema.as_arrow().empty_table()
    return ArrowScan(table.metadata, table.io, schema, AlwaysTrue()).to_table(tasks)


def _live_tasks(table: Table, snapshot_id: int | None) -> dict[str, FileScanTask]:
    if snapshot_id is None:
        return {}
    return {t.file.file_path: t for t in plan_files(table, snapshot_id=snapshot_id)}


def _task_key(task: FileScanTask | None) -> frozenset[str] | None:
    """What decides a data file's visible rows: the delete files that apply to it."""
    return None if task is None else frozenset(d.file_path for d in task.delete_files)


def multiset_difference(before: pa.Table, after: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(rows in `after` not in `before`, rows in `before` not in `after`), counting duplicates."""
    if before.num_rows == 0 or after.num_rows == 0:
        return after, before
    after = after.cast(before.schema) if after.schema != before.schema else after
    columns = before.column_names
    both = pa.concat_tables(
        [
            before.append_column(_SIDE, pa.array([-1] * before.num_rows, pa.int64())),
            after.append_column(_SIDE, pa.array([1] * after.num_rows, pa.int64())),
        ]
    )
    try:
        net = both.group_by(columns, use_threads=False).aggregate([(_SIDE, "sum")])
        counts = net.column(f"{_SIDE}_sum").to_pylist()
        rows = net.select(columns)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):
        rows, counts = _python_net(both, columns)
    inserted_idx = [i for i, c in enumerate(counts) for _ in range(max(c, 0))]
    deleted_idx = [i for i, c in enumerate(counts) for _ in range(max(-c, 0))]
    return (
        rows.take(pa.array(inserted_idx, pa.int64())).cast(before.schema),
        rows.take(pa.array(deleted_idx, pa.int64())).cast(before.schema),
    )


def _python_net(both: pa.Table, columns: list[str]) -> tuple[pa.Table, list[int]]:
    """Fallback for column types Arrow cannot group by (lists, structs, maps)."""
    counter: Counter[Any] = Counter()
    first_index: dict[Any, int] = {}
    sides = both.column(_SIDE).to_pylist()
    for index, row in enumerate(both.select(columns).to_pylist()):
        key = _hashable(row)
        counter[key] += sides[index]
        first_index.setdefault(key, index)
    keys = list(first_index)
    rows = both.select(columns).take(pc.cast(pa.array([first_index[k] for k in keys]), pa.int64()))
    return rows, [counter[k] for k in keys]


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value
