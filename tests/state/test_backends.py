"""The state store on both backends: the same records, locks and leases on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calve.errors import ConfigError, StateStoreError
from calve.state import (
    CheckpointRecord,
    RunLock,
    RunRecord,
    RunStatus,
    StateStore,
    StepMetrics,
    StepRunRecord,
)
from calve.state.backends import redact
from calve.state.backfills import BackfillLog, StepCommit
from calve.state.leases import LeaseBook
from calve.state.schema import STATE_VERSION
from calve.ui.queries import RunFilter, StateQueries


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a state store lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "state.db"
    return str(request.getfixturevalue("postgres_url"))


def _run(run_id: str, slot: str | None = None, **fields: object) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        workflow="wf",
        workflow_version="v",
        trigger="interval:1m" if slot else "manual",
        logical_date="2026-03-01",
        params={"n": 1},
        status=RunStatus.QUEUED,
        created_at=time.time(),
        trigger_slot=slot,
        host=socket.gethostname(),
        pid=None,
        **fields,  # type: ignore[arg-type]
    )


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_runs_steps_checkpoints_and_totals_read_back_alike(location: Path | str) -> None:
    store = StateStore(location)
    assert store.create_run(_run("r1", slot="2026-03-01T00:00:00Z"))
    assert not store.create_run(_run("r2", slot="2026-03-01T00:00:00Z"))  # the slot has its run
    assert store.last_slot("wf", "interval:1m")[0] == "2026-03-01T00:00:00Z"
    store.update_run("r1", status=RunStatus.SUCCEEDED, started_at=10.0, finished_at=12.5)
    metrics = StepMetrics.from_dict({"output": "db.out", "source_commit_at": 99.5, "rows_read": 3})
    store.record_step(StepRunRecord("r1", "s", RunStatus.SUCCEEDED, started_at=10.0, metrics=metrics))
    big = 2**62 + 7  # snapshot ids are 64-bit
    store.record_checkpoint(CheckpointRecord("c", "db.src", "uuid", big, "db.out", big - 1, 1.0))
    (run,) = store.runs("wf")
    assert (run.run_id, run.status, run.params) == ("r1", RunStatus.SUCCEEDED, {"n": 1})
    assert store.step_runs("r1")[0].metrics.rows_read == 3
    assert store.checkpoints("c")[0].snapshot_id == big
    (totals,) = store.run_totals()
    assert (totals.runs, totals.duration_s, totals.timed_runs) == (1, 2.5, 1)
    assert store.newest_source_commits() == {"db.out": 99.5}


def test_the_run_lock_is_taken_once_and_a_dead_holder_is_taken_over(location: Path | str) -> None:
    store = StateStore(location)
    assert store.create_run(_run("a"))
    assert store.acquire_lock("wf", "a", stale_after_s=600) is None
    holder = store.acquire_lock("wf", "b", stale_after_s=600)
    assert isinstance(holder, RunLock) and holder.run_id == "a"  # our own pid: alive
    store.release_lock("wf", "a")
    assert store.acquire_lock("wf", "b", stale_after_s=600) is None
    assert [lock.run_id for lock in store.locks()] == ["b"]


def test_step_commits_keep_their_order_of_insertion(location: Path | str) -> None:
    log = BackfillLog(StateStore(location))
    for snapshot in (3, 1, 2):  # one committed_at: the order of insertion breaks the tie
        log.record_commit(StepCommit("db.t", snapshot, "wf", "s", "v", None, None, None, False, 5.0))
    log.record_commit(StepCommit("db.t", 1, "wf", "s", "v2", None, None, None, True, 5.0))  # replaced
    commits = log.commits("wf", "s")
    assert [c.snapshot_id for c in commits] == [3, 1, 2]
    assert commits[1].workflow_version == "v2" and commits[1].complete


def test_a_store_migrates_once_and_refuses_a_newer_version(location: Path | str) -> None:
    store = StateStore(location)
    StateStore(location)  # opening again migrates nothing
    with store.transaction() as db:
        assert store.backend.schema_version(db) == STATE_VERSION
        store.backend.set_schema_version(db, STATE_VERSION + 1)
    with pytest.raises(StateStoreError, match="newer than this calve"):
        StateStore(location)


def test_a_lease_has_one_holder_until_released_expired_or_its_process_is_gone(location: Path | str) -> None:
    leases = LeaseBook(StateStore(location))
    assert leases.acquire("workflow:a", "one", ttl_s=60) is None
    assert leases.acquire("workflow:a", "one", ttl_s=60) is None  # its holder renews it
    holder = leases.acquire("workflow:a", "two", ttl_s=60)
    assert holder is not None and holder.owner == "one"
    leases.release("workflow:a", "one")
    assert leases.acquire("workflow:a", "two", ttl_s=0) is None  # expires at once
    assert leases.acquire("workflow:a", "one", ttl_s=60) is None  # taken over: two's lease expired
    leases.renew("one", ttl_s=60)
    assert [lease.owner for lease in leases.leases()] == ["one"]
    with leases.state.transaction() as db:  # a holder of this host whose process is gone
        db.execute("UPDATE scheduler_leases SET pid = ? WHERE owner = 'one'", (_dead_pid(),))
    assert leases.acquire("workflow:a", "two", ttl_s=60) is None


def test_the_web_ui_reads_either_store(location: Path | str) -> None:
    store = StateStore(location)
    store.create_run(_run("r1", slot="2026-03-01T00:00:00Z"))
    store.record_step(StepRunRecord("r1", "s", RunStatus.RUNNING, started_at=1.0))
    queries = StateQueries(location)
    rows, total = queries.runs_page(RunFilter(workflow="wf", trigger="interval"))
    assert total == 1 and rows[0]["run_id"] == "r1" and rows[0]["steps"] == 1
    assert queries.runs_page(RunFilter(trigger="cron"))[1] == 0
    run = queries.run("r1")
    assert run is not None and run["params"] == {"n": 1}
    assert queries.trigger_state("wf")["interval:1m"]["last_slot"] == "2026-03-01T00:00:00Z"


def test_a_password_never_appears_in_a_message() -> None:
    assert redact("postgresql://calve:s3cret@db:5432/calve") == "postgresql://calve:***@db:5432/calve"
    assert redact("postgresql://db/calve") == "postgresql://db/calve"
    with pytest.raises(ConfigError) as caught:  # nothing listens on port 1
        StateStore("postgresql://calve:s3cret@127.0.0.1:1/calve")
    assert "s3cret" not in str(caught.value) and "calve:***@127.0.0.1:1" in str(caught.value)


def test_calve_yaml_takes_a_postgresql_url_and_refuses_other_schemes(tmp_path: Path) -> None:
    from calve.errors import ProjectError
    from calve.project import Project

    root = tmp_path / "project"
    root.mkdir()
    (root / "calve.yaml").write_text("state: postgresql://calve@db:5432/calve\nwarehouse: shared/wh\n")
    settings = Project(root).settings
    assert settings.state == "postgresql://calve@db:5432/calve"
    assert settings.warehouse == (root / "shared" / "wh").resolve().as_uri()
    (root / "calve.yaml").write_text("state: mysql://calve@db/calve\n")
    with pytest.raises(ProjectError, match=r"calve.yaml:1: state: mysql:// is not a database calve can use"):
        Project(root)


@pytest.mark.postgresql
def test_the_projects_catalog_commits_tables_in_postgresql(postgres_url: str, tmp_path: Path) -> None:
    import psycopg
    import pyarrow as pa

    from calve.project import Project
    from tests.conftest import make_project

    project = make_project(tmp_path / "project", f"catalog: {postgres_url}\nwarehouse: shared/warehouse\n")
    catalog = project.catalog
    catalog.create_namespace("db")
    table = catalog.create_table("db.t", schema=pa.schema([("id", pa.int64())]))
    table.append(pa.table({"id": pa.array([1, 2, 3], pa.int64())}))
    again = Project(project.root).catalog  # opened afresh, as another process would
    assert sorted(again.load_table("db.t").scan().to_arrow()["id"].to_pylist()) == [1, 2, 3]
    with psycopg.connect(postgres_url) as db:  # the table's pointer is a row in PostgreSQL
        (location,) = db.execute("SELECT metadata_location FROM iceberg_tables").fetchone()  # type: ignore[misc]
    assert location == again.load_table("db.t").metadata_location
    assert location.startswith((project.root / "shared" / "warehouse").as_uri())


@pytest.mark.postgresql
def test_a_store_reconnects_after_the_server_dropped_its_connection(postgres_url: str) -> None:
    import contextlib

    import psycopg

    store = StateStore(postgres_url)
    assert store.create_run(_run("r1"))
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # as a server restart would
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with contextlib.suppress(psycopg.OperationalError):  # the call that finds it gone fails...
        store.runs()
    assert [run.run_id for run in store.runs()] == ["r1"]  # ...and the next one opens a new connection
