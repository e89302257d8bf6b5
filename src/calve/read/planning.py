"""Scan planning without pyiceberg's per-file overheads, and reading planned files.

pyiceberg 0.12 plans a scan by reading every manifest of the snapshot again and, for each data file,
evaluating a *residual* of the row filter against the file's partition (a Python visitor over the
whole expression, per file). ArrowScan never uses that residual: it applies the scan's row filter
itself. For calve, which plans the same tables run after run, that is most of the planning time.
This planner keeps pyiceberg's manifest, partition and metrics pruning and its delete-file
matching, skips the residuals, and caches the entries of manifests (they are immutable files).

    tasks = plan_files(table, row_filter, snapshot_id)
    rows = read_files(table, tasks, row_filter, selected_fields)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from itertools import chain

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, DataFileContent, ManifestEntry, ManifestFile
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, ManifestGroupPlanner, Table
from pyiceberg.table.delete_file_index import DeleteFileIndex
from pyiceberg.utils.concurrent import ExecutorFactory

ALWAYS_TRUE = AlwaysTrue()
INITIAL_SEQUENCE_NUMBER = 0
CACHED_MANIFESTS = 2048


class _ManifestCache:
    """Entries (deleted ones discarded) of recently read manifests, by path."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, list[ManifestEntry]] = OrderedDict()
        self._lock = threading.Lock()

    def entries(self, io: FileIO, manifest: ManifestFile) -> list[ManifestEntry]:
        key = manifest.manifest_path
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        entries = list(manifest.fetch_manifest_entry(io, discard_deleted=True))
        with self._lock:
            self._entries[key] = entries
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return entries


MANIFESTS = _ManifestCache(CACHED_MANIFESTS)


class _Planner(ManifestGroupPlanner):
    def plan_manifest_entries(self, manifests: Iterable[ManifestFile]) -> Iterator[list[ManifestEntry]]:
        evaluators: dict[int, Callable[[ManifestFile], bool]] = {}
        partition_evaluators: dict[int, Callable[[DataFile], bool]] = {}
        kept = []
        for manifest in manifests:
            spec_id = manifest.partition_spec_id
            if spec_id not in evaluators:
                evaluators[spec_id] = self._build_manifest_evaluator(spec_id)
                partition_evaluators[spec_id] = self._build_partition_evaluator(spec_id)
            if evaluators[spec_id](manifest):
                kept.append(manifest)
        metrics = self._build_metrics_evaluator()
        io = self.io

        def entries(manifest: ManifestFile) -> list[ManifestEntry]:
            keep = partition_evaluators[manifest.partition_spec_id]
            return [e for e in MANIFESTS.entries(io, manifest) if keep(e.data_file) and metrics(e.data_file)]

        return ExecutorFactory.get_or_create().map(entries, kept)

    def plan_files(
        self,
        manifests: Iterable[ManifestFile],
        manifest_entry_filter: Callable[[ManifestEntry], bool] = lambda _: True,
    ) -> list[FileScanTask]:
        data_entries: list[ManifestEntry] = []
        delete_index = DeleteFileIndex()
        for entry in chain.from_iterable(self.plan_manifest_entries(manifests)):
            if not manifest_entry_filter(entry):
                continue
            content = entry.data_file.content
            if content == DataFileContent.DATA:
                data_entries.append(entry)
            elif content == DataFileContent.POSITION_DELETES:
                delete_index.add_delete_file(entry, partition_key=entry.data_file.partition)
            else:
                raise ValueError("pyiceberg cannot read equality delete files (written by Flink or Spark)")
        return [
            FileScanTask(
                entry.data_file,
                delete_files=delete_index.for_data_file(
                    entry.sequence_number or INITIAL_SEQUENCE_NUMBER,
                    entry.data_file,
                    partition_key=entry.data_file.partition,
                ),
                residual=ALWAYS_TRUE,  # ArrowScan applies the row filter itself
            )
            for entry in data_entries
        ]


def plan_files(
    table: Table, row_filter: BooleanExpression = ALWAYS_TRUE, snapshot_id: int | None = None
) -> list[FileScanTask]:
    """The data files (with their delete files) of a snapshot (default: the current one) that may
    hold rows matching `row_filter`: the same files pyiceberg's `scan().plan_files()` returns."""
    snapshot = table.current_snapshot() if snapshot_id is None else table.metadata.snapshot_by_id(snapshot_id)
    if snapshot is None:
        return []
    planner = _Planner(table.metadata, table.io, row_filter)
    return planner.plan_files(snapshot.manifests(table.io))


def read_files(
    table: Table,
    tasks: list[FileScanTask],
    row_filter: BooleanExpression = ALWAYS_TRUE,
    schema: Schema | None = None,
) -> pa.Table:
    """The rows of planned files matching `row_filter`, deletes applied, projected onto `schema`."""
    schema = schema or table.schema()
    if not tasks:
        return schema.as_arrow().empty_table()
    return ArrowScan(table.metadata, table.io, schema, row_filter).to_table(tasks)
