"""Merge-on-read writes: position delete files instead of rewriting the files that hold a key.

pyiceberg writes copy-on-write only: a merge that matches one row of a file rewrites the whole
file. A table with `write.merge.mode=merge-on-read` gets what Spark writes instead: for each data
file holding matched keys, a small position-delete file (`file_path`, `pos`), and the upserted rows
in new data files, in one `overwrite` snapshot. Readers (pyiceberg, Spark, Trino) apply the deletes.

    positions = matched_positions(table, task, keys)      # rows of one file to delete
    stage_merge_on_read(tx, table, rows, {task.file: positions}, summary)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files, _read_deletes
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestFile,
    ManifestWriterV2,
    write_manifest,
    write_manifest_list,
)
from pyiceberg.table import FileScanTask, Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import (
    Operation,
    Snapshot,
    SnapshotSummaryCollector,
    Summary,
    update_snapshot_summaries,
)
from pyiceberg.table.update import AddSnapshotUpdate, AssertRefSnapshotId, SetSnapshotRefUpdate

from calve.capture.icdc import added_entry, avro_codec
from calve.errors import CalveError
from calve.read import duckdb_scan

MERGE_MODE_PROPERTY = "write.merge.mode"
FILE_PATH_ID = 2147483546  # reserved field ids of position delete files (Iceberg spec)
POS_ID = 2147483545
_DELETE_SCHEMA = pa.schema(
    [
        pa.field("file_path", pa.string(), nullable=False, metadata={b"PARQUET:field_id": str(FILE_PATH_ID)}),
        pa.field("pos", pa.int64(), nullable=False, metadata={b"PARQUET:field_id": str(POS_ID)}),
    ]
)


def merge_on_read(table: Table) -> bool:
    mode = table.metadata.properties.get(MERGE_MODE_PROPERTY, "copy-on-write")
    if mode not in ("copy-on-write", "merge-on-read"):
        raise CalveError(f"{MERGE_MODE_PROPERTY}={mode!r}: use copy-on-write or merge-on-read")
    if mode == "merge-on-read" and table.metadata.format_version < 2:
        raise CalveError(f"{MERGE_MODE_PROPERTY}=merge-on-read needs an Iceberg v2 table")
    return mode == "merge-on-read"


class DeleteManifestWriter(ManifestWriterV2):
    """A v2 manifest of delete files (pyiceberg writes data manifests only)."""

    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


def write_position_deletes(
    io: FileIO, location: str, data_file: DataFile, positions: Sequence[int] | np.ndarray[Any, Any]
) -> DataFile:
    """Write a position-delete file for rows of one data file, as Spark does; returns its DataFile."""
    path = f"{location}/data/{uuid.uuid4()}-deletes.parquet"
    body = pa.table(
        {"file_path": pa.array([data_file.file_path] * len(positions)), "pos": pa.array(np.sort(positions))},
        schema=_DELETE_SCHEMA,
    )
    with io.new_output(path).create(overwrite=True) as stream:
        pq.write_table(body, stream)
    delete_file = DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=data_file.partition,
        record_count=len(positions),
        file_size_in_bytes=len(io.new_input(path)),
        lower_bounds={FILE_PATH_ID: data_file.file_path.encode()},
        upper_bounds={FILE_PATH_ID: data_file.file_path.encode()},
    )
    delete_file.spec_id = data_file.spec_id
    return delete_file


def matched_positions(table: Table, task: FileScanTask, keys: pa.Table) -> np.ndarray[Any, Any]:
    """Positions (row numbers in the data file) of the live rows whose key tuple is in `keys`."""
    names = keys.column_names
    raw = ArrowScan(table.metadata, table.io, table.schema().select(*names), AlwaysTrue()).to_table(
        [FileScanTask(task.file)]  # no deletes applied: row numbers are file positions
    )
    numbered = raw.append_column("__calve_pos", pa.array(np.arange(raw.num_rows, dtype=np.int64)))
    matched = numbered.join(keys, keys=names, join_type="left semi").column("__calve_pos")
    return live_positions(table, task, np.unique(matched.to_numpy()))


def matched_positions_of(
    table: Table, tasks: Sequence[FileScanTask], keys: pa.Table
) -> dict[str, np.ndarray[Any, Any]]:
    """Per data file path of `tasks`: the positions of its live rows whose key tuple is in `keys`
    (files with none left out). One DuckDB query over every file when exact (positions are
    positions in the file, so raw reads are right even with delete files), else file by file."""
    raw = duckdb_scan.matched_positions(table, tasks, keys)
    found: dict[str, np.ndarray[Any, Any]] = {}
    for task in tasks:
        if raw is None:
            positions = matched_positions(table, task, keys)
        elif task.file.file_path in raw:
            positions = live_positions(table, task, raw[task.file.file_path])
        else:
            continue
        if len(positions):
            found[task.file.file_path] = positions
    return found


def live_positions(table: Table, task: FileScanTask, positions: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """`positions` of a data file without those its delete files already delete."""
    for delete_file in task.delete_files:  # already deleted rows stay deleted
        deleted = _read_deletes(table.io, delete_file).get(task.file.file_path)
        if deleted is not None and len(positions):
            positions = np.setdiff1d(positions, deleted.to_numpy(), assume_unique=False)
    return positions


def deleted_rows(table: Table, task: FileScanTask) -> int:
    """How many rows of a data file its delete files delete."""
    deleted = [_read_deletes(table.io, d).get(task.file.file_path) for d in task.delete_files]
    arrays = [d.to_numpy() for d in deleted if d is not None]
    return len(np.unique(np.concatenate(arrays))) if arrays else 0


def stage_merge_on_read(
    tx: Transaction,
    table: Table,
    rows: pa.Table,
    deletes: dict[str, tuple[DataFile, np.ndarray[Any, Any] | None]],
    snapshot_properties: dict[str, str],
) -> None:
    """Stage one `overwrite` snapshot in `tx`: `rows` appended, `deletes` (data file path ->
    (data file, positions)) written as position delete files; a file whose positions are None is
    removed instead (rewritten: its kept rows are in `rows`). The new manifests are added to the
    parent's, which are kept as they are, except a manifest listing a removed file: that one is
    rewritten with the file marked deleted (as every Iceberg writer does)."""
    metadata = tx.table_metadata
    parent = metadata.current_snapshot()
    snapshot_id = metadata.new_snapshot_id()
    sequence_number = metadata.next_sequence_number()
    location = metadata.location
    codec = avro_codec(metadata)
    collector = SnapshotSummaryCollector()
    manifests: list[ManifestFile] = []
    schema = metadata.schema()

    data_files = (
        list(_dataframe_to_data_files(metadata, rows, table.io, uuid.uuid4())) if rows.num_rows else []
    )
    by_spec: dict[int, list[DataFile]] = {}
    for data_file in data_files:  # freshly written files are in the default spec
        by_spec.setdefault(metadata.default_spec_id, []).append(data_file)
    for spec_id, files in by_spec.items():
        path = f"{location}/metadata/{uuid.uuid4()}-m0.avro"
        spec = metadata.specs()[spec_id]
        with write_manifest(2, spec, schema, table.io.new_output(path), snapshot_id, codec) as writer:
            for data_file in files:
                writer.add(added_entry(snapshot_id, data_file))
                collector.add_file(data_file, schema=schema, partition_spec=spec)
        manifests.append(writer.to_manifest_file())

    delete_files: dict[int, list[DataFile]] = {}
    for data_file, positions in deletes.values():
        if positions is not None and len(positions):
            delete_file = write_position_deletes(table.io, location, data_file, positions)
            delete_files.setdefault(data_file.spec_id, []).append(delete_file)
    for spec_id, files in delete_files.items():
        path = f"{location}/metadata/{uuid.uuid4()}-deletes-m0.avro"
        spec = metadata.specs()[spec_id]
        delete_writer = DeleteManifestWriter(spec, schema, table.io.new_output(path), snapshot_id, codec)
        with delete_writer:
            for delete_file in files:
                delete_writer.add(added_entry(snapshot_id, delete_file))
                collector.add_file(delete_file, schema=schema, partition_spec=spec)
        manifests.append(delete_writer.to_manifest_file())

    removed = {path: data_file for path, (data_file, positions) in deletes.items() if positions is None}
    existing = parent.manifests(table.io) if parent is not None else []
    if removed:
        existing = [
            _without(table, metadata, manifest, removed, snapshot_id, codec, collector)
            for manifest in existing
        ]
    manifest_list = f"{location}/metadata/snap-{snapshot_id}-0-{uuid.uuid4()}.avro"
    with write_manifest_list(
        2,
        table.io.new_output(manifest_list),
        snapshot_id,
        parent.snapshot_id if parent else None,
        sequence_number,
        codec,
    ) as list_writer:
        list_writer.add_manifests([*manifests, *existing])
    summary = update_snapshot_summaries(
        Summary(Operation.OVERWRITE, **collector.build(), **snapshot_properties),
        previous_summary=parent.summary if parent is not None else None,
    )
    snapshot = Snapshot.model_validate(
        {
            "snapshot-id": snapshot_id,
            "parent-snapshot-id": parent.snapshot_id if parent else None,
            "sequence-number": sequence_number,
            "timestamp-ms": max(metadata.last_updated_ms + 1, int(time.time() * 1000)),
            "manifest-list": manifest_list,
            "summary": summary,
            "schema-id": metadata.current_schema_id,
        }
    )
    updates = (
        AddSnapshotUpdate(snapshot=snapshot),
        SetSnapshotRefUpdate.model_validate(
            {"snapshot-id": snapshot_id, "ref-name": MAIN_BRANCH, "type": SnapshotRefType.BRANCH}
        ),
    )
    requirements = (
        AssertRefSnapshotId.model_validate(
            {"snapshot-id": parent.snapshot_id if parent else None, "ref": MAIN_BRANCH}
        ),
    )
    tx._stage(updates, requirements)  # type: ignore[arg-type]


def _without(
    table: Table,
    metadata: TableMetadata,
    manifest: ManifestFile,
    removed: dict[str, DataFile],
    snapshot_id: int,
    codec: Any,
    collector: SnapshotSummaryCollector,
) -> ManifestFile:
    """`manifest` as it is, or, if it lists a removed data file, a copy with that file DELETED."""
    if manifest.content != ManifestContent.DATA:
        return manifest
    entries = manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    if not any(entry.data_file.file_path in removed for entry in entries):
        return manifest
    spec = metadata.specs()[manifest.partition_spec_id]
    schema = metadata.schema()
    path = f"{metadata.location}/metadata/{uuid.uuid4()}-m1.avro"
    with write_manifest(2, spec, schema, table.io.new_output(path), snapshot_id, codec) as writer:
        for entry in entries:
            if entry.data_file.file_path in removed:
                writer.delete(entry)
                collector.remove_file(entry.data_file, schema=schema, partition_spec=spec)
            else:
                writer.existing(entry)
    return writer.to_manifest_file()
