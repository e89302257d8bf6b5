"""Change sets: what changed in an Iceberg table between two snapshots, from metadata alone.

A change set covers the snapshots after `from_snapshot_id_exclusive` up to and including
`to_snapshot_id_inclusive` on one line of ancestry. For each snapshot it lists the files that the
snapshot itself added and removed, read from the manifests that snapshot wrote (entries with status
ADDED or DELETED and the snapshot's own id), so planning cost follows the number of new snapshots,
not the table's history. No data file is read.

`replace` snapshots (compaction) are listed but never counted as change: they rewrite rows without
changing them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from pyiceberg.manifest import DataFile, DataFileContent, ManifestContent, ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.utils.concurrent import ExecutorFactory

from calve.errors import NotAncestorError, SnapshotNotFoundError


class Operation(StrEnum):
    """The snapshot operations of the Iceberg spec, and what each means for a consumer."""

    APPEND = "append"  # only new data files: the ICDC table is the whole change
    OVERWRITE = "overwrite"  # files replaced: row-level inserts and deletes
    DELETE = "delete"  # files or rows removed
    REPLACE = "replace"  # compaction: same rows, new files; never a change


ROW_LEVEL_OPERATIONS = frozenset({Operation.OVERWRITE, Operation.DELETE})


@dataclass(frozen=True)
class FileChange:
    """One data or delete file that a snapshot added or removed, with its metrics."""

    path: str
    content: str  # "data", "position_deletes" or "equality_deletes"
    record_count: int
    file_size_in_bytes: int
    spec_id: int
    partition: dict[str, Any]
    snapshot_id: int
    data_file: DataFile = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "content": self.content,
            "record_count": self.record_count,
            "file_size_in_bytes": self.file_size_in_bytes,
            "spec_id": self.spec_id,
            "partition": self.partition,
            "snapshot_id": self.snapshot_id,
        }


@dataclass(frozen=True)
class SnapshotChange:
    """What one snapshot added and removed."""

    snapshot_id: int
    parent_snapshot_id: int | None
    operation: Operation
    timestamp_ms: int
    added_files: tuple[FileChange, ...]
    removed_files: tuple[FileChange, ...]
    added_delete_files: tuple[FileChange, ...]
    removed_delete_files: tuple[FileChange, ...]

    @property
    def is_logical_change(self) -> bool:
        """False for compaction, whose files hold the same rows as the ones they replace."""
        return self.operation != Operation.REPLACE

    @property
    def added_records(self) -> int:
        return sum(f.record_count for f in self.added_files)

    @property
    def removed_records(self) -> int:
        return sum(f.record_count for f in self.removed_files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "parent_snapshot_id": self.parent_snapshot_id,
            "operation": self.operation.value,
            "timestamp_ms": self.timestamp_ms,
            "added_files": len(self.added_files),
            "removed_files": len(self.removed_files),
            "added_records": self.added_records,
            "removed_records": self.removed_records,
            "added_delete_files": len(self.added_delete_files),
            "removed_delete_files": len(self.removed_delete_files),
        }


@dataclass(frozen=True)
class ChangeSet:
    """The changes of one table between two snapshots (from exclusive, to inclusive).

    `added_files` and `removed_files` are net over the logical snapshots of the range: a file
    added and removed again inside the range appears in neither. Compaction contributes nothing.
    """

    table: str
    table_uuid: str
    from_snapshot_id_exclusive: int | None
    to_snapshot_id_inclusive: int | None
    snapshots: tuple[SnapshotChange, ...]  # oldest first

    @property
    def logical_snapshots(self) -> tuple[SnapshotChange, ...]:
        return tuple(s for s in self.snapshots if s.is_logical_change)

    @property
    def row_level_snapshots(self) -> tuple[SnapshotChange, ...]:
        """Snapshots that changed rows in place (overwrite, delete): an ICDC table cannot hold them."""
        return tuple(s for s in self.snapshots if s.operation in ROW_LEVEL_OPERATIONS)

    @property
    def is_append_only(self) -> bool:
        return not self.row_level_snapshots

    @property
    def is_empty(self) -> bool:
        return not (
            self.added_files or self.removed_files or self.added_delete_files or self.removed_delete_files
        )

    @cached_property
    def added_files(self) -> tuple[FileChange, ...]:
        return _net(self.logical_snapshots, "added_files", "removed_files")

    @cached_property
    def removed_files(self) -> tuple[FileChange, ...]:
        return _net(self.logical_snapshots, "removed_files", "added_files", earlier=True)

    @cached_property
    def added_delete_files(self) -> tuple[FileChange, ...]:
        return _net(self.logical_snapshots, "added_delete_files", "removed_delete_files")

    @cached_property
    def removed_delete_files(self) -> tuple[FileChange, ...]:
        return _net(self.logical_snapshots, "removed_delete_files", "added_delete_files", earlier=True)

    @cached_property
    def appended_files(self) -> tuple[FileChange, ...]:
        """Data files added by `append` snapshots and still live at the end of the range."""
        removed_later = {f.path for s in self.logical_snapshots for f in s.removed_files}
        return tuple(
            f
            for s in self.snapshots
            if s.operation == Operation.APPEND
            for f in s.added_files
            if f.path not in removed_later
        )

    @property
    def added_records(self) -> int:
        return sum(f.record_count for f in self.added_files)

    @property
    def removed_records(self) -> int:
        return sum(f.record_count for f in self.removed_files)

    def to_dict(self) -> dict[str, Any]:
        added, removed = self.added_files, self.removed_files
        return {
            "table": self.table,
            "from_snapshot_id_exclusive": self.from_snapshot_id_exclusive,
            "to_snapshot_id_inclusive": self.to_snapshot_id_inclusive,
            "append_only": self.is_append_only,
            "snapshots": [s.to_dict() for s in self.snapshots],
            "added_files": [f.to_dict() for f in added],
            "removed_files": [f.to_dict() for f in removed],
            "added_delete_files": [f.to_dict() for f in self.added_delete_files],
            "removed_delete_files": [f.to_dict() for f in self.removed_delete_files],
            "added_records": sum(f.record_count for f in added),
            "removed_records": sum(f.record_count for f in removed),
            "added_bytes": sum(f.file_size_in_bytes for f in added),
            "removed_bytes": sum(f.file_size_in_bytes for f in removed),
        }


def _net(
    snapshots: Iterable[SnapshotChange], kind: str, opposite: str, *, earlier: bool = False
) -> tuple[FileChange, ...]:
    """Files of `kind` across the snapshots, less those cancelled by an `opposite` in the range.

    An added file is cancelled when a later snapshot removes it; a removed file is cancelled when
    an earlier snapshot of the range added it (it never existed at the start of the range). One
    pass, walking towards the side whose `opposite` files cancel.
    """
    ordered = list(snapshots) if earlier else list(snapshots)[::-1]
    seen_opposite: set[str] = set()
    kept: list[list[FileChange]] = []
    for snapshot in ordered:
        kept.append([f for f in getattr(snapshot, kind) if f.path not in seen_opposite])
        seen_opposite.update(f.path for f in getattr(snapshot, opposite))
    if not earlier:
        kept.reverse()
    return tuple(f for group in kept for f in group)


def snapshot_chain(
    metadata: TableMetadata, from_snapshot_id_exclusive: int | None, to_snapshot_id_inclusive: int
) -> list[Snapshot]:
    """The snapshots after `from` up to `to`, oldest first, checking that `from` is an ancestor.

    Raises NotAncestorError (rollback, branch, expired history) rather than return a wrong range.
    """
    by_id = {s.snapshot_id: s for s in metadata.snapshots}
    table = metadata.location
    if to_snapshot_id_inclusive not in by_id:
        raise SnapshotNotFoundError(
            f"snapshot {to_snapshot_id_inclusive} is not in the metadata of the table at {table} "
            "(expired, or from another table); list the live ones with `calve snapshots TABLE`"
        )
    if from_snapshot_id_exclusive is not None and from_snapshot_id_exclusive not in by_id:
        raise SnapshotNotFoundError(
            f"snapshot {from_snapshot_id_exclusive} is not in the table's metadata: it was expired or "
            "belongs to another table, so the changes since it cannot be computed from snapshots. "
            "Reprocess the table in full, or capture from a live snapshot (`calve snapshots TABLE`)."
        )
    chain: list[Snapshot] = []
    snapshot_id: int | None = to_snapshot_id_inclusive
    while snapshot_id is not None and snapshot_id != from_snapshot_id_exclusive and snapshot_id in by_id:
        chain.append(by_id[snapshot_id])
        snapshot_id = by_id[snapshot_id].parent_snapshot_id
    if from_snapshot_id_exclusive is None and _had_history_before(chain[-1]):
        oldest = chain[-1].snapshot_id
        raise NotAncestorError(
            f"the table's history before snapshot {oldest} was expired, so 'everything since the start' "
            f"cannot be read from snapshots. Read the table in full once (it is all new to you), then "
            f"capture with --since {to_snapshot_id_inclusive}."
        )
    if from_snapshot_id_exclusive is not None and snapshot_id != from_snapshot_id_exclusive:
        common = _common_ancestor(by_id, from_snapshot_id_exclusive, to_snapshot_id_inclusive)
        hint = (
            f"The newest common ancestor is {common}: reprocess from there (--since {common}), "
            "or reset the consumer's checkpoint to it."
            if common is not None
            else "They share no ancestor still in the metadata: reprocess the table in full."
        )
        raise NotAncestorError(
            f"snapshot {from_snapshot_id_exclusive} is not an ancestor of snapshot "
            f"{to_snapshot_id_inclusive}: the table was rolled back or the snapshots are on different "
            f"branches, so the rows of {from_snapshot_id_exclusive} may no longer be in the table and "
            f"no list of added files can express the difference. {hint}"
        )
    chain.reverse()
    return chain


def _had_history_before(root: Snapshot) -> bool:
    """Whether a snapshot that looks like the first one had rows before it (pyiceberg's expiry
    clears the parent id of the oldest remaining snapshot)."""
    summary = root.summary
    if summary is None or summary.get("total-records") is None:
        return root.parent_snapshot_id is not None
    before = (
        int(summary.get("total-records") or 0)
        - int(summary.get("added-records") or 0)
        + int(summary.get("deleted-records") or 0)
    )
    return before > 0 or root.parent_snapshot_id is not None


def _ancestors(by_id: dict[int, Snapshot], snapshot_id: int | None) -> Iterator[int]:
    while snapshot_id is not None and snapshot_id in by_id:
        yield snapshot_id
        snapshot_id = by_id[snapshot_id].parent_snapshot_id


def _common_ancestor(by_id: dict[int, Snapshot], a: int, b: int) -> int | None:
    ancestors_of_b = set(_ancestors(by_id, b))
    return next((s for s in _ancestors(by_id, a) if s in ancestors_of_b), None)


def capture_changes(
    table: Table,
    since: int | None = None,
    until: int | None = None,
) -> ChangeSet:
    """The change set of `table` after snapshot `since` (exclusive) up to `until` (inclusive).

    `since=None` means from the beginning of the table, `until=None` its current snapshot. Only
    the manifests written by the snapshots in the range are read.
    """
    metadata = table.metadata
    name = ".".join(table.name())
    if until is None:
        current = metadata.current_snapshot()
        if current is None:
            return ChangeSet(name, str(metadata.table_uuid), since, None, ())
        until = current.snapshot_id
    if since == until:
        return ChangeSet(name, str(metadata.table_uuid), since, until, ())
    chain = snapshot_chain(metadata, since, until)
    executor = ExecutorFactory.get_or_create()
    snapshots = tuple(executor.map(lambda s: _snapshot_change(table, s), chain))
    return ChangeSet(name, str(metadata.table_uuid), since, until, snapshots)


def _snapshot_change(table: Table, snapshot: Snapshot) -> SnapshotChange:
    """Read the files one snapshot added and removed from the manifests that it wrote."""
    io = table.io
    own = snapshot.snapshot_id
    added: list[FileChange] = []
    removed: list[FileChange] = []
    added_deletes: list[FileChange] = []
    removed_deletes: list[FileChange] = []
    for manifest in snapshot.manifests(io):
        if manifest.added_snapshot_id != own:
            continue  # carried over from an earlier snapshot: nothing of this snapshot's inside
        if manifest.added_files_count == 0 and manifest.deleted_files_count == 0:
            continue  # only EXISTING entries (a rewritten manifest)
        is_deletes = manifest.content == ManifestContent.DELETES
        for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
            if entry.snapshot_id != own or entry.status == ManifestEntryStatus.EXISTING:
                continue
            change = _file_change(table, entry.data_file, own)
            if entry.status == ManifestEntryStatus.ADDED:
                (added_deletes if is_deletes else added).append(change)
            else:
                (removed_deletes if is_deletes else removed).append(change)
    operation = snapshot.summary.operation.value if snapshot.summary is not None else "append"
    return SnapshotChange(
        snapshot_id=own,
        parent_snapshot_id=snapshot.parent_snapshot_id,
        operation=Operation(operation),
        timestamp_ms=snapshot.timestamp_ms,
        added_files=tuple(added),
        removed_files=tuple(removed),
        added_delete_files=tuple(added_deletes),
        removed_delete_files=tuple(removed_deletes),
    )


_CONTENT_NAMES = {
    DataFileContent.DATA: "data",
    DataFileContent.POSITION_DELETES: "position_deletes",
    DataFileContent.EQUALITY_DELETES: "equality_deletes",
}


def _file_change(table: Table, data_file: DataFile, snapshot_id: int) -> FileChange:
    return FileChange(
        path=data_file.file_path,
        content=_CONTENT_NAMES[data_file.content],
        record_count=data_file.record_count,
        file_size_in_bytes=data_file.file_size_in_bytes,
        spec_id=data_file.spec_id,
        partition=partition_values(table.metadata, data_file),
        snapshot_id=snapshot_id,
        data_file=data_file,
    )


def partition_values(metadata: TableMetadata, data_file: DataFile) -> dict[str, Any]:
    """A data file's partition as `{partition field name: human-readable value}`."""
    spec = metadata.specs().get(data_file.spec_id)
    if spec is None or not spec.fields:
        return {}
    try:
        partition_type = spec.partition_type(metadata.schema())
    except Exception:  # the source column of an old spec was dropped: fall back to raw values
        return {f.name: data_file.partition[i] for i, f in enumerate(spec.fields)}
    values: dict[str, Any] = {}
    for position, (spec_field, type_field) in enumerate(zip(spec.fields, partition_type.fields, strict=True)):
        value = data_file.partition[position]
        values[spec_field.name] = (
            None if value is None else spec_field.transform.to_human_string(type_field.field_type, value)
        )
    return values
