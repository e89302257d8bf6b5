"""The state store: runs and their steps end together, dead runs are failed on sight, restarts once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calve.errors import CalveError, StateStoreError
from calve.state import RunRecord, RunStatus, StateStore, StepMetrics, StepRunRecord
from calve.state.schema import STATE_VERSION


def _run(store: StateStore, run_id: str, *, pid: int | None, host: str | None, **fields: object) -> RunRecord:
    record = RunRecord(
        run_id=run_id,
        workflow="wf",
        workflow_version="v",
        trigger="manual",
        logical_date="2026-03-01",
        params={},
        status=RunStatus.RUNNING,
        created_at=time.time(),
        host=host,
        pid=pid,
        **fields,  # type: ignore[arg-type]
    )
    assert store.create_run(record)
    store.record_step(StepRunRecord(run_id, "step", RunStatus.RUNNING, started_at=time.time()))
    return record


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_run_whose_process_is_gone_is_failed_on_sight_with_its_steps(tmp_path: Path) -> None:
    import socket

    store = StateStore(tmp_path / "state.db")
    _run(store, "dead", pid=_dead_pid(), host=socket.gethostname())
    _run(store, "alive", pid=None, host=socket.gethostname())  # unknown process: left alone
    assert store.reap_dead_runs() == ["dead"]
    dead = store.run("dead")
    assert dead is not None and dead.status is RunStatus.FAILED and "is gone" in (dead.error or "")
    (step,) = store.step_runs("dead")
    assert step.status is RunStatus.FAILED  # never a running step inside a failed run
    assert store.run("alive").status is RunStatus.RUNNING  # type: ignore[union-attr]


def test_cancel_ends_the_run_and_its_steps_and_refuses_a_live_process(tmp_path: Path) -> None:
    import socket

    store = StateStore(tmp_path / "state.db")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as live:
        try:
            _run(store, "busy", pid=live.pid, host=socket.gethostname())
            with pytest.raises(CalveError, match=f"still running as process {live.pid}"):
                store.cancel_run("busy")
        finally:
            live.kill()
    _run(store, "elsewhere", pid=1, host="another-host")
    cancelled = store.cancel_run("elsewhere")
    assert cancelled.status is RunStatus.CANCELLED
    assert [s.status for s in store.step_runs("elsewhere")] == [RunStatus.CANCELLED]
    with pytest.raises(CalveError, match="cancelled already"):
        store.cancel_run("elsewhere")


def test_step_metrics_round_trip_typed(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    _run(store, "r", pid=None, host=None)
    metrics = StepMetrics(rows_read=3, rows_written=2, output="db.t", mode="merge", committed_snapshot_id=7)
    store.record_step(StepRunRecord("r", "step", RunStatus.SUCCEEDED, metrics=metrics))
    (step,) = store.step_runs("r")
    assert step.metrics == metrics
    assert step.to_dict()["metrics"]["rows_written"] == 2


def test_a_store_newer_than_calve_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {STATE_VERSION + 1}")
    with pytest.raises(StateStoreError, match=r"newer than this calve understands.*Upgrade calve"):
        StateStore(path)


def test_lookback_states_are_replaced_per_table_and_column(tmp_path: Path) -> None:
    from calve.state.lookback import LookbackStates

    states = LookbackStates(StateStore(tmp_path / "state.db"))
    assert states.get("u", 2) is None
    states.put("u", 2, 2**62, '{"a":1}')  # snapshot ids use all 64 bits
    states.put("u", 3, 7, "{}")
    states.put("u", 2, -(2**62), '{"a":2}')
    assert states.get("u", 2) == (-(2**62), '{"a":2}')
    assert states.get("u", 3) == (7, "{}")
    assert states.clear() == 2 and states.get("u", 3) is None
