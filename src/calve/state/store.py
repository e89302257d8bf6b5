"""The state store: run history, run locks, trigger state and a mirror of consumer checkpoints, in a
SQLite file (the embedded default) or a PostgreSQL database (shared deployments, docs/deployment.md).

The Iceberg commit of a consumer's output is the source of truth for its checkpoint; this store
mirrors it so that `calve consumers` lists without loading every target table. Runs and their steps
are recorded here (`calve runs`), at most one run per workflow holds the lock, and the scheduler keeps
the last slot it fired per trigger. The schema is versioned and migrated forward on open.
The SQL is written once for both databases; `calve.state.backends` supplies what differs.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calve.errors import CalveError, StateStoreError
from calve.state.backends import Transaction, open_backend
from calve.state.records import (
    ACTIVE,
    CheckpointRecord,
    RunLock,
    RunMetrics,
    RunRecord,
    RunStatus,
    StepMetrics,
    StepRunRecord,
    pid_alive,
)
from calve.state.schema import MIGRATIONS, STATE_VERSION


@dataclass(frozen=True)
class RunTotals:
    """The runs of one workflow with one status, and the sums of what they did."""

    workflow: str
    status: str
    runs: int
    duration_s: float  # summed over the runs that finished (started_at to finished_at)
    timed_runs: int  # runs with both times
    cpu_s: float
    rows_read: int
    rows_written: int


class StateStore:
    """Run history, run locks, trigger state and mirror of consumer checkpoints (SQLite or PostgreSQL)."""

    def __init__(self, path: Path | str | None = None) -> None:
        """Open (and migrate) the store at `path`: a SQLite file, or a `postgresql://` URL."""
        if path is None:
            from calve.catalog import calve_home  # (pyiceberg: only when the default is needed)

            path = calve_home() / "state.db"
        self.backend = open_backend(path)
        # the SQLite file's path (None on PostgreSQL), and what messages call the store
        self.path: Path | None = getattr(self.backend, "path", None)
        self.location = self.backend.description
        with self._connect() as db:
            self._migrate(db)

    def _connect(self) -> AbstractContextManager[Transaction]:
        """One transaction on this thread's connection, serialized against every other transaction of
        the store (SQLite's write lock taken up front; on PostgreSQL an advisory lock): the store's
        read-then-write decisions hold across processes (calve.state.backends)."""
        return self.backend.transaction()

    def transaction(self) -> AbstractContextManager[Transaction]:
        """One transaction on this thread's connection (for record kinds kept in their own module,
        such as `calve.state.backfills`)."""
        return self._connect()

    def _migrate(self, db: Transaction) -> None:
        version = self.backend.schema_version(db)
        if version > STATE_VERSION:
            raise StateStoreError(
                f"the state store {self.location} is at version {version}, newer than this calve "
                f"understands ({STATE_VERSION}): a newer calve wrote it. Upgrade calve "
                "(pip install -U calve), or point `state:` in calve.yaml at another store"
            )
        for number in range(version, STATE_VERSION):
            try:
                MIGRATIONS[number](db)
            except self.backend.errors as exc:
                raise StateStoreError(
                    f"migrating the state store {self.location} from version {number} to {number + 1} failed "
                    f"({exc}); nothing was changed (the migration runs in one transaction). Check that it is "
                    "a calve state store and is writable; restore it from a backup, or move it aside to "
                    "start with an empty run history (checkpoints live in the tables and are not lost)"
                ) from None
        if version != STATE_VERSION:
            self.backend.set_schema_version(db, STATE_VERSION)

    def record_checkpoint(self, record: CheckpointRecord) -> None:
        with self._connect() as db:
            db.execute(
                """INSERT INTO consumer_checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (consumer, source_table, target_table) DO UPDATE SET
                     source_uuid = excluded.source_uuid, snapshot_id = excluded.snapshot_id,
                     target_snapshot_id = excluded.target_snapshot_id, updated_at = excluded.updated_at""",
                (
                    record.consumer,
                    record.source_table,
                    record.source_uuid,
                    record.snapshot_id,
                    record.target_table,
                    record.target_snapshot_id,
                    record.updated_at or time.time(),
                ),
            )

    def mirror_checkpoint(
        self, consumer: str, checkpoint: Any, target_table: str, target_snapshot_id: int | None
    ) -> None:
        """Mirror a checkpoint a consumer committed (a `calve.write.consumer.CheckpointMirror`)."""
        self.record_checkpoint(
            CheckpointRecord(
                consumer=consumer,
                source_table=checkpoint.source_table,
                source_uuid=checkpoint.source_uuid,
                snapshot_id=checkpoint.snapshot_id,
                target_table=target_table,
                target_snapshot_id=target_snapshot_id,
                updated_at=time.time(),
            )
        )

    def checkpoints(self, consumer: str | None = None) -> list[CheckpointRecord]:
        query = "SELECT * FROM consumer_checkpoints"
        params: tuple[str, ...] = ()
        if consumer is not None:
            query += " WHERE consumer = ?"
            params = (consumer,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY consumer, source_table, target_table", params).fetchall()
        return [CheckpointRecord(*row) for row in rows]

    # ---- runs -------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> bool:
        """Record a new run; False if its trigger slot already has a run (a scheduler restarted)."""
        with self._connect() as db:
            cursor = db.execute(
                """INSERT INTO runs (run_id, workflow, workflow_version, trigger, trigger_slot,
                     logical_date, params, status, created_at, started_at, finished_at, pins, restart_of,
                     host, pid, error, attempt, transient, metrics)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT DO NOTHING""",
                (
                    run.run_id,
                    run.workflow,
                    run.workflow_version,
                    run.trigger,
                    run.trigger_slot,
                    run.logical_date,
                    json.dumps(run.params, default=str, sort_keys=True),
                    run.status.value,
                    run.created_at,
                    run.started_at,
                    run.finished_at,
                    json.dumps(run.pins, sort_keys=True),
                    run.restart_of,
                    run.host,
                    run.pid,
                    run.error,
                    run.attempt,
                    int(run.transient),
                    json.dumps(run.metrics.to_dict(), sort_keys=True),
                ),
            )
            if cursor.rowcount > 0 and run.trigger_slot is not None:
                db.execute(
                    """INSERT INTO trigger_state VALUES (?, ?, ?, ?)
                       ON CONFLICT (workflow, trigger) DO UPDATE SET
                         last_slot = excluded.last_slot, last_fired_at = excluded.last_fired_at""",
                    (run.workflow, run.trigger, run.trigger_slot, run.created_at),
                )
            return cursor.rowcount > 0

    def update_run(self, run_id: str, **fields: Any) -> None:
        allowed = {
            "status",
            "started_at",
            "finished_at",
            "pins",
            "host",
            "pid",
            "error",
            "transient",
            "metrics",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update run fields {sorted(unknown)}")
        values = {k: _column_value(k, v) for k, v in fields.items()}
        assignments = ", ".join(f"{name} = ?" for name in values)  # names from the allow-list above
        with self._connect() as db:
            db.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", (*values.values(), run_id))

    def record_step(self, step: StepRunRecord) -> None:
        with self._connect() as db:
            db.execute(
                """INSERT INTO step_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (run_id, step_id, iteration) DO UPDATE SET
                     status = excluded.status, started_at = excluded.started_at,
                     finished_at = excluded.finished_at, cpu_s = excluded.cpu_s,
                     metrics = excluded.metrics, error = excluded.error""",
                (
                    step.run_id,
                    step.step_id,
                    step.iteration,
                    step.iteration_value,
                    step.status.value,
                    step.started_at,
                    step.finished_at,
                    step.cpu_s,
                    json.dumps(step.metrics.to_dict(), default=str, sort_keys=True),
                    step.error,
                ),
            )

    def runs(
        self, workflow: str | None = None, limit: int = 50, status: RunStatus | None = None
    ) -> list[RunRecord]:
        query = "SELECT * FROM runs WHERE 1 = 1"
        params: list[Any] = []
        if workflow is not None:
            query += " AND workflow = ?"
            params.append(workflow)
        if status is not None:
            query += " AND status = ?"
            params.append(status.value)
        query += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        params.append(limit)
        with self._connect() as db:
            return [_run(row) for row in db.execute(query, params).fetchall()]

    def run(self, run_id: str) -> RunRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    def step_runs(self, run_id: str) -> list[StepRunRecord]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM step_runs WHERE run_id = ? ORDER BY started_at, step_id, iteration", (run_id,)
            ).fetchall()
        return [
            StepRunRecord(
                run_id=r[0],
                step_id=r[1],
                iteration=r[2],
                iteration_value=r[3],
                status=RunStatus(r[4]),
                started_at=r[5],
                finished_at=r[6],
                cpu_s=r[7],
                metrics=StepMetrics.from_dict(json.loads(r[8])),
                error=r[9],
            )
            for r in rows
        ]

    def run_totals(self) -> list[RunTotals]:
        """Per workflow and status: runs, and the sums of their durations, CPU and rows (for /metrics)."""
        number = self.backend.json_number
        with self._connect() as db:
            rows = db.execute(
                f"""SELECT workflow, status, count(*),
                          coalesce(sum(finished_at - started_at), 0),
                          count(finished_at - started_at),
                          coalesce(sum({number("metrics", "cpu_s")}), 0),
                          coalesce(sum({number("metrics", "rows_read")}), 0),
                          coalesce(sum({number("metrics", "rows_written")}), 0)
                   FROM runs GROUP BY workflow, status ORDER BY workflow, status"""
            ).fetchall()
        return [
            RunTotals(wf, status, int(runs), float(dur), int(timed), float(cpu), int(read), int(written))
            for wf, status, runs, dur, timed, cpu, read, written in rows
        ]

    def newest_source_commits(self) -> dict[str, float]:
        """Per output table: the newest source commit (epoch s) that a committed step's output includes."""
        target, commit_at = (
            self.backend.json_text("metrics", "output"),
            self.backend.json_number("metrics", "source_commit_at"),
        )
        with self._connect() as db:
            rows = db.execute(
                f"""SELECT {target}, max({commit_at}) FROM step_runs
                   WHERE status = 'succeeded' AND {commit_at} IS NOT NULL AND {target} IS NOT NULL
                   GROUP BY {target}"""
            ).fetchall()
        return {name: float(at) for name, at in rows}

    def last_slot(self, workflow: str, trigger: str) -> tuple[str | None, float | None]:
        with self._connect() as db:
            row = db.execute(
                "SELECT last_slot, last_fired_at FROM trigger_state WHERE workflow = ? AND trigger = ?",
                (workflow, trigger),
            ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def mark_fired(self, workflow: str, trigger: str, at: float) -> None:
        """Remember when a slot-less (incremental) trigger last fired, for its min_interval."""
        with self._connect() as db:
            db.execute(
                """INSERT INTO trigger_state VALUES (?, ?, NULL, ?)
                   ON CONFLICT (workflow, trigger) DO UPDATE SET last_fired_at = excluded.last_fired_at""",
                (workflow, trigger, at),
            )

    # ---- locks ------------------------------------------------------------------------------

    def acquire_lock(self, workflow: str, run_id: str, stale_after_s: float) -> RunLock | None:
        """Take the workflow's run lock for `run_id`; returns the live holder instead if there is one.

        A lock is stale when its holder stopped heartbeating for `stale_after_s`, or when the holder's
        process on this host is gone (killed): then the lock is taken over and the dead run is marked
        failed, so a SIGKILL never leaves a workflow stuck.
        """
        now = time.time()
        host = socket.gethostname()
        with self._connect() as db:
            row = db.execute("SELECT * FROM run_locks WHERE workflow = ?", (workflow,)).fetchone()
            if row is not None:
                holder = RunLock(*row)
                if holder.run_id != run_id and not holder.is_stale(now, stale_after_s, host):
                    return holder
                if holder.run_id != run_id:
                    _end_run(
                        db,
                        holder.run_id,
                        RunStatus.FAILED,
                        f"the run stopped without finishing (process {holder.pid} on {holder.host} is "
                        "gone or stopped heartbeating); its committed steps stand, rerun to finish",
                        now,
                    )
            db.execute(
                """INSERT INTO run_locks VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (workflow) DO UPDATE SET run_id = excluded.run_id, host = excluded.host,
                     pid = excluded.pid, acquired_at = excluded.acquired_at,
                     heartbeat_at = excluded.heartbeat_at""",
                (workflow, run_id, host, os.getpid(), now, now),
            )
        return None

    def heartbeat(self, workflow: str, run_id: str) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE run_locks SET heartbeat_at = ? WHERE workflow = ? AND run_id = ?",
                (time.time(), workflow, run_id),
            )

    def release_lock(self, workflow: str, run_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM run_locks WHERE workflow = ? AND run_id = ?", (workflow, run_id))

    def reap_dead_runs(self, workflow: str | None = None) -> list[str]:
        """Mark failed every active run of this host whose process is gone; returns their ids.

        Called wherever runs are looked at (`calve runs`, a restart, the scheduler), so a killed run is
        known to be dead the moment anyone looks, not only when the next run takes its lock.
        """
        host = socket.gethostname()
        now = time.time()
        reaped = []
        with self._connect() as db:
            query = "SELECT run_id, pid FROM runs WHERE host = ? AND status IN (?, ?)"
            params: list[Any] = [host, *(s.value for s in ACTIVE)]
            if workflow is not None:
                query += " AND workflow = ?"
                params.append(workflow)
            for run_id, pid in db.execute(query, params).fetchall():
                if pid is None or pid == os.getpid() or pid_alive(pid):
                    continue
                _end_run(
                    db,
                    run_id,
                    RunStatus.FAILED,
                    f"interrupted: its process {pid} on {host} is gone; its committed steps stand, "
                    "restart it to finish (calve run WORKFLOW --restart RUN_ID)",
                    now,
                )
                reaped.append(run_id)
        return reaped

    def cancel_run(self, run_id: str, reason: str = "cancelled by calve runs cancel") -> RunRecord:
        """Mark an active run (and its running steps) cancelled and free its lock.

        Refuses a run whose process is alive on this host: stop that process first. A run of another
        host cannot be checked from here; cancel it only when you know its process is gone.
        """
        host = socket.gethostname()
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise CalveError(f"no run {run_id!r}; list runs with `calve runs`")
            run = _run(row)
            if not run.status.active:
                raise CalveError(f"run {run_id} is {run.status.value} already; only a queued or running run")
            if run.host == host and run.pid is not None and run.pid != os.getpid() and pid_alive(run.pid):
                raise CalveError(
                    f"run {run_id} is still running as process {run.pid} on this host; stop it first "
                    f"(kill {run.pid}): its committed steps stand, and it is then cancelled on sight"
                )
            _end_run(db, run_id, RunStatus.CANCELLED, reason, time.time())
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _run(row)

    def end_run(self, run_id: str, status: RunStatus, error: str) -> None:
        """End an active run with `status` (failed, cancelled): its running steps too; free its lock."""
        with self._connect() as db:
            _end_run(db, run_id, status, error, time.time())

    def restarted_by(self, run_id: str) -> RunRecord | None:
        """The run that restarted `run_id`, if one did."""
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM runs WHERE restart_of = ? ORDER BY created_at LIMIT 1", (run_id,)
            ).fetchone()
        return _run(row) if row else None

    def locks(self) -> list[RunLock]:
        with self._connect() as db:
            return [RunLock(*row) for row in db.execute("SELECT * FROM run_locks").fetchall()]


def _run(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        workflow=row[1],
        workflow_version=row[2],
        trigger=row[3],
        trigger_slot=row[4],
        logical_date=row[5],
        params=json.loads(row[6]),
        status=RunStatus(row[7]),
        created_at=row[8],
        started_at=row[9],
        finished_at=row[10],
        pins=json.loads(row[11]),
        restart_of=row[12],
        host=row[13],
        pid=row[14],
        error=row[15],
        attempt=row[16],
        transient=bool(row[17]),
        metrics=RunMetrics.from_dict(json.loads(row[18] or "{}")),
    )


def _column_value(name: str, value: Any) -> Any:
    """A run field as its `runs` column stores it: enums by value, pins and metrics as JSON, flags as
    0 or 1 (an INTEGER column: PostgreSQL does not take a boolean for it)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, RunStatus):
        return value.value
    if isinstance(value, RunMetrics):
        return json.dumps(value.to_dict(), sort_keys=True)
    if name == "pins":
        return json.dumps(value, sort_keys=True)
    return value


def _end_run(db: Transaction, run_id: str, status: RunStatus, error: str, now: float) -> None:
    """End an active run with `status`: its running steps end with it, its lock is freed."""
    active = tuple(s.value for s in ACTIVE)
    db.execute(
        "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE run_id = ? AND status IN (?, ?)",
        (status.value, now, error, run_id, *active),
    )
    db.execute(
        "UPDATE step_runs SET status = ?, finished_at = ?, error = ? WHERE run_id = ? AND status IN (?, ?)",
        (status.value, now, f"{status.value} with its run: {error}", run_id, *active),
    )
    db.execute("DELETE FROM run_locks WHERE run_id = ?", (run_id,))
