"""Several `calve scheduler` processes on one state store and catalog, on SQLite and on PostgreSQL.

Real processes, real tables: three schedulers tick every 0.2s while the test appends to a source;
then the state store and the tables must show that no slot had two runs, no run was started twice
or overlapped another of its workflow, and every output equals a from-scratch recomputation (no
change lost, none processed twice). A scheduler killed (SIGKILL) in the middle of a run leaves its
lease and run lock behind: another takes both over and restarts the run, once.

No assertion is about time: the test waits (with a generous deadline) for conditions, never for a
duration.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField

from calve.project import Project
from calve.state import RunStatus
from tests.conftest import make_project

pytestmark = pytest.mark.slow

SOURCE = Schema(
    NestedField(1, "id", LongType(), required=False), NestedField(2, "v", LongType(), required=False)
)
DEADLINE_S = 180.0  # how long a condition may take to come true before the test gives up (never reached)


def _copy_workflow(workflow_id: str, trigger: str, target: str, body: str | None = None) -> str:
    step = body or "sql: SELECT id, v FROM events"
    return f"""
        id: {workflow_id}
        triggers:
          - {trigger}
        steps:
          - id: copy
            inputs:
              events: {{table: src.events, read: inserted}}
            {step}
            output: {{table: {target}, mode: append}}
    """


SLOW_STEP = '''"""Says it started (with its process id), then waits while the block file exists."""

import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def slow_copy(ctx):
    (HERE / "started").write_text(str(os.getpid()))
    while (HERE / "block").exists():
        time.sleep(0.05)
    return ctx.inputs["events"].select(["id", "v"])
'''


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _settings(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return "lock_stale_after: 2m\n"  # the embedded catalog and state store in .calve/
    url = request.getfixturevalue("postgres_url")  # one database holds both, in tables of their own
    return f"state: {url}\ncatalog: {url}\nlock_stale_after: 2m\n"


def _project(tmp_path: Path, settings: str, **workflows: str) -> Project:
    project = make_project(tmp_path / "project", settings, **workflows)
    project.catalog.create_namespace("src")
    project.catalog.create_namespace("dst")
    project.catalog.create_table("src.events", schema=SOURCE)
    return project


class Schedulers:
    """`calve scheduler` processes of one project, their output in log files."""

    def __init__(self, project: Project, folder: Path) -> None:
        self.project = project
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k not in ("CALVE_HOME", "CALVE_PROJECT")}
        log = (self.folder / f"scheduler-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "calve",
                "--project",
                str(self.project.root),
                "scheduler",
                "--tick",
                "0.2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.processes.append(process)
        self._logs.append(log)
        index = len(self.processes) - 1
        wait_for(lambda: "scheduler started" in self.log(index), f"scheduler {index} to start", process)
        return process

    def alive(self) -> bool:
        """True while every scheduler not killed on purpose runs; raises (with the logs) if one died."""
        for index, process in enumerate(self.processes):
            if process.poll() is not None and process.returncode != -signal.SIGKILL:
                raise AssertionError(f"scheduler {index} exited ({process.returncode}):\n{self.logs()}")
        return True

    def log(self, index: int) -> str:
        return (self.folder / f"scheduler-{index}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- scheduler {i}\n{self.log(i)[-4000:]}" for i in range(len(self.processes)))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[Callable[[Project], Schedulers]]:
    started: list[Schedulers] = []

    def make(project: Project) -> Schedulers:
        group = Schedulers(project, tmp_path)
        started.append(group)
        return group

    yield make
    for group in started:
        group.stop()


def wait_for(
    condition: Callable[[], bool], what: str, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited ({process.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def _append(project: Project, first_id: int, count: int) -> None:
    rows = [{"id": i, "v": i * 10} for i in range(first_id, first_id + count)]
    project.catalog.load_table("src.events").append(pa.Table.from_pylist(rows, schema=SOURCE.as_arrow()))


def _ids(project: Project, table: str) -> list[int]:
    """The ids of a table's rows, sorted, duplicates kept ([] while it does not exist)."""
    if not project.catalog.table_exists(table):
        return []
    rows = project.catalog.load_table(table).scan(selected_fields=("id", "v")).to_arrow().to_pylist()
    assert all(row["v"] == row["id"] * 10 for row in rows)
    return sorted(int(row["id"]) for row in rows)


def _query(project: Project, sql: str) -> list[tuple[object, ...]]:
    with project.state.transaction() as db:
        return [tuple(row) for row in db.execute(sql).fetchall()]


def _assert_runs_were_exclusive(project: Project) -> None:
    """No slot had two runs, no run was restarted twice, and a workflow's runs never overlapped."""
    assert (
        _query(
            project,
            "SELECT workflow, trigger_slot FROM runs WHERE trigger_slot IS NOT NULL "
            "GROUP BY workflow, trigger, trigger_slot HAVING count(*) > 1",
        )
        == []
    )
    assert (
        _query(
            project,
            "SELECT restart_of FROM runs WHERE restart_of IS NOT NULL "
            "GROUP BY restart_of HAVING count(*) > 1",
        )
        == []
    )
    for workflow in project.workflows():
        runs = sorted(
            (r for r in project.state.runs(workflow, limit=10_000) if r.started_at is not None),
            key=lambda r: r.started_at or 0.0,
        )
        for before, after in itertools.pairwise(runs):
            assert before.finished_at is not None and after.started_at is not None
            assert before.finished_at <= after.started_at, (
                f"runs {before.run_id} and {after.run_id} overlapped"
            )


def test_three_schedulers_run_every_slot_and_change_exactly_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, schedulers: Callable[[Project], Schedulers]
) -> None:
    project = _project(
        tmp_path,
        _settings(backend, request),
        inc=_copy_workflow("inc", "incremental: {sources: [src.events]}", "dst.inc"),
        every=_copy_workflow("every", "interval: 1s", "dst.every"),
    )
    group = schedulers(project)
    for _ in range(3):
        group.start()
    batches, size = 12, 25
    for batch in range(batches):
        _append(project, batch * size, size)
        time.sleep(0.3)  # let ticks pass between appends (pacing only: nothing asserts on time)
    expected = list(range(batches * size))
    for table in ("dst.inc", "dst.every"):
        wait_for(
            lambda t=table: group.alive() and len(_ids(project, t)) >= len(expected),  # type: ignore[misc]
            f"{table} to catch up",
        )
    group.stop()

    assert _ids(project, "dst.inc") == expected, group.logs()  # every change once: none lost, none twice
    assert _ids(project, "dst.every") == expected, group.logs()
    _assert_runs_were_exclusive(project)
    runs = project.state.runs(limit=10_000)
    failed = [
        (r.run_id, r.error)
        for r in runs
        if r.status is not RunStatus.SUCCEEDED and r.status is not RunStatus.SKIPPED
    ]
    assert failed == [], group.logs()
    slots = [
        r.trigger_slot for r in sorted(project.state.runs("every", limit=10_000), key=lambda r: r.created_at)
    ]
    assert slots == sorted(slots) and len(slots) >= 2  # slots fired in order, each once
    assert project.state.last_slot("every", "interval:1s")[0] == slots[-1]
    assert project.state.runs("inc", limit=10_000, status=RunStatus.SUCCEEDED)
    assert LeaseCount(project).held() == 0  # stopped schedulers released their leases


class LeaseCount:
    def __init__(self, project: Project) -> None:
        from calve.state.leases import LeaseBook

        self.book = LeaseBook(project.state)

    def held(self) -> int:
        return len(self.book.leases())


def test_a_killed_scheduler_is_taken_over_and_its_run_restarted_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, schedulers: Callable[[Project], Schedulers]
) -> None:
    project = _project(
        tmp_path,
        _settings(backend, request),
        slow=_copy_workflow(
            "slow", "incremental: {sources: [src.events]}", "dst.slow", body="python: steps:slow_copy"
        ),
    )
    (project.root / "steps.py").write_text(SLOW_STEP)
    block, started = project.root / "block", project.root / "started"
    block.write_text("")
    _append(project, 0, 30)
    group = schedulers(project)
    first = group.start()
    wait_for(started.exists, "the run to start", first)
    assert started.read_text() == str(first.pid)
    (killed,) = project.state.runs("slow", status=RunStatus.RUNNING)
    first.send_signal(signal.SIGKILL)  # mid-run: its lease and its run lock stay behind
    first.wait()
    assert [lease.pid for lease in LeaseCount(project).book.leases()] == [first.pid]
    block.unlink()
    group.start()
    group.start()
    wait_for(lambda: group.alive() and len(_ids(project, "dst.slow")) >= 30, "the run's restart to commit")
    _append(project, 30, 20)  # and the schedulers go on as usual
    wait_for(lambda: group.alive() and len(_ids(project, "dst.slow")) >= 50, "the next run to commit")
    group.stop()

    assert _ids(project, "dst.slow") == list(range(50)), group.logs()
    dead = project.state.run(killed.run_id)
    assert dead is not None and dead.status is RunStatus.FAILED and "interrupted" in (dead.error or "")
    restart = project.state.restarted_by(killed.run_id)
    assert restart is not None and restart.status is RunStatus.SUCCEEDED, group.logs()
    assert restart.pid != first.pid
    _assert_runs_were_exclusive(project)
    statuses = sorted(r.status.value for r in project.state.runs("slow", limit=100))
    assert statuses.count("failed") == 1, (statuses, group.logs())  # only the killed run
