"""Table maintenance off the hot path: compaction and snapshot expiry, by hand or by a policy.

What it guarantees:

- Every commit that rewrites files is a `replace` (calve.write.compaction): change capture ignores
  it, so no consumer reprocesses anything and no changelog shows a row.
- Expiry never removes a snapshot that a consumer still needs. A consumer's checkpoint lives in the
  properties of the table it writes (`calve.checkpoint.<consumer>`, see calve.write.consumer), so
  expiry scans the catalog's tables for checkpoints whose source is this table (matched by table
  uuid) and keeps, for each, the checkpoint snapshot and every later snapshot of the current line
  of ancestry: change capture walks from the current snapshot back to the checkpoint.
- It never expires the current snapshot, the head of a branch or a tag, the last `retain_last`
  snapshots, or a snapshot that stopped being current less than `expire_older_than` ago (a reader
  that pinned it while it was current has that long to commit a checkpoint at it).
- Expiry removes snapshots from the metadata only (as pyiceberg 0.12 does): no file is deleted.

What it does not do: manifest rewriting (pyiceberg 0.12 has no `rewrite_manifests`), deleting the
files that only expired snapshots referenced (orphan cleanup).

    maintainer = Maintainer(project)
    for table in maintainer.due(now):       # the policy's tables whose time has come
        result = maintainer.run(table, now)  # compaction, then expiry; a MaintenanceResult

    maintain(catalog, "db.events", dry_run=True)  # one table, by hand (`calve maintain`)
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchNamespaceError,
    NoSuchTableError,
    ValidationException,
)
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType

from calve.catalog import load_table
from calve.errors import CalveError
from calve.project import MaintenancePolicy
from calve.workflows.values import format_duration
from calve.write.compaction import CompactionResult, compact
from calve.write.consumer import CHECKPOINT_PROPERTY_PREFIX
from calve.write.transaction import transaction

if TYPE_CHECKING:
    from calve.project import Project

LAST_RUN_PROPERTY = "calve.maintenance.last-run-ms"
ICDC_PROPERTY = "calve.capture.icdc"  # ICDC tables clone their source's properties: not consumers
MANIFESTS_NOT_SUPPORTED = "skipped: pyiceberg 0.12 has no manifest rewriting (rewrite_manifests)"


@dataclass(frozen=True)
class ConsumerCheckpoint:
    """A consumer's checkpoint on a source table, found in the properties of its target table."""

    consumer: str
    target_table: str
    snapshot_id: int | None  # None: the consumer reads the source from its beginning


@dataclass(frozen=True)
class KeptSnapshots:
    """Snapshots expiry kept, and why."""

    reason: str
    snapshot_ids: tuple[int, ...]

    def describe(self) -> str:
        return f"kept {len(self.snapshot_ids)} snapshot(s): {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "snapshots": len(self.snapshot_ids),
            "snapshot_ids": list(self.snapshot_ids),
        }


@dataclass(frozen=True)
class ExpiryResult:
    expired: tuple[int, ...]  # snapshot ids removed (or, in a dry run, that would be)
    kept: tuple[KeptSnapshots, ...]  # each kept snapshot under the first reason that kept it
    snapshots_before: int
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "expired": len(self.expired),
            "expired_snapshot_ids": list(self.expired),
            "snapshots_before": self.snapshots_before,
            "kept": [k.to_dict() for k in self.kept],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class MaintenanceResult:
    table: str
    dry_run: bool
    compaction: CompactionResult | None = None  # None: not asked for
    expiry: ExpiryResult | None = None
    manifests: str | None = None  # what became of a manifest rewrite that was asked for
    error: str | None = None  # a concurrent commit won: nothing of the failed part was committed
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "dry_run": self.dry_run,
            "compaction": self.compaction.to_dict() if self.compaction else None,
            "expiry": self.expiry.to_dict() if self.expiry else None,
            "manifests": self.manifests,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


# -- consumer checkpoints -----------------------------------------------------------------------


def consumer_checkpoints(
    catalog: Catalog, source: Table, namespaces: Sequence[str] | None = None
) -> list[ConsumerCheckpoint]:
    """Every consumer checkpoint on `source`, from the properties of the catalog's tables.

    Loads the metadata of every table in `namespaces` (default: all, nested ones included): cheap
    for the embedded catalog, one metadata read per table elsewhere. An unreadable checkpoint
    property is an error: expiry must not guess what a consumer needs.
    """
    uuid = str(source.metadata.table_uuid)
    found: list[ConsumerCheckpoint] = []
    for identifier in catalog_tables(catalog, namespaces):
        try:
            table = catalog.load_table(identifier)
        except NoSuchTableError:  # dropped while listing
            continue
        properties = table.metadata.properties
        if properties.get(ICDC_PROPERTY) == "true":
            continue
        name = ".".join(table.name())
        for key, raw in properties.items():
            if not key.startswith(CHECKPOINT_PROPERTY_PREFIX):
                continue
            consumer = key[len(CHECKPOINT_PROPERTY_PREFIX) :]
            try:
                checkpoints = json.loads(raw)
                matching = [v for v in checkpoints.values() if v.get("table_uuid") == uuid]
            except (ValueError, AttributeError, TypeError):
                raise CalveError(
                    f"{name}'s property {key} is not a checkpoint ({raw[:80]!r}): expiry stops rather "
                    f"than guess what consumer {consumer!r} needs; fix or remove the property"
                ) from None
            found.extend(ConsumerCheckpoint(consumer, name, v.get("snapshot_id")) for v in matching)
    return found


def catalog_tables(catalog: Catalog, namespaces: Sequence[str] | None) -> Iterator[tuple[str, ...]]:
    """The identifiers of the tables in `namespaces` (default: every namespace, nested ones too)."""
    roots = [tuple(n.split(".")) for n in namespaces] if namespaces is not None else None
    for namespace in roots if roots is not None else _namespaces(catalog, ()):
        try:
            yield from (tuple(t) for t in catalog.list_tables(namespace))
        except NoSuchNamespaceError:
            continue


def _namespaces(catalog: Catalog, parent: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for namespace in catalog.list_namespaces(parent):
        namespace = tuple(namespace)
        if len(namespace) > len(parent) and namespace[: len(parent)] == parent:
            yield namespace
            yield from _namespaces(catalog, namespace)


# -- snapshot expiry ----------------------------------------------------------------------------


def expire_snapshots(
    table: Table,
    checkpoints: Sequence[ConsumerCheckpoint],
    now: dt.datetime,
    older_than_s: int,
    retain_last: int,
    *,
    dry_run: bool = False,
) -> ExpiryResult:
    """Expire the snapshots of `table` that nothing keeps (see the module docstring), in one commit."""
    metadata = table.metadata
    by_id = {s.snapshot_id: s for s in metadata.snapshots}
    current = metadata.current_snapshot()
    ancestry: list[int] = []  # the current line, newest first
    snapshot_id = current.snapshot_id if current else None
    while snapshot_id is not None and snapshot_id in by_id:
        ancestry.append(snapshot_id)
        snapshot_id = by_id[snapshot_id].parent_snapshot_id
    position = {s: i for i, s in enumerate(ancestry)}

    keep: dict[int, str] = {}
    reasons: list[tuple[str, list[int]]] = []
    warnings: list[str] = []

    def keep_for(reason: str, ids: Sequence[int]) -> None:
        new = [s for s in ids if s in by_id and s not in keep]
        for s in new:
            keep[s] = reason
        if new:
            reasons.append((reason, new))

    if current is not None:
        keep_for("the current snapshot", [current.snapshot_id])
    for name, ref in metadata.refs.items():
        kind = "branch" if ref.snapshot_ref_type == SnapshotRefType.BRANCH else "tag"
        keep_for(f"the head of {kind} {name}", [ref.snapshot_id])
    keep_for(f"the last {retain_last} of the current line (retain_last)", ancestry[:retain_last])
    for checkpoint in sorted(checkpoints, key=lambda c: (c.consumer, c.target_table)):
        who = f"consumer {checkpoint.consumer}'s checkpoint (in {checkpoint.target_table})"
        if checkpoint.snapshot_id is None:
            keep_for(f"{who} is at the start of the table: it reads the whole history", ancestry)
        elif checkpoint.snapshot_id in position:
            keep_for(
                f"{who} is at {checkpoint.snapshot_id}", ancestry[: position[checkpoint.snapshot_id] + 1]
            )
        elif checkpoint.snapshot_id in by_id:  # rolled back: keep its line down to the current one
            line: list[int] = []
            walk: int | None = checkpoint.snapshot_id
            while walk is not None and walk in by_id and walk not in position:
                line.append(walk)
                walk = by_id[walk].parent_snapshot_id
            newer = ancestry[: position[walk] + 1] if walk is not None and walk in position else ancestry
            keep_for(f"{who} is at {checkpoint.snapshot_id}, off the current line", [*line, *newer])
        else:
            warnings.append(
                f"{who} is at {checkpoint.snapshot_id}, which is no longer in the metadata: that consumer "
                "must reprocess the table (reset its checkpoint)"
            )
    cutoff_ms = int(now.timestamp() * 1000) - older_than_s * 1000
    superseded = _superseded_at_ms(table)
    recent = [
        s.snapshot_id
        for s in metadata.snapshots
        if superseded.get(s.snapshot_id, s.timestamp_ms) >= cutoff_ms
    ]
    keep_for(f"current less than {format_duration(older_than_s)} ago (expire_older_than)", recent)

    expired = tuple(s.snapshot_id for s in metadata.snapshots if s.snapshot_id not in keep)
    if expired and not dry_run:
        table.maintenance.expire_snapshots().by_ids(list(expired)).commit()
        table.refresh()
    kept = tuple(KeptSnapshots(reason, tuple(ids)) for reason, ids in reasons)
    return ExpiryResult(expired, kept, len(by_id), tuple(warnings))


def _superseded_at_ms(table: Table) -> dict[int, int]:
    """When each snapshot stopped being current (the next snapshot-log entry); absent if current."""
    log = table.metadata.snapshot_log
    superseded = {entry.snapshot_id: following.timestamp_ms for entry, following in itertools.pairwise(log)}
    if log:  # the last entry is current (a snapshot rolled back to is current again)
        superseded.pop(log[-1].snapshot_id, None)
    return superseded


# -- the policy ---------------------------------------------------------------------------------


class Maintainer:
    """Maintenance of a project's tables by its `maintenance:` policy (defaults without one).

    The tables are the outputs of the project's workflows and the policy's `tables`. A scheduler
    calls `due(now)` each tick and `run(table, now)` for each table it returns; both only read
    until `run` commits. The time of a table's last maintenance is kept in its properties
    (`calve.maintenance.last-run-ms`), so a restarted scheduler does not repeat it.
    """

    def __init__(self, project: Project, policy: MaintenancePolicy | None = None) -> None:
        self.project = project
        self.configured = policy is not None or project.settings.maintenance is not None
        self.policy = policy or project.settings.maintenance or MaintenancePolicy()
        self._not_before_ms: dict[str, int] = {}  # no need to look at the table before then

    def tables(self) -> list[str]:
        outputs = {t for workflow in self.project.workflows().values() for t in workflow.output_tables}
        return sorted(outputs | set(self.policy.tables))

    def in_window(self, now: dt.datetime) -> bool:
        if self.policy.window is None:
            return True
        start, end = self.policy.window
        minute = _utc(now).hour * 60 + _utc(now).minute
        return start <= minute < end if start < end else (minute >= start or minute < end)

    def due(self, now: dt.datetime) -> list[str]:
        """The tables to maintain now: none without a `maintenance:` section or outside its window;
        else each existing table not maintained in this window (or within `every`) and, with
        `idle`, without a commit for that long."""
        if not self.configured or not self.in_window(now):
            return []
        now_ms = int(_utc(now).timestamp() * 1000)
        due = []
        for name in self.tables():
            if now_ms < self._not_before_ms.get(name, 0):
                continue
            try:
                table = self.project.catalog.load_table(name)
            except NoSuchTableError:
                continue  # a workflow output that no run has created yet
            not_before = self._next_time_ms(table, now)
            if now_ms >= not_before:
                due.append(name)
            else:
                self._not_before_ms[name] = not_before
        return due

    def _next_time_ms(self, table: Table, now: dt.datetime) -> int:
        last = int(table.metadata.properties.get(LAST_RUN_PROPERTY) or 0)
        if self.policy.window is not None:
            start_ms = int(self._window_start(now).timestamp() * 1000)
            next_ms = 0 if last < start_ms else start_ms + 86400 * 1000
        else:
            next_ms = last + self.policy.every_s * 1000 if last else 0
        snapshot = table.current_snapshot()
        if self.policy.idle_s is not None and snapshot is not None:
            next_ms = max(next_ms, snapshot.timestamp_ms + self.policy.idle_s * 1000)
        return next_ms

    def _window_start(self, now: dt.datetime) -> dt.datetime:
        assert self.policy.window is not None
        start = self.policy.window[0]
        utc = _utc(now)
        opened = utc.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(minutes=start)
        return opened if opened <= utc else opened - dt.timedelta(days=1)

    def run(self, table_name: str, now: dt.datetime | None = None, **overrides: Any) -> MaintenanceResult:
        """Maintain `table_name` by the policy now (see `maintain`; keyword arguments override it)."""
        result = maintain(self.project.catalog, table_name, self.policy, now, **overrides)
        if result.error is None:
            self._not_before_ms.pop(table_name, None)
        return result


def maintain(
    catalog: Catalog,
    table_name: str,
    policy: MaintenancePolicy | None = None,
    now: dt.datetime | None = None,
    *,
    compact_files: bool | None = None,
    rewrite_manifests: bool = False,
    expire: bool | None = None,
    expire_older_than_s: int | None = None,
    retain_last: int | None = None,
    dry_run: bool = False,
) -> MaintenanceResult:
    """Compact, then expire, `table_name` by `policy` (default: MaintenancePolicy's defaults);
    the arguments override it, None meaning the policy's. A commit that loses to a concurrent one
    is reported in `error`, not raised: nothing of that step was committed. Unless `dry_run`,
    records the time in the table's property `calve.maintenance.last-run-ms`."""
    policy = policy or MaintenancePolicy()
    now = _utc(now or dt.datetime.now(dt.UTC))
    started = time.perf_counter()
    table = load_table(catalog, table_name)
    compaction = expiry = None
    error = None
    try:
        if policy.compact if compact_files is None else compact_files:
            compaction = compact(
                table, policy.small_file_bytes, policy.min_files, policy.max_delete_files, dry_run=dry_run
            )
            table.refresh()
        if policy.expire if expire is None else expire:
            checkpoints = consumer_checkpoints(catalog, table, policy.checkpoint_namespaces)
            expiry = expire_snapshots(
                table,
                checkpoints,
                now,
                policy.expire_older_than_s if expire_older_than_s is None else expire_older_than_s,
                policy.retain_last if retain_last is None else retain_last,
                dry_run=dry_run,
            )
    except (CommitFailedException, ValidationException) as exc:
        error = f"a concurrent commit to {table_name} won ({exc}); nothing of this step was committed"
    if not dry_run and error is None:
        table.refresh()
        with transaction(table) as tx:
            tx.set_properties({LAST_RUN_PROPERTY: str(int(now.timestamp() * 1000))})
    return MaintenanceResult(
        table_name,
        dry_run,
        compaction,
        expiry,
        MANIFESTS_NOT_SUPPORTED if rewrite_manifests else None,
        error,
        time.perf_counter() - started,
    )


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
