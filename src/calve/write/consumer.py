"""Consumers: named readers that process source tables incrementally, exactly once.

A consumer's checkpoint per source table (the last snapshot it processed) is stored in the target
table it writes, and advances in the same atomic Iceberg commit as its output:

- the table property `calve.checkpoint.<consumer>` holds the checkpoints as JSON (it survives
  snapshot expiry and is read in O(1));
- the committed snapshot's summary carries `calve.write.consumer` and `calve.checkpoint` (the audit trail).

A crash before the commit leaves both the output and the checkpoint as they were; a crash after it
leaves both advanced. The commit also asserts, inside the catalog's compare-and-swap, that the
checkpoint is still the one the consumer read, so a concurrent run of the same consumer cannot
commit the same changes twice (pyiceberg would otherwise rebase and retry the append).
A state store may mirror checkpoints for listing (`calve consumers`): pass it as `mirror`, and each
commit reports its checkpoints to it. Reading (`checkpoints`, `pending`) never writes anything.

    consumer = Consumer(catalog, "daily_rollup")
    changes = consumer.pending(source, target)
    rows = transform(compute_changelog(source, changes).inserted)
    consumer.commit(target, [changes], rows, mode="append")
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysFalse, AlwaysTrue, BooleanExpression
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import ValidatableTableRequirement

from calve import _faults
from calve.capture.changes import ChangeSet, capture_changes
from calve.capture.icdc import IcdcTable, create_icdc_table, default_icdc_identifier
from calve.errors import CalveError, CheckpointConflictError, ConfigError
from calve.write.merge import MergePlan, plan_merge
from calve.write.modes import WriteMode
from calve.write.mor import stage_merge_on_read
from calve.write.staged import StagedOutput
from calve.write.transaction import transaction

CHECKPOINT_PROPERTY_PREFIX = "calve.checkpoint."
SUMMARY_CONSUMER = "calve.write.consumer"
SUMMARY_CHECKPOINT = "calve.checkpoint"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,127}$")

ALWAYS_TRUE = AlwaysTrue()


@dataclass(frozen=True)
class Checkpoint:
    """Up to which snapshot of a source table a consumer has processed."""

    source_table: str
    source_uuid: str
    snapshot_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"table_uuid": self.source_uuid, "snapshot_id": self.snapshot_id}


@dataclass(frozen=True)
class CommitResult:
    target_table: str
    snapshot_id: int | None  # None when there was nothing to write (only the checkpoint advanced)
    checkpoints: tuple[Checkpoint, ...]
    rows_written: int
    rows_deleted: int = 0
    files_written: int = 0
    bytes_written: int = 0
    files_removed: int = 0
    merge: MergePlan | None = None
    written_files: tuple[DataFile, ...] = ()  # the data files an engine's workers wrote, if it did
    written_by: str | None = None  # "workers" when an engine's workers wrote the files; else the driver


class AssertCheckpointUnchanged(ValidatableTableRequirement):
    """Commit requirement: the consumer's checkpoint property still has the value it read."""

    type: Literal["assert-calve-checkpoint"] = "assert-calve-checkpoint"
    key: str
    expected: str | None

    def validate(self, base_metadata: TableMetadata | None) -> None:  # type: ignore[override]
        current = None if base_metadata is None else base_metadata.properties.get(self.key)
        if current != self.expected:
            raise CheckpointConflictError(
                f"{self.key} changed from {self.expected!r} to {current!r} since it was read: another run "
                "of this consumer committed first. Nothing was committed by this run; run it again to "
                "process what is still pending."
            )


def _refuse_rest_catalog(target: Table) -> None:
    """A REST catalog cannot check `AssertCheckpointUnchanged`: refuse before writing anything.

    The server checks a commit's requirements, and the REST specification has a closed list of them;
    pyiceberg's client already refuses to build a request with another (a pydantic error). Without
    the check a race of two runs could commit the same changes twice (docs/deployment.md).
    """
    from pyiceberg.catalog.rest import RestCatalog

    if isinstance(target.catalog, RestCatalog):
        raise ConfigError(
            f"cannot commit {target.name()} through the REST catalog {target.catalog.name!r}: calve's "
            "exactly-once guard (the checkpoint must be unchanged at the commit) is a requirement that "
            "REST catalog servers cannot check, and that path is not implemented yet. Write consumers' "
            "outputs through a SQL catalog (catalog: embedded, or catalog: postgresql://...); see "
            "docs/deployment.md"
        )


class CheckpointMirror(Protocol):
    """Where a consumer reports the checkpoints it committed (calve's state store is one)."""

    def mirror_checkpoint(
        self, consumer: str, checkpoint: Checkpoint, target_table: str, target_snapshot_id: int | None
    ) -> None: ...


class Consumer:
    """A named reader of source tables whose checkpoints live in the target table it writes."""

    def __init__(self, catalog: Catalog, name: str, mirror: CheckpointMirror | None = None) -> None:
        if not _NAME.match(name):
            raise CalveError(
                f"consumer name {name!r} is not valid: use a letter, then letters, digits, '_' or '-' "
                "(at most 128 characters)"
            )
        self.catalog = catalog
        self.name = name
        self.mirror = mirror

    @property
    def property_key(self) -> str:
        return CHECKPOINT_PROPERTY_PREFIX + self.name

    def checkpoints(self, target: Table) -> dict[str, Checkpoint]:
        """The consumer's checkpoints as committed in `target` (source table name -> checkpoint)."""
        raw = target.metadata.properties.get(self.property_key)
        if raw is None:
            return {}
        return {
            source: Checkpoint(source, value["table_uuid"], value["snapshot_id"])
            for source, value in json.loads(raw).items()
        }

    def checkpoint(self, target: Table, source: Table) -> Checkpoint | None:
        name = _table_name(source)
        checkpoint = self.checkpoints(target).get(name)
        if checkpoint is not None and checkpoint.source_uuid != str(source.metadata.table_uuid):
            raise CalveError(
                f"consumer {self.name!r} has a checkpoint for {name} (table uuid {checkpoint.source_uuid}), "
                f"but {name} is now another table (uuid {source.metadata.table_uuid}): it was dropped and "
                "recreated. Reprocess it in full: Consumer.reset(target, source) forgets the checkpoint."
            )
        return checkpoint

    def reset(self, target: Table, source_table: Table | str, snapshot_id: int | None = None) -> None:
        """Set (or with `snapshot_id=None` forget) the checkpoint for a source, in one commit of `target`."""
        name = source_table if isinstance(source_table, str) else _table_name(source_table)
        merged = {n: c.to_dict() for n, c in self.checkpoints(target).items()}
        if snapshot_id is None:
            merged.pop(name, None)
        else:
            if isinstance(source_table, str):
                raise CalveError("to set a checkpoint, pass the source Table (its uuid is recorded)")
            merged[name] = Checkpoint(name, str(source_table.metadata.table_uuid), snapshot_id).to_dict()
        with transaction(target) as tx:
            tx.set_properties({self.property_key: json.dumps(merged, sort_keys=True, separators=(",", ":"))})

    def pending(self, source: Table, target: Table, until: int | None = None) -> ChangeSet:
        """The changes of `source` that this consumer has not yet committed into `target` (a pure read)."""
        checkpoint = self.checkpoint(target, source)
        return capture_changes(source, checkpoint.snapshot_id if checkpoint else None, until)

    def icdc(self, source: Table, changes: ChangeSet, *, appends_only: bool = False) -> IcdcTable:
        """Publish the pending changes as this consumer's ICDC table of `source` (replacing the last one)."""
        return create_icdc_table(
            self.catalog,
            source,
            changes,
            default_icdc_identifier(changes.table, self.name),
            appends_only=appends_only,
            consumer=self.name,
        )

    def commit(
        self,
        target: Table,
        changes: Sequence[ChangeSet],
        data: pa.Table | pa.RecordBatchReader | StagedOutput,
        mode: WriteMode | str = WriteMode.APPEND,
        overwrite_filter: BooleanExpression | str = ALWAYS_TRUE,
        keys: Sequence[str] = (),
        deletes: pa.Table | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> CommitResult:
        """Write `data` into `target` and advance the checkpoints to the end of `changes`, atomically.

        `append` adds the rows; `overwrite` replaces the rows matching `overwrite_filter` (default: all)
        with them; `merge` upserts them on `keys` and deletes the `deletes` keys, rewriting only the
        files that hold one of the keys. With nothing to write, only the checkpoint advances.
        `properties` go into the snapshot's summary (who wrote it: workflow version, backfill chunk).
        A `StagedOutput` (rows on an engine's workers) is written there as data files before the
        commit; a run killed between the two leaves those files unreferenced, never rows.
        """
        if mode not in tuple(WriteMode):
            raise CalveError(f"write mode {mode!r} is not one of: {', '.join(WriteMode)}")
        mode = WriteMode(mode)
        if mode is WriteMode.MERGE and not keys:
            raise CalveError("mode 'merge' needs the key columns (keys=...)")
        if isinstance(data, pa.RecordBatchReader) and mode == "merge":
            data = data.read_all()
        _refuse_rest_catalog(target)
        expected = target.metadata.properties.get(self.property_key)
        merged = {name: c.to_dict() for name, c in self.checkpoints(target).items()}
        advanced = []
        for change_set in changes:
            checkpoint = Checkpoint(
                change_set.table, change_set.table_uuid, change_set.to_snapshot_id_inclusive
            )
            merged[change_set.table] = checkpoint.to_dict()
            advanced.append(checkpoint)
        value = json.dumps(merged, sort_keys=True, separators=(",", ":"))
        summary = {**(properties or {}), SUMMARY_CONSUMER: self.name, SUMMARY_CHECKPOINT: value}

        plan = None
        if mode == "merge":
            assert not isinstance(data, pa.RecordBatchReader)
            plan = plan_merge(target, data, keys, deletes)
        empty = not isinstance(data, pa.RecordBatchReader) and data.num_rows == 0
        nothing_to_write = empty and (
            mode == "append" or (plan is not None and not plan.deleted_files and not plan.positions)
        )
        before = target.current_snapshot()
        staged_files = None  # a staged output's data files, written by the engine's workers
        if isinstance(data, StagedOutput) and mode != "merge" and not empty:
            staged_files = data.write_files(target)

        _faults.crash_point("consumer.before_commit")
        with warnings.catch_warnings(), transaction(target) as tx:
            # an overwrite of days that hold no rows yet is normal here, not worth a warning
            warnings.filterwarnings("ignore", message="Delete operation did not match any records")
            # checked again inside the catalog's compare-and-swap, on every retry of the commit
            requirement = AssertCheckpointUnchanged(key=self.property_key, expected=expected)
            tx._stage((), (requirement,))  # type: ignore[arg-type]
            if nothing_to_write:
                pass  # the checkpoint alone advances: no empty snapshot for downstream readers to see
            elif isinstance(data, StagedOutput) and mode != "merge":
                _commit_files(tx, mode, staged_files or [], overwrite_filter, summary)
            elif mode == "append":
                tx.append(data, snapshot_properties=summary)
            elif mode == "overwrite":
                tx.overwrite(data, overwrite_filter=overwrite_filter, snapshot_properties=summary)
            else:
                assert plan is not None
                _commit_merge(tx, target, plan, summary)
            # staged after the snapshot, whose producer then reads the metadata without a copy
            tx.set_properties({self.property_key: value})
            _faults.crash_point("consumer.during_commit")
        _faults.crash_point("consumer.after_commit")

        snapshot = target.current_snapshot()
        if self.mirror is not None:
            for checkpoint in advanced:
                self.mirror.mirror_checkpoint(
                    self.name, checkpoint, _table_name(target), snapshot.snapshot_id if snapshot else None
                )
        committed = snapshot is not None and (before is None or snapshot.snapshot_id != before.snapshot_id)
        summary_of = snapshot.summary if committed and snapshot and snapshot.summary else None

        def count(key: str) -> int:
            return int(summary_of.get(key) or 0) if summary_of is not None else 0

        return CommitResult(
            _table_name(target),
            snapshot.snapshot_id if committed and snapshot else None,
            tuple(advanced),
            rows_written=count("added-records"),
            rows_deleted=count("deleted-records"),
            files_written=count("added-data-files"),
            bytes_written=count("added-files-size"),
            files_removed=count("deleted-data-files"),
            merge=plan,
            written_files=tuple(staged_files or (plan.written_files if plan and plan.written_files else ())),
            written_by="workers"
            if staged_files is not None or (plan is not None and plan.written_files is not None)
            else None,
        )


def _commit_files(
    tx: Transaction,
    mode: WriteMode,
    files: list[DataFile],
    overwrite_filter: BooleanExpression | str,
    summary: dict[str, str],
) -> None:
    """Data files already written (by an engine's workers) appended, after the overwrite's delete,
    as pyiceberg's `Transaction.overwrite` stages them (a delete snapshot, then an append). A file
    only part of whose rows match the filter is rewritten by that delete, on the driver."""
    if mode == "overwrite" and not isinstance(overwrite_filter, AlwaysFalse):
        tx.delete(delete_filter=overwrite_filter, snapshot_properties=summary)
    if files:
        with tx._append_snapshot_producer(summary) as append:
            for data_file in files:
                append.append_data_file(data_file)


def _commit_merge(tx: Transaction, target: Table, plan: MergePlan, summary: dict[str, str]) -> None:
    """One snapshot: the rewritten files out, their kept rows and the upserts in."""
    if plan.written_files is not None:  # written by an engine's workers
        if not plan.deleted_files:
            _commit_files(tx, WriteMode.APPEND, plan.written_files, ALWAYS_TRUE, summary)
            return
        with tx.update_snapshot(snapshot_properties=summary).overwrite() as overwrite:
            for data_file in plan.deleted_files:
                overwrite.delete_data_file(data_file)
            for data_file in plan.written_files:
                overwrite.append_data_file(data_file)
        return
    assert plan.rows is not None
    if plan.positions:  # merge-on-read: position delete files, the rewritten files stay
        stage_merge_on_read(tx, target, plan.rows, plan.positions, summary)
        return
    if not plan.deleted_files:
        tx.append(plan.rows, snapshot_properties=summary)
        return
    commit_uuid = uuid.uuid4()
    with tx.update_snapshot(snapshot_properties=summary).overwrite(commit_uuid) as overwrite:
        for data_file in plan.deleted_files:
            overwrite.delete_data_file(data_file)
        if plan.rows.num_rows:
            for data_file in _dataframe_to_data_files(
                table_metadata=tx.table_metadata,
                df=plan.rows,
                io=target.io,
                write_uuid=commit_uuid,
                counter=itertools.count(0),
            ):
                overwrite.append_data_file(data_file)


def _table_name(table: Table) -> str:
    return ".".join(table.name())
