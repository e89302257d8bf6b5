"""The records the state store keeps: runs, their steps and metrics, run locks, mirrored checkpoints.

Records are immutable values: a change is a new record (`dataclasses.replace`) written through the
store. Step and run metrics are typed (`StepMetrics`, `RunMetrics`); their JSON form (`to_dict`) is
what `calve runs show --json` prints and what the store keeps. Reading is lenient (`from_dict`): a
key that an older calve did not write takes its default, a key a newer calve wrote is ignored, so
old runs stay readable. Every field is documented, with its unit, in docs/observability.md.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class CheckpointRecord:
    """The mirror of one consumer checkpoint (the target table's commit is the source of truth)."""

    consumer: str
    source_table: str
    source_uuid: str
    snapshot_id: int | None
    target_table: str
    target_snapshot_id: int | None
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunStatus(StrEnum):
    """The state of a run or of one step of a run."""

    QUEUED = "queued"  # recorded, not started (waiting for its lock)
    RUNNING = "running"  # its process is working on it (a dead process's run is marked failed on sight)
    SUCCEEDED = "succeeded"  # every step succeeded or had nothing to do; its commits stand
    FAILED = "failed"  # a step failed or the process died; committed steps stand, restart to finish
    SKIPPED = "skipped"  # nothing to do: no change was pending on its incremental inputs
    CANCELLED = "cancelled"  # stopped by `calve runs cancel`; committed steps stand

    @property
    def finished(self) -> bool:
        return self in FINISHED

    @property
    def active(self) -> bool:
        return self in ACTIVE


ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
FINISHED = frozenset(RunStatus) - ACTIVE
RESTARTABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    workflow: str
    workflow_version: str
    trigger: str  # manual, cron:EXPR, interval:Ns, incremental:any|all:TABLES, recovery of RUN_ID, ...
    logical_date: str
    params: dict[str, Any]
    status: RunStatus
    created_at: float
    trigger_slot: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    pins: dict[str, Any] = field(default_factory=dict)  # table -> snapshot id every step saw
    restart_of: str | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None = None
    attempt: int = 1  # 1, or n for the (n-1)th automatic retry of a transient failure
    transient: bool = False  # the failure may pass on retry (a commit conflict, an I/O error)
    metrics: RunMetrics = field(default_factory=lambda: RunMetrics())

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["status"] = self.status.value
        data["metrics"] = self.metrics.to_dict()
        return data


# how a failure is classed: user errors wait for a fix, system errors may pass (see `transient`)
ERROR_CLASSES = (
    "user.validation",  # a workflow, project or input setting does not hold (a missing column, a bad filter)
    "user.sql",  # the engine rejected the step's SQL
    "user.data",  # the step's rows do not fit its output (types, duplicate or null keys)
    "system.commit_conflict",  # another writer committed first (the checkpoint or the table moved)
    "system.io",  # reading or writing a file or the catalog failed
    "system.resources",  # out of memory or another resource limit
    "system.other",  # anything else: a bug, or an error calve does not know yet
)


@dataclass(frozen=True)
class RunMetrics:
    """What a whole run cost and achieved (stored in `runs.metrics`); None where unknown.

    `lookback_rows_estimate` is what a lookback of `lookback_days` over the workflow's range column
    would have read, from manifest statistics (calve.observe.lookback): against `rows_read` it says
    what incremental processing saved. `freshness_s` is the age, when the run finished, of the newest
    source commit that its outputs include.
    """

    cpu_s: float | None = None  # process CPU seconds of the whole run (all threads)
    peak_rss_bytes: int | None = None  # the largest peak resident memory of its steps
    freshness_s: float | None = None
    lookback_rows_estimate: int | None = None
    lookback_days: int | None = None
    rows_read: int | None = None  # summed over the steps
    rows_written: int | None = None  # summed over the steps
    error_class: str | None = None  # one of ERROR_CLASSES, for a failed run

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunMetrics:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass(frozen=True)
class InputRead:
    """Which snapshots of one input a step read."""

    table: str
    snapshot_id: int | None = None  # read: table (pinned)
    from_snapshot_id: int | None = None  # incremental: the changes after this one ...
    to_snapshot_id: int | None = None  # ... up to this one
    snapshots: int | None = None  # incremental: logical snapshots in the range
    files: int | None = None  # incremental: data files the change set added and removed
    records: int | None = None  # incremental: records the change set added and removed
    ranges: dict[str, dict[str, Any]] | None = None  # incremental: column -> {"min", "max"} (ISO)
    rows_read: int | None = None  # rows decoded for this input
    files_read: int | None = None
    bytes_read: int | None = None
    files_skipped: int | None = None  # data files left unread: pruned by a filter, a match, the change set

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        if self.snapshots is None:  # a pinned read: its snapshot id, even when the table was empty
            data["snapshot_id"] = self.snapshot_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputRead:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class MergeMetrics:
    """What a merge read to find the rows it replaces, and how many files it rewrote."""

    files_read: int = 0
    rows_read: int = 0
    bytes_read: int = 0
    rows_matched: int = 0
    files_rewritten: int = 0


@dataclass(frozen=True)
class StepTimings:
    """Where a step's wall time went, in seconds; the phases do not overlap and may not add up to
    the step's wall time (recording and bookkeeping between them are in none)."""

    plan_s: float = 0.0  # capturing changes, planning files from manifests, change ranges
    read_s: float = 0.0  # decoding the input rows
    compute_s: float = 0.0  # the SQL or Python (an aggregate step: maintaining its state)
    write_s: float = 0.0  # conforming and writing the output's data files (merge planning included)
    commit_s: float = 0.0  # the catalog commit of the output with the checkpoints

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Skew:
    """How evenly a step's rows spread: over the partitions it wrote, over the files it read."""

    output_partitions: int = 0  # partitions the committed snapshot added files to
    largest_partition_rows: int = 0
    median_partition_rows: float = 0
    input_files: int = 0  # data files read (their record counts, deletes not applied)
    largest_file_rows: int = 0
    median_file_rows: float = 0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class StepMetrics:
    """What one step (or one foreach iteration) read, computed and wrote."""

    rows_read: int = 0
    files_read: int = 0
    bytes_read: int = 0
    inputs: dict[str, InputRead] = field(default_factory=dict)
    icdc_tables: dict[str, Any] = field(default_factory=dict)  # input -> ICDC table name (or details)
    rows_out: int | None = None  # rows the SQL/Python returned
    rows_written: int | None = None
    rows_deleted: int | None = None
    files_written: int | None = None
    bytes_written: int | None = None
    files_removed: int | None = None
    committed_snapshot_id: int | None = None
    output: str | None = None
    mode: str | None = None
    merge: MergeMetrics | None = None
    partitions: int | None = None  # compact steps
    strategy: str | None = None  # a strategy step: the strategy it ran with
    reason: str | None = None  # why a step was skipped
    timings: StepTimings | None = None
    peak_rss_bytes: int | None = None  # the process's peak resident memory during the step
    read_by: str | None = None  # "workers": an engine's workers read inputs (TableScan); else the driver
    written_by: str | None = None  # "workers": an engine's workers wrote the output files (else the driver)
    skew: Skew | None = None
    error_class: str | None = None  # one of ERROR_CLASSES, for a failed step
    source_commit_at: float | None = None  # epoch s: the newest source commit the step's output includes

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "inputs":
                data["inputs"] = {alias: read.to_dict() for alias, read in value.items()}
            elif f.name == "icdc_tables":
                if value:
                    data["icdc_tables"] = value
            elif f.name in ("merge", "timings", "skew"):
                if value is not None:
                    data[f.name] = value.to_dict() if f.name != "merge" else asdict(value)
            elif value is not None or (f.name == "committed_snapshot_id" and self.output is not None):
                data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepMetrics:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["inputs"] = {a: InputRead.from_dict(r) for a, r in (data.get("inputs") or {}).items()}
        for name, kind in (("merge", MergeMetrics), ("timings", StepTimings), ("skew", Skew)):
            if data.get(name) is not None:
                values[name] = _lenient(kind, data[name])
        return cls(**values)


def _lenient(kind: Any, data: dict[str, Any]) -> Any:
    """`kind(**data)` with the keys `kind` does not know dropped (a newer calve wrote them)."""
    known = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class StepRunRecord:
    run_id: str
    step_id: str
    status: RunStatus
    iteration: int = -1  # -1: not a foreach iteration
    iteration_value: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    cpu_s: float | None = None
    metrics: StepMetrics = field(default_factory=StepMetrics)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["status"] = self.status.value
        data["metrics"] = self.metrics.to_dict()
        return data


@dataclass(frozen=True)
class RunLock:
    workflow: str
    run_id: str
    host: str
    pid: int
    acquired_at: float
    heartbeat_at: float

    def is_stale(self, now: float, stale_after_s: float, host: str) -> bool:
        if now - self.heartbeat_at > stale_after_s:
            return True
        return self.host == host and not pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
