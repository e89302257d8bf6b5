"""What other Iceberg writers (Spark, Flink, Trino) commit and pyiceberg cannot: built by hand.

- `delete_positions`: a merge-on-read DELETE, as Spark writes it: a position-delete parquet file
  (`file_path`, `pos` with the reserved field ids) in a new delete manifest, in a `delete` snapshot
  whose manifest list carries every existing manifest unchanged.
- `compact`: a `replace` snapshot, as `rewrite_data_files` commits it: the live rows rewritten
  into new files, the old data files (and, optionally, the delete files) removed.
"""

from __future__ import annotations

import uuid
from typing import Any

from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import (
    DataFile,
    write_manifest_list,
)
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import Operation, Snapshot, Summary
from pyiceberg.table.update import AddSnapshotUpdate, AssertRefSnapshotId, SetSnapshotRefUpdate

from calve.capture.icdc import added_entry
from calve.write.compaction import ReplaceFiles
from calve.write.mor import DeleteManifestWriter, write_position_deletes


def delete_positions(table: Table, positions: dict[str, list[int]], operation: str = "delete") -> int:
    """Commit position deletes {data file path: [row positions]}; returns the new snapshot id."""
    metadata = table.metadata
    assert metadata.format_version == 2, "position deletes need a v2 table"
    current = metadata.current_snapshot()
    assert current is not None
    live = {t.file.file_path: t.file for t in table.scan().plan_files()}
    snapshot_id = metadata.new_snapshot_id()
    sequence_number = metadata.next_sequence_number()
    location = table.location()

    delete_files = [
        write_position_deletes(table.io, location, live[data_path], rows)
        for data_path, rows in positions.items()
    ]

    by_spec: dict[int, list[DataFile]] = {}
    for f in delete_files:
        by_spec.setdefault(f.spec_id, []).append(f)
    new_manifests = []
    for spec_id, files in by_spec.items():
        manifest_path = f"{location}/metadata/{uuid.uuid4()}-deletes-m0.avro"
        writer = DeleteManifestWriter(
            metadata.specs()[spec_id],
            metadata.schema(),
            table.io.new_output(manifest_path),
            snapshot_id,
            "null",
        )
        with writer:
            for f in files:
                writer.add(added_entry(snapshot_id, f))
        new_manifests.append(writer.to_manifest_file())

    _commit_snapshot(
        table,
        snapshot_id,
        sequence_number,
        [*new_manifests, *current.manifests(table.io)],
        {
            "operation": operation,
            "added-delete-files": str(len(delete_files)),
            "added-position-deletes": str(sum(len(r) for r in positions.values())),
        },
    )
    return snapshot_id


def _commit_snapshot(
    table: Table, snapshot_id: int, sequence_number: int, manifests: list[Any], summary: dict[str, str]
) -> None:
    metadata = table.metadata
    parent = metadata.current_snapshot_id
    manifest_list = f"{table.location()}/metadata/snap-{snapshot_id}-0-{uuid.uuid4()}.avro"
    with write_manifest_list(
        2, table.io.new_output(manifest_list), snapshot_id, parent, sequence_number, "null"
    ) as w:
        w.add_manifests(manifests)
    operation = Operation(summary.pop("operation"))
    snapshot = Snapshot.model_validate(
        {
            "snapshot-id": snapshot_id,
            "parent-snapshot-id": parent,
            "sequence-number": sequence_number,
            "timestamp-ms": metadata.last_updated_ms + 1,
            "manifest-list": manifest_list,
            "summary": Summary(operation, **summary),
            "schema-id": metadata.current_schema_id,
        }
    )
    updates = (
        AddSnapshotUpdate(snapshot=snapshot),
        SetSnapshotRefUpdate(
            snapshot_id=snapshot_id,
            parent_snapshot_id=parent,
            ref_name=MAIN_BRANCH,
            type=SnapshotRefType.BRANCH,
        ),
    )
    requirements = (AssertRefSnapshotId(snapshot_id=parent, ref=MAIN_BRANCH),)
    table._do_commit(updates, requirements)  # type: ignore[arg-type]


def compact(table: Table) -> int:
    """Rewrite all live rows into new files in a `replace` snapshot (deletes applied, as Spark does)."""
    rows = table.scan().to_arrow()
    tasks = list(table.scan().plan_files())
    with table.transaction() as tx:
        producer = ReplaceFiles(operation=Operation.REPLACE, transaction=tx, io=table.io, branch=MAIN_BRANCH)
        for task in tasks:
            producer.delete_data_file(task.file)
        if rows.num_rows:
            for data_file in _dataframe_to_data_files(tx.table_metadata, rows, table.io, uuid.uuid4()):
                producer.append_data_file(data_file)
        producer.commit()
    current = table.current_snapshot()
    assert current is not None
    return current.snapshot_id
