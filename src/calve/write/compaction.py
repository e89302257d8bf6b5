"""Compaction: rewrite a partition's small files and files with deletes, as a `replace`.

An incremental pipeline appends a small file to every partition that late data touches, run after
run, and merge-on-read writers (Spark, Flink, Trino, calve's `write.merge.mode=merge-on-read`) add
position delete files that every reader must apply. Compaction reads the live rows of a
partition's chosen files through pyiceberg (deletes applied), writes them into new files, and in
one `replace` snapshot removes the old data files *and* the position delete files that no longer
apply to any live data file, as Spark's `rewrite_data_files` does. No row changes: change capture
ignores `replace` snapshots, so no consumer reprocesses anything.

A partition is compacted when it has at least `min_files` candidate files (smaller than
`small_file_bytes`, or with delete files), or when more than `max_delete_files` delete files apply
to it (then even one large file with deletes is rewritten).

Safety: a delete file is removed only when every live data file it may apply to (by partition,
sequence number and `file_path` bounds, as readers match them) is rewritten in the same commit.
pyiceberg validates inside the commit that the rewritten files still exist and that no concurrent
commit added deletes for them; otherwise the compaction fails and commits nothing.

    result = compact(table, small_file_bytes=8 << 20, min_files=4, max_delete_files=0)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
)
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _OverwriteFiles

from calve import _faults
from calve.read.planning import MANIFESTS, plan_files, read_files
from calve.write.defaults import DEFAULT_MIN_FILES, DEFAULT_SMALL_FILE_BYTES
from calve.write.mor import DeleteManifestWriter
from calve.write.transaction import transaction

CRASH_DURING_COMMIT = "compaction.during_commit"


class ReplaceFiles(_OverwriteFiles):
    """An overwrite whose snapshot says `replace` (pyiceberg's summary code knows no replace), and
    that can also remove delete files (pyiceberg's producers remove data files only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._removed_delete_files: set[DataFile] = set()

    def delete_data_file(self, data_file: DataFile) -> ReplaceFiles:
        if data_file.content != DataFileContent.DATA:
            self._removed_delete_files.add(data_file)
        else:
            super().delete_data_file(data_file)
        return self

    def _existing_manifests(self) -> list[ManifestFile]:
        """The parent's manifests less the removed files; a delete manifest that holds a removed
        delete file is rewritten (as a delete manifest) with a DELETED entry for it."""
        manifests = super()._existing_manifests()
        if not self._removed_delete_files:
            return manifests
        kept: list[ManifestFile] = []
        for manifest in manifests:
            if manifest.content != ManifestContent.DELETES:
                kept.append(manifest)
                continue
            entries = manifest.fetch_manifest_entry(self._io, discard_deleted=True)
            if not any(e.data_file in self._removed_delete_files for e in entries):
                kept.append(manifest)
                continue
            writer = DeleteManifestWriter(
                self.spec(manifest.partition_spec_id),
                self.schema(),
                self.new_manifest_output(),
                self._snapshot_id,
                self._compression,
            )
            with writer:
                for entry in entries:
                    removed = entry.data_file in self._removed_delete_files
                    writer.add_entry(
                        ManifestEntry.from_args(
                            status=ManifestEntryStatus.DELETED if removed else ManifestEntryStatus.EXISTING,
                            snapshot_id=self._snapshot_id if removed else entry.snapshot_id,
                            sequence_number=entry.sequence_number,
                            file_sequence_number=entry.file_sequence_number,
                            data_file=entry.data_file,
                        )
                    )
            kept.append(writer.to_manifest_file())
        return kept

    def _summary(self, snapshot_properties: dict[str, str] = {}) -> Summary:  # noqa: B006
        self._operation = Operation.OVERWRITE
        data_files = self._deleted_data_files
        self._deleted_data_files = data_files | self._removed_delete_files  # counted, not validated
        try:
            summary = super()._summary(snapshot_properties)
        finally:
            self._operation = Operation.REPLACE
            self._deleted_data_files = data_files
        return Summary(Operation.REPLACE, **summary.additional_properties)


@dataclass(frozen=True)
class CompactionResult:
    table: str
    partitions: int
    files_removed: int  # data files
    files_written: int
    rows: int
    bytes_read: int  # data and delete files read
    snapshot_id: int | None
    delete_files_removed: int = 0
    delete_files_before: int = 0  # live position delete files before the compaction
    data_files_before: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compact(
    table: Table,
    small_file_bytes: int = DEFAULT_SMALL_FILE_BYTES,
    min_files: int = DEFAULT_MIN_FILES,
    max_delete_files: int | None = None,
    *,
    dry_run: bool = False,
) -> CompactionResult:
    """Rewrite, per partition, the files smaller than `small_file_bytes` and the files with delete
    files when there are at least `min_files` of them, or when more than `max_delete_files` delete
    files apply to the partition (None: no such rule); one `replace` snapshot for all partitions.

    With `dry_run`, plans and reports what would be rewritten, and commits nothing."""
    name = ".".join(table.name())
    snapshot = table.current_snapshot()
    tasks_all = plan_files(table)
    groups: dict[tuple[int, Any], list[FileScanTask]] = {}
    deletes_of: dict[tuple[int, Any], set[DataFile]] = {}
    for task in tasks_all:
        key = (task.file.spec_id, task.file.partition)
        deletes_of.setdefault(key, set()).update(task.delete_files)
        if task.file.file_size_in_bytes < small_file_bytes or task.delete_files:
            groups.setdefault(key, []).append(task)
    chosen = [
        tasks
        for key, tasks in groups.items()
        if len(tasks) >= max(2, min_files)
        or (max_delete_files is not None and len(deletes_of[key]) > max_delete_files)
    ]
    rewritten = {task.file.file_path for tasks in chosen for task in tasks}
    live_deletes = _live_delete_files(table)
    removable = _removable_delete_files(tasks_all, live_deletes, rewritten)
    before = dict(delete_files_before=len(live_deletes), data_files_before=len(tasks_all))
    if not chosen and not removable:
        return CompactionResult(name, 0, 0, 0, 0, 0, None, **before)
    removed = written = rows = read = 0
    read_deletes: set[str] = set()
    if dry_run:
        for tasks in chosen:
            removed += len(tasks)
            rows += sum(t.file.record_count for t in tasks)  # before deletes: an upper bound
            read += sum(t.file.file_size_in_bytes for t in tasks)
            read += _delete_bytes(tasks, read_deletes)
        return CompactionResult(name, len(chosen), removed, 0, rows, read, None, len(removable), **before)
    with transaction(table) as tx:
        producer = ReplaceFiles(operation=Operation.REPLACE, transaction=tx, io=table.io, branch=MAIN_BRANCH)
        for tasks in chosen:
            live = read_files(table, tasks)
            for task in tasks:
                producer.delete_data_file(task.file)
                read += task.file.file_size_in_bytes
            read += _delete_bytes(tasks, read_deletes)
            removed += len(tasks)
            rows += live.num_rows
            if live.num_rows:
                for data_file in _dataframe_to_data_files(tx.table_metadata, live, table.io, uuid.uuid4()):
                    producer.append_data_file(data_file)
                    written += 1
        for delete_file in removable:
            producer.delete_data_file(delete_file)
        producer.commit()
        _faults.crash_point(CRASH_DURING_COMMIT)  # files written, catalog not yet switched
    after = table.current_snapshot()
    committed = after is not None and (snapshot is None or after.snapshot_id != snapshot.snapshot_id)
    return CompactionResult(
        name,
        len(chosen),
        removed,
        written,
        rows,
        read,
        after.snapshot_id if committed and after else None,
        len(removable),
        **before,
    )


def _live_delete_files(table: Table) -> list[DataFile]:
    """The position delete files of the current snapshot (from its delete manifests)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    return [
        entry.data_file
        for manifest in snapshot.manifests(table.io)
        if manifest.content == ManifestContent.DELETES
        for entry in MANIFESTS.entries(table.io, manifest)
        if entry.data_file.content == DataFileContent.POSITION_DELETES
    ]


def _removable_delete_files(
    tasks: list[FileScanTask], live_deletes: list[DataFile], rewritten: set[str]
) -> list[DataFile]:
    """Delete files every one of whose live data files is rewritten (or that apply to none: a later
    data file can never match them, its sequence number is higher)."""
    applies_to: dict[str, set[str]] = {d.file_path: set() for d in live_deletes}
    for task in tasks:
        for delete_file in task.delete_files:
            applies_to.setdefault(delete_file.file_path, set()).add(task.file.file_path)
    return [d for d in live_deletes if applies_to[d.file_path] <= rewritten]


def _delete_bytes(tasks: list[FileScanTask], seen: set[str]) -> int:
    total = 0
    for task in tasks:
        for delete_file in task.delete_files:
            if delete_file.file_path not in seen:
                seen.add(delete_file.file_path)
                total += delete_file.file_size_in_bytes
    return total
