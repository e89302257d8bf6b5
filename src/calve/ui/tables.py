"""What the catalog says about a table, for the web UI: its snapshots and how far behind consumers are.

Metadata only: snapshot summaries and the line of ancestry, never a data file. A consumer's lag is
counted on the table's current line of ancestry from its checkpoint (exclusive) to the current
snapshot: snapshots, records added, and how long ago the oldest unprocessed one was committed.
Compaction (`replace`) is no change for a consumer and is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot


@dataclass(frozen=True)
class SnapshotRow:
    snapshot_id: int
    parent_snapshot_id: int | None
    committed_at: float  # epoch seconds
    operation: str
    added_records: int
    deleted_records: int
    added_files: int
    total_records: int


@dataclass(frozen=True)
class Lag:
    """How far a consumer's checkpoint is behind the table's current snapshot."""

    snapshots: int  # data-changing snapshots after the checkpoint
    records: int  # records they added
    since: float | None  # commit time of the oldest of them (None: up to date)
    on_line: bool  # False: the checkpoint is not on the current line of ancestry (expired, rolled back)


def ancestry(table: Table) -> list[Snapshot]:
    """The current line of ancestry, newest first."""
    by_id = {s.snapshot_id: s for s in table.metadata.snapshots}
    line: list[Snapshot] = []
    snapshot = table.current_snapshot()
    while snapshot is not None:
        line.append(snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = by_id.get(parent) if parent is not None else None
    return line


def snapshot_rows(table: Table, limit: int = 100) -> list[SnapshotRow]:
    return [_row(s) for s in ancestry(table)[:limit]]


def change_set_rows(
    table: Table, from_snapshot_id_exclusive: int | None, to_snapshot_id_inclusive: int
) -> list[SnapshotRow] | None:
    """The snapshots of a change set, newest first; None if they are no longer all in the metadata
    (expired) or `from` is not an ancestor of `to`."""
    by_id = {s.snapshot_id: s for s in table.metadata.snapshots}
    rows: list[SnapshotRow] = []
    snapshot = by_id.get(to_snapshot_id_inclusive)
    while snapshot is not None and snapshot.snapshot_id != from_snapshot_id_exclusive:
        rows.append(_row(snapshot))
        parent = snapshot.parent_snapshot_id
        snapshot = by_id.get(parent) if parent is not None else None
    complete = snapshot is not None or from_snapshot_id_exclusive is None
    return rows if complete and rows else None


def consumer_lag(table: Table, checkpoint_snapshot_id: int | None) -> Lag:
    """How many data-changing snapshots (and records) of `table` came after the checkpoint."""
    line = ancestry(table)
    ids = [s.snapshot_id for s in line]
    on_line = checkpoint_snapshot_id is None or checkpoint_snapshot_id in ids
    newer = (
        line if checkpoint_snapshot_id is None or not on_line else line[: ids.index(checkpoint_snapshot_id)]
    )
    changes = [_row(s) for s in newer]
    changes = [r for r in changes if r.operation != "replace"]
    return Lag(
        snapshots=len(changes),
        records=sum(r.added_records for r in changes),
        since=min((r.committed_at for r in changes), default=None),
        on_line=on_line,
    )


def _row(snapshot: Snapshot) -> SnapshotRow:
    summary = snapshot.summary
    return SnapshotRow(
        snapshot_id=snapshot.snapshot_id,
        parent_snapshot_id=snapshot.parent_snapshot_id,
        committed_at=snapshot.timestamp_ms / 1000,
        operation=summary.operation.value if summary else "unknown",
        added_records=_int(summary.get("added-records") if summary else None),
        deleted_records=_int(summary.get("deleted-records") if summary else None),
        added_files=_int(summary.get("added-data-files") if summary else None),
        total_records=_int(summary.get("total-records") if summary else None),
    )


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
