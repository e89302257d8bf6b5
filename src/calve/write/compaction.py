"""Compaction: rewrite a partition's small files (and files with deletes) into one, as a `replace`.

An incremental pipeline appends a small file to every partition that late data touches, run after
run; readers then open more and more files. Compaction rewrites the live rows of each partition's
small files into one new file and commits a `replace` snapshot, as Spark's `rewrite_data_files`
does: no row changes, so change capture ignores it and no consumer reprocesses anything.

    result = compact(table, small_file_bytes=8 << 20, min_files=4)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _OverwriteFiles

from calve.read.planning import plan_files, read_files
from calve.write.transaction import transaction

DEFAULT_SMALL_FILE_BYTES = 32 << 20
DEFAULT_MIN_FILES = 4


class ReplaceFiles(_OverwriteFiles):
    """An overwrite whose snapshot says `replace` (pyiceberg's summary code knows no replace)."""

    def _summary(self, snapshot_properties: dict[str, str] = {}) -> Summary:  # noqa: B006
        self._operation = Operation.OVERWRITE
        try:
            summary = super()._summary(snapshot_properties)
        finally:
            self._operation = Operation.REPLACE
        return Summary(Operation.REPLACE, **summary.additional_properties)


@dataclass(frozen=True)
class CompactionResult:
    table: str
    partitions: int
    files_removed: int
    files_written: int
    rows: int
    bytes_read: int
    snapshot_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compact(
    table: Table,
    small_file_bytes: int = DEFAULT_SMALL_FILE_BYTES,
    min_files: int = DEFAULT_MIN_FILES,
) -> CompactionResult:
    """Rewrite, per partition, the files smaller than `small_file_bytes` (and any file with delete
    files) when there are at least `min_files` of them; one `replace` snapshot for all partitions."""
    name = ".".join(table.name())
    groups: dict[tuple[int, Any], list[FileScanTask]] = {}
    for task in plan_files(table):
        if task.file.file_size_in_bytes < small_file_bytes or task.delete_files:
            groups.setdefault((task.file.spec_id, task.file.partition), []).append(task)
    chosen = [tasks for tasks in groups.values() if len(tasks) >= max(2, min_files)]
    if not chosen:
        return CompactionResult(name, 0, 0, 0, 0, 0, None)
    removed = written = rows = read = 0
    with transaction(table) as tx:
        producer = ReplaceFiles(operation=Operation.REPLACE, transaction=tx, io=table.io, branch=MAIN_BRANCH)
        for tasks in chosen:
            live = read_files(table, tasks)
            for task in tasks:
                producer.delete_data_file(task.file)
                read += task.file.file_size_in_bytes
            removed += len(tasks)
            rows += live.num_rows
            if live.num_rows:
                for data_file in _dataframe_to_data_files(tx.table_metadata, live, table.io, uuid.uuid4()):
                    producer.append_data_file(data_file)
                    written += 1
        producer.commit()
    snapshot = table.current_snapshot()
    return CompactionResult(
        name, len(chosen), removed, written, rows, read, snapshot.snapshot_id if snapshot else None
    )
