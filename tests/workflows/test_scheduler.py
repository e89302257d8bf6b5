"""Triggers and the scheduler on a fake clock: each slot fires once, restarts neither skip nor double,
incremental triggers fire only on changes, and interrupted runs are finished by the next tick."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from calve.project import Project, init_project
from calve.state import RunStatus
from calve.workflows.runner import Runner
from calve.workflows.scheduler import Scheduler
from calve.workflows.triggers import CronExpression
from tests.shop import Shop, create_shop

UTC = dt.UTC
START = dt.datetime(2026, 3, 2, 9, 0, 5, tzinfo=UTC)

MICRO_BATCH = """
    id: micro
    triggers:
      - interval: 15m
    steps:
      - id: count
        inputs:
          events: {table: shop.events, read: icdc}
        sql: SELECT day, count(*) AS n FROM events GROUP BY day
        output: {table: shop.batch_counts, mode: append}
"""
ON_CHANGE = """
    id: on_change
    triggers:
      - incremental: {sources: [shop.events], min_interval: 5m}
    steps:
      - id: count
        inputs:
          events: {table: shop.events, read: icdc}
        sql: SELECT day, count(*) AS n FROM events GROUP BY day
        output: {table: shop.change_counts, mode: append}
"""


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def setup(tmp_path: Path, text: str) -> tuple[Project, Clock]:
    root = tmp_path / "project"
    init_project(root, example=False)
    (root / "workflows" / "w.yaml").write_text(textwrap.dedent(text))
    return Project(root), Clock(START)


def scheduler(project: Project, clock: Clock) -> Scheduler:
    """A fresh scheduler, as after a restart: all it knows is in the state store."""
    return Scheduler(project, Runner.for_project(project), clock=clock)


def test_interval_fires_once_per_slot_and_survives_restart(tmp_path: Path) -> None:
    project, clock = setup(tmp_path, MICRO_BATCH)
    events, _ = create_shop(project.catalog)
    shop = Shop()
    events.append(shop.round()[0])

    (first,) = scheduler(project, clock).tick()
    assert first.slot == "2026-03-02T09:00:00Z" and first.result is not None
    assert first.result.status is RunStatus.SUCCEEDED
    assert first.result.run.logical_date == "2026-03-02"
    clock.advance(minutes=5)
    assert scheduler(project, clock).tick() == []  # same slot, restarted scheduler: not again

    clock.advance(minutes=11)  # the 09:15 slot, nothing new: recorded as skipped
    (idle,) = scheduler(project, clock).tick()
    assert idle.slot == "2026-03-02T09:15:00Z" and idle.result is not None
    assert idle.result.status is RunStatus.SKIPPED

    events.append(shop.round()[0])
    clock.advance(minutes=45)  # down for two slots: one run catches up, and says so
    (caught_up,) = scheduler(project, clock).tick()
    assert caught_up.slot == "2026-03-02T10:00:00Z" and "caught up 2 missed slot(s)" in caught_up.note
    assert caught_up.result is not None and caught_up.result.status is RunStatus.SUCCEEDED
    counts = project.catalog.load_table("shop.batch_counts").scan().to_arrow()
    assert sum(counts.column("n").to_pylist()) == events.scan().to_arrow().num_rows  # each event once
    slots = [r.trigger_slot for r in project.state.runs("micro")]
    assert sorted(slots) == ["2026-03-02T09:00:00Z", "2026-03-02T09:15:00Z", "2026-03-02T10:00:00Z"]


def test_incremental_trigger_fires_on_changes_only_and_batches_bursts(tmp_path: Path) -> None:
    project, clock = setup(tmp_path, ON_CHANGE)
    events, _ = create_shop(project.catalog)
    shop = Shop()
    assert scheduler(project, clock).tick() == []  # empty source: nothing to do
    events.append(shop.round()[0])
    (fired,) = scheduler(project, clock).tick()
    assert fired.result is not None and fired.result.status is RunStatus.SUCCEEDED
    assert scheduler(project, clock).tick() == []  # nothing new
    events.append(shop.round()[0])
    clock.advance(minutes=1)
    assert scheduler(project, clock).tick() == []  # new data, but within min_interval of the last run
    events.append(shop.round()[0])
    clock.advance(minutes=5)
    (burst,) = scheduler(project, clock).tick()  # both appends in one run
    assert burst.result is not None
    assert burst.result.steps[0].metrics.inputs["events"].snapshots == 2


def test_a_run_left_unfinished_by_a_killed_scheduler_is_finished_by_the_next_tick(tmp_path: Path) -> None:
    project, clock = setup(tmp_path, MICRO_BATCH)
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    runner = Runner.for_project(project)
    # what a scheduler killed mid-run leaves: the slot's run, running, its lock held by a dead process
    from calve.state import RunRecord

    project.state.create_run(
        RunRecord(
            run_id="dead-run",
            workflow="micro",
            workflow_version="x",
            trigger="interval:900s",
            logical_date="2026-03-02",
            params={},
            status=RunStatus.RUNNING,
            created_at=START.timestamp(),
            trigger_slot="2026-03-02T09:00:00Z",
            pins=dict(runner.pending(project.workflow("micro")).pins),
        )
    )
    firings = scheduler(project, clock).tick()
    assert [f.note for f in firings] == ["recovered"]  # the slot's run is finished, no new slot run
    assert project.state.run("dead-run").status is RunStatus.FAILED  # type: ignore[union-attr]
    (recovery,) = [r for r in project.state.runs("micro") if r.restart_of == "dead-run"]
    assert recovery.status is RunStatus.SUCCEEDED
    counts = project.catalog.load_table("shop.batch_counts").scan().to_arrow()
    assert sum(counts.column("n").to_pylist()) == events.scan().to_arrow().num_rows


@pytest.mark.parametrize(
    ("expression", "moment", "matches"),
    [
        ("*/15 * * * *", "2026-03-02T09:45", True),
        ("*/15 * * * *", "2026-03-02T09:46", False),
        ("0 3 * * *", "2026-03-02T03:00", True),
        ("0 3 * * mon-fri", "2026-03-07T03:00", False),  # a Saturday
        ("0 3 * * 7", "2026-03-08T03:00", True),  # 7 is Sunday too
        ("0 0 1,15 * *", "2026-03-15T00:00", True),
        ("@daily", "2026-03-15T00:00", True),
    ],
)
def test_cron_expressions(expression: str, moment: str, matches: bool) -> None:
    at = dt.datetime.fromisoformat(moment).replace(tzinfo=UTC)
    assert CronExpression.parse(expression).matches(at) is matches


def test_cron_latest_slot_and_errors() -> None:
    cron = CronExpression.parse("30 2 * * *")
    latest = cron.latest_at_or_before(dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    assert latest == dt.datetime(2026, 3, 1, 2, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="needs 5 fields"):
        CronExpression.parse("* * *")
    with pytest.raises(ValueError, match="out of range"):
        CronExpression.parse("0 25 * * *")


CHAIN = {
    "z_upstream": """
        id: z_upstream
        triggers:
          - incremental: {sources: [shop.events]}
        steps:
          - id: copy
            inputs:
              events: {table: shop.events, read: icdc}
            sql: SELECT event_id, account_id, amount FROM events
            output: {table: shop.copied, mode: merge, keys: [event_id]}
    """,
    "a_downstream": """
        id: a_downstream
        triggers:
          - incremental: {sources: [shop.copied]}
        steps:
          - id: totals
            inputs:
              changed: {table: shop.copied, read: keys, keys: [account_id]}
              copied: {table: shop.copied, match: changed}
            sql: SELECT account_id, sum(amount) AS amount FROM copied GROUP BY account_id
            output: {table: shop.account_amounts, mode: merge, keys: [account_id]}
    """,
}


def test_one_tick_runs_a_chain_of_incremental_workflows_to_its_end(tmp_path: Path) -> None:
    root = tmp_path / "project"
    init_project(root, example=False)
    for name, text in CHAIN.items():  # the upstream's id sorts after the downstream's
        (root / "workflows" / f"{name}.yaml").write_text(textwrap.dedent(text))
    project, clock = Project(root), Clock(START)
    events, _ = create_shop(project.catalog)
    (waiting,) = scheduler(project, clock).tick()  # no events yet: the upstream has not created its output
    assert waiting.workflow == "a_downstream" and waiting.result is None
    assert (
        waiting.note
        == "waiting: shop.copied does not exist yet; workflow 'z_upstream' creates it with its first commit"
    )
    shop = Shop()
    events.append(shop.round()[0])
    first = scheduler(project, clock).tick()
    assert [(f.workflow, f.result.status if f.result else None) for f in first] == [
        ("z_upstream", RunStatus.SUCCEEDED),
        ("a_downstream", RunStatus.SUCCEEDED),
    ]
    events.append(shop.round()[0])  # late and re-sent events too
    clock.advance(minutes=1)
    second = scheduler(project, clock).tick()
    assert [f.workflow for f in second] == ["z_upstream", "a_downstream"]
    totals = project.catalog.load_table("shop.account_amounts").scan().to_arrow()
    copied = project.catalog.load_table("shop.copied").scan().to_arrow()
    assert sum(totals.column("amount").to_pylist()) == sum(copied.column("amount").to_pylist())


def test_the_scheduler_maintains_outputs_by_the_policy_and_capture_ignores_it(tmp_path: Path) -> None:
    root = tmp_path / "project"
    init_project(root, example=False)
    (root / "calve.yaml").write_text("maintenance:\n  every: 1h\n  min_files: 2\n  expire: false\n")
    (root / "workflows" / "w.yaml").write_text(textwrap.dedent(ON_CHANGE))
    project, clock = Project(root), Clock(START)
    events, _ = create_shop(project.catalog)
    shop = Shop()
    events.append(shop.round()[0])
    first = scheduler(project, clock).tick()  # the run, then its output's first maintenance
    assert [f.trigger for f in first] == ["incremental:any:shop.events", "maintenance"]
    for _ in range(3):  # three more small appended files in the output
        events.append(shop.round()[0])
        clock.advance(minutes=6)
        assert [f.trigger for f in scheduler(project, clock).tick()] == ["incremental:any:shop.events"]
    clock.advance(hours=1)
    (maintained,) = [f for f in scheduler(project, clock).tick() if f.trigger == "maintenance"]
    assert maintained.workflow == "shop.change_counts" and "compacted" in maintained.note
    counts = project.catalog.load_table("shop.change_counts")
    assert counts.current_snapshot().summary.operation.value == "replace"  # type: ignore[union-attr]
    assert sum(counts.scan().to_arrow().column("n").to_pylist()) == events.scan().to_arrow().num_rows


FLAKY = """
    id: flaky
    triggers:
      - incremental: {sources: [shop.events]}
    steps:
      - id: copy
        inputs:
          events: {table: shop.events, read: icdc}
        python: flaky_step:copy
        output: {table: shop.flaky_copy, mode: append}
"""

FLAKY_STEP = """
from pathlib import Path


def copy(ctx):
    if Path(__file__).with_name("FAIL").exists():
        raise OSError("the disk went away")  # an I/O error: transient
    return ctx.inputs["events"].select(["event_id", "amount"])
"""


def test_a_transient_failure_is_retried_by_the_scheduler_with_its_attempt_recorded(tmp_path: Path) -> None:
    project, clock = setup(tmp_path, FLAKY)
    (project.root / "flaky_step.py").write_text(FLAKY_STEP)
    (project.root / "FAIL").touch()
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    runner = Runner.for_project(project)
    (failed,) = Scheduler(project, runner, clock=clock, retry_backoff_s=3600).tick()
    assert failed.result is not None and failed.result.status is RunStatus.FAILED
    assert failed.result.run.transient and "OSError: the disk went away" in (failed.result.run.error or "")
    clock.advance(minutes=1)
    (held,) = Scheduler(project, runner, clock=clock, retry_backoff_s=3600).tick()  # backing off
    assert held.result is None and held.note.startswith("waiting to retry run")
    (project.root / "FAIL").unlink()
    (retried,) = Scheduler(project, runner, clock=clock, retry_backoff_s=0).tick()
    assert retried.result is not None and retried.result.status is RunStatus.SUCCEEDED
    run = retried.result.run
    assert (run.trigger, run.attempt, run.restart_of) == (
        f"retry 1 of {failed.result.run.run_id}",
        2,
        failed.result.run.run_id,
    )
    copied = project.catalog.load_table("shop.flaky_copy").scan().to_arrow()
    assert copied.num_rows == events.scan().to_arrow().num_rows  # the micro-batch, once


def test_after_a_terminal_failure_the_triggers_wait_for_a_fix(tmp_path: Path) -> None:
    broken = ON_CHANGE.replace("count(*) AS n", "count(*) AS n, no_such_column")
    project, clock = setup(tmp_path, broken)
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    (failed,) = scheduler(project, clock).tick()
    assert failed.result is not None and not failed.result.run.transient
    clock.advance(minutes=10)
    (held,) = scheduler(project, clock).tick()  # not run again every tick with the same SQL
    assert held.result is None and held.note.startswith("waiting for a fix")
    (project.root / "workflows" / "w.yaml").write_text(textwrap.dedent(ON_CHANGE))  # the fix
    clock.advance(minutes=10)
    (fixed,) = scheduler(project, clock).tick()
    assert fixed.result is not None and fixed.result.status is RunStatus.SUCCEEDED


def test_a_workflow_or_maintenance_leased_by_another_scheduler_is_left_to_it(tmp_path: Path) -> None:
    """Several schedulers on one store: whoever holds a workflow's lease decides for it (and the
    `maintenance` lease for maintenance); the others skip it until the lease is released or stale."""
    from calve.state.leases import LeaseBook

    root = tmp_path / "project"
    init_project(root, example=False)
    (root / "calve.yaml").write_text("maintenance:\n  every: 1h\n")
    (root / "workflows" / "w.yaml").write_text(textwrap.dedent(ON_CHANGE))
    project, clock = Project(root), Clock(START)
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    leases = LeaseBook(project.state)
    assert leases.acquire("workflow:on_change", "other-scheduler", ttl_s=600) is None
    assert leases.acquire("maintenance", "other-scheduler", ttl_s=600) is None
    assert scheduler(project, clock).tick() == []  # both are the other scheduler's to do
    assert project.state.runs("on_change") == []
    leases.release("workflow:on_change", "other-scheduler")
    assert [f.trigger for f in scheduler(project, clock).tick()] == ["incremental:any:shop.events"]
    leases.release("maintenance", "other-scheduler")
    assert [f.trigger for f in scheduler(project, clock).tick()] == ["maintenance"]
    assert leases.leases() == []  # a tick releases what it took
