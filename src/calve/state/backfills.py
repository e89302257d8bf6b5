"""Backfills, their chunks, and what each step commit wrote: the records behind `calve backfill`,
`calve backfills` and `calve status`.

A backfill recomputes a workflow's outputs over a range of its range column, chunk by chunk; each
chunk is one record whose status says whether it is done, so a killed backfill resumes at the first
chunk not done. The truth of what a chunk committed is in the target tables' snapshot summaries
(`calve.backfill.id`, `calve.backfill.chunk`, `calve.backfill.step`): these records mirror it.

A step commit record (`StepCommit`) notes, for every commit a run or a backfill makes, the workflow
version that made it and the range of the range column it wrote, and whether it rebuilt that range
whole (`complete`) or only touched rows in it (a merge, an append). `calve status` derives from them
which ranges of a target were built by an older version of the workflow.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from calve.state.records import pid_alive

if TYPE_CHECKING:
    from calve.state.store import StateStore


class BackfillStatus(StrEnum):
    """The state of a backfill or of one of its chunks."""

    QUEUED = "queued"  # planned, not started
    RUNNING = "running"  # its process works on it (a dead process's backfill can be resumed)
    SUCCEEDED = "succeeded"  # every chunk committed (or had nothing to change)
    UNCHANGED = "unchanged"  # a chunk whose recomputed rows equal the rows it has: nothing committed
    FAILED = "failed"  # a chunk failed (an error or a failed check); resume to go on from it

    @property
    def done(self) -> bool:
        return self in (BackfillStatus.SUCCEEDED, BackfillStatus.UNCHANGED)


@dataclass(frozen=True)
class ChunkRecord:
    backfill_id: str
    chunk: int  # 0-based, in range order
    range_lo: str  # ISO text of the chunk's low end (inclusive)
    range_hi: str  # its high end: inclusive for dates and integers, exclusive for timestamps
    status: BackfillStatus = BackfillStatus.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    cpu_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # per step: rows, files, snapshot; downstream
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


@dataclass(frozen=True)
class BackfillRecord:
    backfill_id: str
    workflow: str
    workflow_version: str  # the version whose logic the backfill computes with
    steps: tuple[str, ...]
    range_column: str
    range_from: str
    range_to: str
    chunk: str  # the chunk size as given: 1d, 7d, 6h, or a number for integer columns
    status: BackfillStatus
    created_at: float
    propagate: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None = None
    params: dict[str, str] = field(default_factory=dict)  # --param values as given (parsed per chunk)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["steps"] = list(self.steps)
        return data

    def alive_elsewhere(self) -> bool:
        """Whether another live process runs this backfill (on this host, by its pid)."""
        if self.status is not BackfillStatus.RUNNING or self.pid is None:
            return False
        if self.host != socket.gethostname():
            return True  # cannot tell: assume it lives
        return self.pid != os.getpid() and pid_alive(self.pid)


@dataclass(frozen=True)
class StepCommit:
    table: str
    snapshot_id: int
    workflow: str
    step_id: str
    workflow_version: str
    range_column: str | None
    range_lo: str | None  # None (with range_column None): the commit may touch any row
    range_hi: str | None
    complete: bool  # the range was rebuilt whole (a backfill chunk, an overwrite of the range)
    committed_at: float
    run_id: str | None = None
    backfill_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BackfillLog:
    """The backfill and step-commit records of one state store."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    # ---- backfills ----------------------------------------------------------------------------

    def create(self, record: BackfillRecord, chunks: list[ChunkRecord]) -> None:
        with self.state.transaction() as db:
            db.execute(
                """INSERT INTO backfills (backfill_id, workflow, workflow_version, steps, range_column,
                     range_from, range_to, chunk, propagate, status, created_at, host, pid, params)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    record.backfill_id,
                    record.workflow,
                    record.workflow_version,
                    json.dumps(list(record.steps)),
                    record.range_column,
                    record.range_from,
                    record.range_to,
                    record.chunk,
                    int(record.propagate),
                    record.status.value,
                    record.created_at,
                    record.host,
                    record.pid,
                    json.dumps(record.params, sort_keys=True),
                ),
            )
            db.executemany(
                """INSERT INTO backfill_chunks (backfill_id, chunk, range_lo, range_hi, status)
                   VALUES (?, ?, ?, ?, ?)""",
                [(c.backfill_id, c.chunk, c.range_lo, c.range_hi, c.status.value) for c in chunks],
            )

    def update(self, backfill_id: str, **fields: Any) -> None:
        allowed = {"status", "started_at", "finished_at", "host", "pid", "error"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update backfill fields {sorted(unknown)}")
        values = {k: (v.value if isinstance(v, BackfillStatus) else v) for k, v in fields.items()}
        assignments = ", ".join(f"{name} = ?" for name in values)  # names from the allow-list above
        with self.state.transaction() as db:
            db.execute(
                f"UPDATE backfills SET {assignments} WHERE backfill_id = ?", (*values.values(), backfill_id)
            )

    def record_chunk(self, chunk: ChunkRecord) -> None:
        with self.state.transaction() as db:
            db.execute(
                """UPDATE backfill_chunks SET status = ?, started_at = ?, finished_at = ?, cpu_s = ?,
                     metrics = ?, error = ? WHERE backfill_id = ? AND chunk = ?""",
                (
                    chunk.status.value,
                    chunk.started_at,
                    chunk.finished_at,
                    chunk.cpu_s,
                    json.dumps(chunk.metrics, default=str, sort_keys=True),
                    chunk.error,
                    chunk.backfill_id,
                    chunk.chunk,
                ),
            )

    def get(self, backfill_id: str) -> BackfillRecord | None:
        with self.state.transaction() as db:
            query = f"SELECT {_BACKFILL_COLUMNS} FROM backfills WHERE backfill_id = ?"
            found = db.execute(query, (backfill_id,)).fetchone()
        return _backfill(found) if found else None

    def backfills(self, workflow: str | None = None, limit: int = 50) -> list[BackfillRecord]:
        query = f"SELECT {_BACKFILL_COLUMNS} FROM backfills"
        params: list[Any] = []
        if workflow is not None:
            query += " WHERE workflow = ?"
            params.append(workflow)
        query += " ORDER BY created_at DESC, backfill_id DESC LIMIT ?"
        params.append(limit)
        with self.state.transaction() as db:
            return [_backfill(row) for row in db.execute(query, params).fetchall()]

    def chunks(self, backfill_id: str) -> list[ChunkRecord]:
        with self.state.transaction() as db:
            rows = db.execute(
                """SELECT backfill_id, chunk, range_lo, range_hi, status, started_at, finished_at, cpu_s,
                          metrics, error
                   FROM backfill_chunks WHERE backfill_id = ? ORDER BY chunk""",
                (backfill_id,),
            ).fetchall()
        return [
            ChunkRecord(
                r[0], r[1], r[2], r[3], BackfillStatus(r[4]), r[5], r[6], r[7], json.loads(r[8]), r[9]
            )
            for r in rows
        ]

    def claim(self, backfill_id: str) -> BackfillRecord:
        """Mark the backfill running in this process (the caller checked no live process has it)."""
        now = time.time()
        with self.state.transaction() as db:
            db.execute(
                """UPDATE backfills SET status = ?, host = ?, pid = ?, error = NULL,
                     started_at = coalesce(started_at, ?), finished_at = NULL WHERE backfill_id = ?""",
                (BackfillStatus.RUNNING.value, socket.gethostname(), os.getpid(), now, backfill_id),
            )
        record = self.get(backfill_id)
        assert record is not None
        return record

    # ---- step commits --------------------------------------------------------------------------

    def record_commit(self, commit: StepCommit) -> None:
        with self.state.transaction() as db:
            db.execute(
                """INSERT INTO step_commits (table_name, snapshot_id, workflow, step_id,
                     workflow_version, run_id, backfill_id, range_column, range_lo, range_hi, complete,
                     committed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (table_name, snapshot_id) DO UPDATE SET workflow = excluded.workflow,
                     step_id = excluded.step_id, workflow_version = excluded.workflow_version,
                     run_id = excluded.run_id, backfill_id = excluded.backfill_id,
                     range_column = excluded.range_column, range_lo = excluded.range_lo,
                     range_hi = excluded.range_hi, complete = excluded.complete,
                     committed_at = excluded.committed_at""",
                (
                    commit.table,
                    commit.snapshot_id,
                    commit.workflow,
                    commit.step_id,
                    commit.workflow_version,
                    commit.run_id,
                    commit.backfill_id,
                    commit.range_column,
                    commit.range_lo,
                    commit.range_hi,
                    int(commit.complete),
                    commit.committed_at,
                ),
            )

    def commits(self, workflow: str, step_id: str) -> list[StepCommit]:
        """A step's commits, oldest first."""
        order = self.state.backend.insertion_order  # a fixed column name of the backend
        with self.state.transaction() as db:
            rows = db.execute(
                f"""SELECT table_name, snapshot_id, workflow, step_id, workflow_version, range_column,
                          range_lo, range_hi, complete, committed_at, run_id, backfill_id
                   FROM step_commits WHERE workflow = ? AND step_id = ? ORDER BY committed_at, {order}""",
                (workflow, step_id),
            ).fetchall()
        return [
            StepCommit(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9], r[10], r[11])
            for r in rows
        ]


_BACKFILL_COLUMNS = (
    "backfill_id, workflow, workflow_version, steps, range_column, range_from, range_to, chunk, status, "
    "created_at, propagate, started_at, finished_at, host, pid, error, params"
)


def _backfill(row: tuple[Any, ...]) -> BackfillRecord:
    return BackfillRecord(
        backfill_id=row[0],
        workflow=row[1],
        workflow_version=row[2],
        steps=tuple(json.loads(row[3])),
        range_column=row[4],
        range_from=row[5],
        range_to=row[6],
        chunk=row[7],
        status=BackfillStatus(row[8]),
        created_at=row[9],
        propagate=bool(row[10]),
        started_at=row[11],
        finished_at=row[12],
        host=row[13],
        pid=row[14],
        error=row[15],
        params=json.loads(row[16]),
    )


__all__ = ["BackfillLog", "BackfillRecord", "BackfillStatus", "ChunkRecord", "StepCommit"]
