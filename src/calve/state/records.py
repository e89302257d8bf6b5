"""The records the state store keeps: runs, their steps, run locks and mirrored checkpoints."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class CheckpointRecord:
    consumer: str
    source_table: str
    source_uuid: str
    snapshot_id: int | None
    target_table: str
    target_snapshot_id: int | None
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


@dataclass
class RunRecord:
    run_id: str
    workflow: str
    workflow_version: str
    trigger: str
    logical_date: str
    params: dict[str, Any]
    status: RunStatus
    created_at: float
    trigger_slot: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    pins: dict[str, Any] = field(default_factory=dict)
    restart_of: str | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["status"] = self.status.value
        return data


@dataclass
class StepRunRecord:
    run_id: str
    step_id: str
    status: RunStatus
    iteration: int = -1  # -1: not a foreach iteration
    iteration_value: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    cpu_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["status"] = self.status.value
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
        return self.host == host and not _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
