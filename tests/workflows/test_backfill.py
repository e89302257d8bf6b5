"""Managed backfill on a real three-stage pipeline: clean (merge) -> daily (range overwrite) -> monthly.

Late and re-sent events flow for several rounds; then the tests backfill stage 1 and check every
stage against a from-scratch DuckDB recomputation, the files of days outside the range, what
downstream processes, kills during and between chunks, and micro-batches committed between chunks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyiceberg.table import Table

from calve.project import Project
from calve.state.backfills import BackfillLog, BackfillStatus, ChunkRecord
from calve.workflows.backfill import Backfiller, BackfillError, plan_backfill
from calve.workflows.runner import Runner
from calve.workflows.versions import VERSION_PROPERTY
from tests.conftest import ProjectFactory
from tests.shop import FIRST_DAY, Shop, create_shop, recompute, rows

CLEAN_SQL = """
    SELECT event_id, account_id, day, lower(trim(item)) AS item, amount {change}AS amount
    FROM events
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY sent_at DESC) = 1
"""

CLEAN = """
    id: clean
    params:
      bonus: {{type: int, default: 0}}
    triggers:
      - incremental: {{sources: [shop.events]}}
    steps:
      - id: clean
        inputs:
          events: {{table: shop.events, read: icdc}}
        sql: |
          SELECT event_id, account_id, day, lower(trim(item)) AS item, amount{change} + $bonus AS amount
          FROM events
          QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY sent_at DESC) = 1
        checks:
          - name: no_negative_amounts
            sql: SELECT * FROM output WHERE amount < 0
          - name: one_row_per_event
            equal: ["SELECT count(DISTINCT event_id) FROM events", "SELECT count(*) FROM output"]
        output: {{table: shop.clean, mode: merge, keys: [event_id], partition_by: [day]}}
"""

DAILY = """
    id: daily
    triggers:
      - incremental: {sources: [shop.clean]}
    steps:
      - id: daily
        inputs:
          changed: {table: shop.clean, read: ranges, ranges: [day]}
          clean:
            table: shop.clean
            filter: {day: {between: [$range_day_min, $range_day_max]}}
        sql: |
          SELECT day, count(*) AS orders, sum(amount) AS gross FROM clean
          WHERE day BETWEEN $range_day_min AND $range_day_max GROUP BY day
        output:
          table: shop.daily
          mode: overwrite
          filter: {day: {between: [$range_day_min, $range_day_max]}}
          partition_by: [day]
"""

MONTHLY = """
    id: monthly
    triggers:
      - incremental: {sources: [shop.daily]}
    steps:
      - id: monthly
        inputs:
          changed: {table: shop.daily, read: ranges, ranges: {day: month}}
          daily:
            table: shop.daily
            filter: {day: {between: [$range_day_min, $range_day_max]}}
        sql: |
          SELECT CAST(date_trunc('month', day) AS DATE) AS month, sum(orders) AS orders, sum(gross) AS gross
          FROM daily GROUP BY 1
        output:
          table: shop.monthly
          mode: overwrite
          filter: {month: {between: [$range_day_min, $range_day_max]}}
          partition_by: [month]
"""

PIPELINE = ("clean", "daily", "monthly")
REPORT = """
id: report
steps:
  - id: report
    inputs:
      clean: {table: shop.clean}
    sql: SELECT count(*) AS n FROM clean
    output: {table: shop.report, mode: overwrite}
"""
ROOT = Path(__file__).resolve().parents[2]


def make_pipeline(project_with: ProjectFactory, change: str = "") -> Project:
    return project_with(clean=CLEAN.format(change=change), daily=DAILY, monthly=MONTHLY)


def change_logic(project: Project, change: str) -> Project:
    """The project with stage 1's SQL changed (a business-logic change), as loaded anew."""
    (project.root / "workflows" / "clean.yaml").write_text(textwrap.dedent(CLEAN.format(change=change)))
    return Project(project.root)


def run_all(project: Project) -> None:
    runner = Runner.for_project(project)
    for workflow in PIPELINE:
        result = runner.run(project.workflow(workflow))
        assert result is not None and result.status.value in ("succeeded", "skipped"), result.run.error


def feed(project: Project, shop: Shop, rounds: int) -> None:
    events = project.catalog.load_table("shop.events")
    for _ in range(rounds):
        events.append(shop.round()[0])
        run_all(project)


def expected(project: Project, change_in: tuple[dt.date, dt.date] | None = None, plus: int = 0) -> dict:
    """Every stage recomputed from scratch: stage 1's new logic (amount + plus) on days in `change_in`."""
    events = project.catalog.load_table("shop.events").scan().to_arrow()
    clean = recompute(CLEAN_SQL.format(change=""), events=events)
    if change_in is not None:
        low, high = change_in
        clean = recompute(
            f"SELECT event_id, account_id, day, item, CASE WHEN day BETWEEN DATE '{low}' AND DATE '{high}' "
            f"THEN amount + {plus} ELSE amount END AS amount FROM clean",
            clean=clean,
        )
    daily = recompute(
        "SELECT day, count(*) AS orders, sum(amount) AS gross FROM clean GROUP BY day", clean=clean
    )
    monthly = recompute(
        "SELECT CAST(date_trunc('month', day) AS DATE) AS month, sum(orders) AS orders, sum(gross) AS gross "
        "FROM daily GROUP BY 1",
        daily=daily,
    )
    return {"clean": clean, "daily": daily, "monthly": monthly}


def assert_tables_equal(project: Project, want: dict) -> None:
    order = {"clean": ["event_id"], "daily": ["day"], "monthly": ["month"]}
    for name, table in want.items():
        got = project.catalog.load_table(f"shop.{name}").scan().to_arrow()
        assert rows(got.select(table.column_names).cast(table.schema), order[name]) == rows(
            table, order[name]
        ), name


def files_by_day(table: Table) -> dict[dt.date, set[str]]:
    found: dict[dt.date, set[str]] = {}
    for task in table.scan().plan_files():
        found.setdefault(task.file.partition[0], set()).add(task.file.file_path)
    epoch = dt.date(1970, 1, 1)
    return {
        d if isinstance(d, dt.date) else epoch + dt.timedelta(days=d): paths for d, paths in found.items()
    }


def backfiller(project: Project) -> Backfiller:
    return Backfiller(Runner.for_project(project), project.workflows())


RANGE = (FIRST_DAY + dt.timedelta(days=1), FIRST_DAY + dt.timedelta(days=3))


@pytest.mark.slow
def test_business_logic_change_backfilled_and_propagated_downstream(project_with: ProjectFactory) -> None:
    project = make_pipeline(project_with)
    create_shop(project.catalog)
    shop = Shop(seed=3, events_per_day=60)
    feed(project, shop, 6)
    assert_tables_equal(project, expected(project))
    old_version = project.workflow("clean").version

    project = change_logic(project, " + 7")  # stage 1's logic changes
    assert project.workflow("clean").version != old_version
    clean_files = files_by_day(project.catalog.load_table("shop.clean"))
    daily_files = files_by_day(project.catalog.load_table("shop.daily"))

    bf = backfiller(project)
    plan = plan_backfill(bf.runner, bf.workflows, "clean", str(RANGE[0]), str(RANGE[1]))
    assert [c.label for c in plan.chunks] == [str(RANGE[0] + dt.timedelta(days=i)) for i in range(3)]
    assert [d.workflow for d in plan.downstream] == ["daily", "monthly"]
    assert plan.stages[0].target.rows == sum(
        1
        for r in project.catalog.load_table("shop.clean").scan().to_arrow().to_pylist()
        if RANGE[0] <= r["day"] <= RANGE[1]
    )
    record = bf.start(plan, propagate=True)
    result = bf.run(record.backfill_id)
    assert result.record.status is BackfillStatus.SUCCEEDED, result.record.error
    assert [c.status for c in result.chunks] == [BackfillStatus.SUCCEEDED] * 3
    assert all(c.metrics["downstream_runs"] for c in result.chunks)

    assert_tables_equal(project, expected(project, RANGE, plus=7))
    # days outside the range: not one file rewritten, in stage 1 or stage 2
    for table, before in (("shop.clean", clean_files), ("shop.daily", daily_files)):
        after = files_by_day(project.catalog.load_table(table))
        for day, paths in before.items():
            if not RANGE[0] <= day <= RANGE[1]:
                assert after[day] == paths, (table, day)
            else:
                assert after[day] != paths, (table, day)
    # each backfill commit is marked with its id, chunk, step and the new version
    clean = project.catalog.load_table("shop.clean")
    marked = [
        s.summary.additional_properties
        for s in clean.metadata.snapshots
        if s.summary and s.summary.additional_properties.get("calve.backfill.id") == record.backfill_id
    ]
    # (an overwrite is one atomic commit of two snapshots, its delete and its append: both marked)
    assert sorted({p["calve.backfill.chunk"] for p in marked}) == ["0", "1", "2"]
    assert {p[VERSION_PROPERTY] for p in marked} == {project.workflow("clean").version}

    # the web UI's page of the backfill shows each chunk's step outcome and links its downstream runs
    from starlette.testclient import TestClient

    from calve.ui.app import create_app

    page = TestClient(create_app(project), base_url="http://127.0.0.1").get(
        f"/backfills/{record.backfill_id}"
    )
    first_run = result.chunks[0].metrics["downstream_runs"][0]["run_id"]
    assert "clean: committed" in page.text and f'href="/runs/{first_run}"' in page.text

    # the stale-range report: before the backfill, all of clean was built by the old version; now
    # only the days outside the range are
    from calve.workflows.versions import RangeKind, stale_ranges

    log = BackfillLog(project.state)
    stale = stale_ranges(log.commits("clean", "clean"), project.workflow("clean").version, RangeKind.DATE)
    assert stale and all(not (RANGE[0] <= s.low and s.high <= RANGE[1]) for s in stale)
    assert all(s.high < RANGE[0] or s.low > RANGE[1] for s in stale)
    assert stale[0].low == FIRST_DAY

    # the next incremental run processes what came after, with the new logic, and nothing twice
    feed(project, shop, 2)
    got = project.catalog.load_table("shop.clean").scan().to_arrow()
    assert got.num_rows == len(set(got.column("event_id").to_pylist()))


@pytest.mark.slow
def test_an_unchanged_chunk_commits_nothing_and_downstream_processes_nothing(
    project_with: ProjectFactory,
) -> None:
    project = make_pipeline(project_with)
    create_shop(project.catalog)
    feed(project, Shop(seed=5, events_per_day=40), 4)
    snapshots = {
        name: len(project.catalog.load_table(f"shop.{name}").metadata.snapshots) for name in PIPELINE
    }

    bf = backfiller(project)
    plan = plan_backfill(
        bf.runner, bf.workflows, "clean", str(FIRST_DAY), str(FIRST_DAY + dt.timedelta(days=3))
    )
    result = bf.run(bf.start(plan, propagate=True).backfill_id)
    assert result.record.status is BackfillStatus.SUCCEEDED
    assert [c.status for c in result.chunks] == [BackfillStatus.UNCHANGED] * 4
    # no commit anywhere: the downstream runs found nothing pending
    assert snapshots == {n: len(project.catalog.load_table(f"shop.{n}").metadata.snapshots) for n in PIPELINE}
    runs = [r for c in result.chunks for r in c.metrics["downstream_runs"]]
    assert runs and {r["status"] for r in runs} == {"skipped"}


@pytest.mark.slow
def test_micro_batches_between_chunks_are_neither_lost_nor_duplicated(project_with: ProjectFactory) -> None:
    project = make_pipeline(project_with, change=" + 7")
    create_shop(project.catalog)
    shop = Shop(seed=7, events_per_day=50)
    feed(project, shop, 5)
    events = project.catalog.load_table("shop.events")

    def micro_batch(_: ChunkRecord) -> None:  # late events land in the range while it is backfilled
        events.append(shop.round(late_fraction=0.5)[0])
        run_all(project)

    bf = backfiller(project)
    plan = plan_backfill(
        bf.runner, bf.workflows, "clean", str(FIRST_DAY), str(FIRST_DAY + dt.timedelta(days=4))
    )
    result = bf.run(bf.start(plan, propagate=True).backfill_id, on_chunk=micro_batch)
    assert result.record.status is BackfillStatus.SUCCEEDED
    # the logic did not change, only data arrived: every stage equals the recomputation (+ 7 everywhere)
    want = expected(project, (FIRST_DAY, FIRST_DAY + dt.timedelta(days=100)), plus=7)
    assert_tables_equal(project, want)


def test_plan_errors_name_the_problem_and_the_fix(project_with: ProjectFactory) -> None:
    project = make_pipeline(project_with)
    create_shop(project.catalog)
    bf = backfiller(project)
    with pytest.raises(BackfillError, match="run the workflow first"):
        plan_backfill(bf.runner, bf.workflows, "clean", "2026-03-01", "2026-03-02")
    feed(project, Shop(events_per_day=10), 1)
    with pytest.raises(BackfillError, match="did you mean 'clean'"):
        plan_backfill(bf.runner, bf.workflows, "claen", "2026-03-01", "2026-03-02")
    with pytest.raises(BackfillError, match="is not a date: write it like 2026-11-01"):
        plan_backfill(bf.runner, bf.workflows, "clean", "March", "2026-03-02")
    with pytest.raises(BackfillError, match="the range is empty"):
        plan_backfill(bf.runner, bf.workflows, "clean", "2026-03-05", "2026-03-02")
    with pytest.raises(BackfillError, match="not a duration"):
        plan_backfill(bf.runner, bf.workflows, "clean", "2026-03-01", "2026-03-02", chunk="1x")
    # a workflow that reads a rewritten table whole (no incremental input) is not downstream
    (project.root / "workflows" / "report.yaml").write_text(REPORT)
    bf = backfiller(Project(project.root))
    plan = plan_backfill(bf.runner, bf.workflows, "clean", "2026-03-01", "2026-03-20", chunk="7d")
    assert [d.workflow for d in plan.downstream] == ["daily", "monthly"]
    assert [c.label for c in plan.chunks] == [
        "[2026-03-01, 2026-03-07]",
        "[2026-03-08, 2026-03-14]",
        "[2026-03-15, 2026-03-20]",
    ]


def test_a_failed_check_fails_the_chunk_and_commits_nothing(project_with: ProjectFactory) -> None:
    project = make_pipeline(project_with)
    create_shop(project.catalog)
    feed(project, Shop(seed=2, events_per_day=30), 2)
    project = change_logic(project, " - 100000")  # the new logic makes amounts negative
    before = len(project.catalog.load_table("shop.clean").metadata.snapshots)
    bf = backfiller(project)
    plan = plan_backfill(bf.runner, bf.workflows, "clean", str(FIRST_DAY), str(FIRST_DAY))
    result = bf.run(bf.start(plan).backfill_id)
    assert result.record.status is BackfillStatus.FAILED
    (chunk,) = result.chunks
    assert chunk.status is BackfillStatus.FAILED
    assert "check 'no_negative_amounts' failed" in (chunk.error or "") and "'amount': -" in (
        chunk.error or ""
    )
    assert len(project.catalog.load_table("shop.clean").metadata.snapshots) == before


def _cli(project: Project, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CALVE_HOME", "CALVE_PROJECT", "CALVE_CRASH_AT")}
    if crash_at:
        env["CALVE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "calve", "--project", str(project.root), *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "crash_at", ["consumer.before_commit@2", "backfill.after_step_commit@2", "backfill.between_chunks@1"]
)
def test_killed_backfill_resumes_exactly(project_with: ProjectFactory, crash_at: str) -> None:
    project = make_pipeline(project_with)
    create_shop(project.catalog)
    feed(project, Shop(seed=11, events_per_day=40), 4)
    project = change_logic(project, " + 7")
    high = FIRST_DAY + dt.timedelta(days=2)
    killed = _cli(
        project,
        "backfill",
        "clean",
        "--from",
        str(FIRST_DAY),
        "--to",
        str(high),
        "--propagate",
        "--yes",
        crash_at=crash_at,
    )
    assert killed.returncode == -9, killed.stderr
    listed = json.loads(_cli(project, "backfills", "--json").stdout)["backfills"]
    (record,) = listed
    assert record["status"] == "running" and record["chunks_done"] < 3
    resumed = _cli(project, "backfill", "--resume", record["backfill_id"], "--json", "--yes")
    assert resumed.returncode == 0, resumed.stderr
    done = json.loads(resumed.stdout)
    assert done["status"] == "succeeded" and len(done["chunks"]) == 3
    assert_tables_equal(project, expected(project, (FIRST_DAY, high), plus=7))
    clean = project.catalog.load_table("shop.clean")
    commits = [  # one overwrite commit per chunk: its delete and its append snapshot, nothing more
        s.summary.additional_properties["calve.backfill.chunk"]
        for s in clean.metadata.snapshots
        if s.summary and "calve.backfill.id" in s.summary.additional_properties
    ]
    assert sorted(commits) == ["0", "0", "1", "1", "2", "2"]  # no chunk applied twice
    # every chunk is known as rebuilt by the new version, the one killed after its commit too
    status = json.loads(_cli(project, "status", "clean", "--json").stdout)
    (step,) = status["workflows"][0]["steps"]
    assert [(s["from"], s["to"]) for s in step["stale"]] == [(str(high + dt.timedelta(days=1)),) * 2]


def test_backfill_command_plan_json_and_confirmation(project_with: ProjectFactory) -> None:
    project = make_pipeline(project_with)
    create_shop(project.catalog)
    feed(project, Shop(seed=4, events_per_day=20), 2)
    plan = _cli(
        project, "backfill", "clean", "--from", str(FIRST_DAY), "--to", str(FIRST_DAY), "--plan", "--json"
    )
    assert plan.returncode == 0, plan.stderr
    payload = json.loads(plan.stdout)["plan"]
    assert payload["column"] == "day" and payload["chunks"] == [str(FIRST_DAY)]
    assert [d["workflow"] for d in payload["downstream"]] == ["daily", "monthly"]
    assert not json.loads(_cli(project, "backfills", "--json").stdout)["backfills"]  # nothing ran
    refused = _cli(project, "backfill", "clean", "--from", str(FIRST_DAY), "--to", str(FIRST_DAY))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    status = json.loads(_cli(project, "status", "--json").stdout)
    assert {w["workflow"] for w in status["workflows"]} == set(PIPELINE)
    assert all(not s["stale"] for w in status["workflows"] for s in w["steps"])


def test_a_backfill_computes_with_the_params_it_was_given(project_with: ProjectFactory) -> None:
    project = make_pipeline(project_with)
    create_shop(project.catalog)
    feed(project, Shop(seed=6, events_per_day=20), 2)
    bf = backfiller(project)
    with pytest.raises(Exception, match="param 'bonus' of workflow 'clean' must be a int"):
        plan_backfill(bf.runner, bf.workflows, "clean", str(FIRST_DAY), str(FIRST_DAY), params={"bonus": "x"})
    plan = plan_backfill(
        bf.runner, bf.workflows, "clean", str(FIRST_DAY), str(FIRST_DAY), params={"bonus": "5"}
    )
    record = bf.start(plan, params={"bonus": "5"})
    assert BackfillLog(project.state).get(record.backfill_id).params == {"bonus": "5"}  # type: ignore[union-attr]
    assert bf.run(record.backfill_id).record.status is BackfillStatus.SUCCEEDED
    want = expected(project, (FIRST_DAY, FIRST_DAY), plus=5)
    assert_tables_equal(project, {"clean": want["clean"]})
