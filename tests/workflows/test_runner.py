"""Workflows as users write and run them: validation, injection, failures, locks, restarts, foreach,
Python and ICDC steps, and killed runs, on real tables in a real project folder."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from calve.errors import CalveError, RunLockedError, WorkflowError
from calve.project import Project
from calve.state import RunStatus
from calve.workflows.runner import Runner
from calve.write.consumer import Consumer
from tests.conftest import ProjectFactory
from tests.shop import CLEAN_EVENTS, Shop, create_shop, recompute, rows

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "workflow_worker.py"


def runner_for(project: Project) -> Runner:
    return Runner.for_project(project)


COPY = """
    id: copy
    params:
      label: {type: string, default: plain}
    steps:
      - id: copy
        inputs:
          events: {table: shop.events, read: icdc}
        sql: |
          SELECT event_id, account_id, day, amount,
                 $label AS label
          FROM events
        output: {table: shop.copied, mode: append}
"""


def test_invalid_workflow_reports_every_problem_with_file_line_and_fix(
    project_with: ProjectFactory, tmp_path: Path
) -> None:
    project = project_with(
        bad="""
            id: bad
            params:
              n: {tpye: int}
            steps:
              - id: one
                inputs:
                  ev: {table: shop.events, read: icdcc}
                sql: SELECT * FROM ev WHERE x = $nn
                output: {table: shop.out, mode: upsert}
              - id: two
                depends_on: [onee]
                sql: SELEC 1
        """,
    )
    with pytest.raises(WorkflowError) as caught:
        project.workflows()
    problems = caught.value.problems
    text = "\n".join(problems)
    assert "workflows/bad.yaml:4: params.n.tpye: unknown key 'tpye' (did you mean 'type'?)" in text
    assert "workflows/bad.yaml:8: steps[0].inputs.ev.read: 'icdcc' is not one of" in text
    assert "(did you mean 'icdc'?)" in text
    assert (
        "steps[0].output.mode: 'upsert' is not one of append, merge, overwrite (did you mean 'merge'?)"
        in text
    )
    assert "SQL uses $nn, which this step does not define (did you mean 'n'?)" in text
    assert "steps[1].depends_on: no step 'onee' (did you mean 'one'?)" in text
    assert "workflows/bad.yaml:13: steps[1].sql: SQL does not parse" in text
    assert len(problems) == 6


def test_hostile_param_value_is_bound_never_pasted(project_with: ProjectFactory, tmp_path: Path) -> None:
    project = project_with(copy=COPY)
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    hostile = "x' AS label FROM events; DROP TABLE events; SELECT '"
    result = runner_for(project).run(project.workflow("copy"), {"label": hostile})
    assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    copied = project.catalog.load_table("shop.copied").scan().to_arrow()
    assert set(copied.column("label").to_pylist()) == {hostile}
    assert copied.num_rows == events.scan().to_arrow().num_rows


def test_sql_error_fails_the_run_with_step_file_line_and_commits_nothing(
    project_with: ProjectFactory, tmp_path: Path
) -> None:
    project = project_with(
        broken="""
            id: broken
            steps:
              - id: clean
                inputs:
                  events: {table: shop.events, read: icdc}
                sql: |
                  SELECT event_id,
                         account_id,
                         no_such_column
                  FROM events
                output: {table: shop.events_clean, mode: merge, keys: [event_id]}
        """,
    )
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    # the target exists with an older checkpoint: neither may move
    target = project.catalog.create_table(
        "shop.events_clean", schema=pa.schema([("event_id", pa.int64()), ("account_id", pa.int64())])
    )
    Consumer(project.catalog, "broken-clean").reset(target, events, None)
    target.refresh()
    before_snapshot = target.current_snapshot()
    before_properties = dict(target.properties)

    result = runner_for(project).run(project.workflow("broken"))
    assert result is not None and result.status is RunStatus.FAILED
    error = result.run.error or ""
    assert error.startswith("step 'clean': workflows/broken.yaml:10: SQL failed: Binder Error")
    assert "no_such_column" in error
    target.refresh()
    assert target.current_snapshot() == before_snapshot
    assert dict(target.properties) == before_properties
    recorded = project.state.run(result.run.run_id)
    assert recorded is not None and recorded.status is RunStatus.FAILED
    (step,) = project.state.step_runs(result.run.run_id)
    assert step.status is RunStatus.FAILED and "no_such_column" in (step.error or "")


def test_one_run_per_workflow_and_a_dead_holder_does_not_block(
    project_with: ProjectFactory, tmp_path: Path
) -> None:
    project = project_with(copy=COPY)
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    state = project.state
    # a live holder: this very process, holding the lock for another run
    assert state.acquire_lock("copy", "other-run", stale_after_s=600) is None
    with pytest.raises(RunLockedError, match="already running"):
        runner_for(project).run(project.workflow("copy"))
    state.release_lock("copy", "other-run")

    # a holder whose process is gone (as after SIGKILL): its lock is taken over at once
    holder = (
        "import sys; from pathlib import Path; from calve.state import StateStore; "
        "StateStore(Path(sys.argv[1])).acquire_lock('copy', 'dead-run', 600)"
    )
    subprocess.run([sys.executable, "-c", holder, str(state.path)], check=True)  # takes it, then exits
    assert [lock.run_id for lock in state.locks()] == ["dead-run"]
    result = runner_for(project).run(project.workflow("copy"))
    assert result is not None and result.status is RunStatus.SUCCEEDED
    assert state.locks() == []


def test_restart_skips_the_steps_that_succeeded_and_reuses_the_pins(
    project_with: ProjectFactory, tmp_path: Path
) -> None:
    project = project_with(
        two="""
            id: two
            steps:
              - id: snapshot_copy
                inputs:
                  events: {table: shop.events}
                sql: SELECT day, count(*) AS n FROM events GROUP BY day
                output: {table: shop.per_day, mode: overwrite}
              - id: check
                inputs:
                  per_day: {table: shop.per_day}
                python: steps:check
        """,
    )
    (project.root / "steps.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path

            def check(ctx):
                if Path(__file__).with_name("FAIL").exists():
                    raise RuntimeError("the check failed on purpose")
                Path(__file__).with_name("checked.txt").write_text(str(ctx.inputs["per_day"].num_rows))
            """
        )
    )
    (project.root / "FAIL").touch()
    events, _ = create_shop(project.catalog)
    shop = Shop()
    events.append(shop.round()[0])
    runner = runner_for(project)
    failed = runner.run(project.workflow("two"))
    assert failed is not None and failed.status is RunStatus.FAILED
    assert "RuntimeError: the check failed on purpose" in (failed.run.error or "")

    events.append(shop.round()[0])  # new data after the failure: not part of the restarted run
    (project.root / "FAIL").unlink()
    per_day_before = project.catalog.load_table("shop.per_day").current_snapshot()
    restarted = runner.run(project.workflow("two"), restart_of=failed.run.run_id)
    assert restarted is not None and restarted.status is RunStatus.SUCCEEDED
    statuses = {s.step_id: s.status for s in restarted.steps}
    assert statuses == {"snapshot_copy": RunStatus.SKIPPED, "check": RunStatus.SUCCEEDED}
    assert restarted.run.pins["shop.events"] == failed.run.pins["shop.events"]
    assert project.catalog.load_table("shop.per_day").current_snapshot() == per_day_before
    assert (project.root / "checked.txt").read_text() == "1"  # one day: the pinned snapshot's


def test_foreach_runs_one_recorded_iteration_per_value(project_with: ProjectFactory, tmp_path: Path) -> None:
    project = project_with(
        backfill="""
            id: backfill
            params:
              days: {type: "list[date]"}
            steps:
              - id: per_day
                foreach: {param: days, as: day}
                inputs:
                  events: {table: shop.events, filter: {day: {eq: $day}}}
                sql: SELECT $day AS day, count(*) AS n FROM events
                output:
                  table: shop.day_counts
                  mode: overwrite
                  filter: {day: {eq: $day}}
        """,
    )
    events, _ = create_shop(project.catalog)
    shop = Shop()
    for _ in range(3):
        events.append(shop.round(late_fraction=0, resend_fraction=0)[0])
    days = "2026-03-01,2026-03-03"
    runner = runner_for(project)
    for _ in range(2):  # twice: overwrite per day is idempotent
        result = runner.run(project.workflow("backfill"), {"days": days})
        assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    steps = project.state.step_runs(result.run.run_id)
    assert [(s.iteration, s.iteration_value, s.status) for s in steps] == [
        (0, "2026-03-01", RunStatus.SUCCEEDED),
        (1, "2026-03-03", RunStatus.SUCCEEDED),
    ]
    counts = project.catalog.load_table("shop.day_counts").scan().to_arrow()
    assert rows(counts, ["day"]) == [
        {"day": dt.date(2026, 3, 1), "n": 120},
        {"day": dt.date(2026, 3, 3), "n": 120},
    ]


def test_icdc_step_publishes_the_table_the_next_step_reads_and_injects_its_name(
    project_with: ProjectFactory, tmp_path: Path
) -> None:
    project = project_with(
        publish="""
            id: publish
            steps:
              - id: publish
                icdc: summarize
              - id: summarize
                inputs:
                  events: {table: shop.events, read: icdc}
                sql: SELECT $events_icdc_table AS icdc_table, count(*) AS n FROM events
                output: {table: shop.batches, mode: append}
        """,
    )
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    result = runner_for(project).run(project.workflow("publish"))
    assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    published = result.steps[0].metrics.icdc_tables["events"]
    assert published["icdc_table"] == "calve_icdc.publish-summarize__shop__events"
    icdc = project.catalog.load_table(published["icdc_table"])
    assert icdc.scan().to_arrow().num_rows == events.scan().to_arrow().num_rows  # any Iceberg reader
    batch = project.catalog.load_table("shop.batches").scan().to_arrow().to_pylist()
    assert batch == [{"icdc_table": published["icdc_table"], "n": events.scan().to_arrow().num_rows}]


@pytest.mark.slow
@pytest.mark.parametrize(
    "crash_at",
    ["runner.after_compute", "consumer.before_commit", "consumer.during_commit", "consumer.after_commit"],
)
def test_killed_run_then_rerun_is_exactly_once(
    project_with: ProjectFactory, tmp_path: Path, crash_at: str
) -> None:
    project = project_with()
    (project.root / "workflows" / "clean_events.yaml").write_text(
        (ROOT / "examples/append_merge/workflows/clean_events.yaml").read_text()
    )
    events, _ = create_shop(project.catalog)
    shop = Shop()
    events.append(shop.round()[0])
    assert _worker(project, "clean_events").returncode == 0
    events.append(shop.round()[0])
    killed = _worker(project, "clean_events", crash_at=crash_at)
    assert killed.returncode == -9, killed.stderr
    (stuck,) = [r for r in project.state.runs("clean_events") if r.status is RunStatus.RUNNING]
    if crash_at == "runner.after_compute":  # restartable at once: its dead process is seen on restart
        restarted = Runner.for_project(project).run(project.workflow("clean_events"), restart_of=stuck.run_id)
        assert restarted is not None and restarted.status is RunStatus.SUCCEEDED, restarted
        with pytest.raises(CalveError, match="was restarted already by run"):
            Runner.for_project(project).run(project.workflow("clean_events"), restart_of=stuck.run_id)
    rerun = _worker(project, "clean_events")
    assert rerun.returncode == 0, rerun.stderr
    assert project.state.run(stuck.run_id).status is RunStatus.FAILED  # type: ignore[union-attr]
    target = project.catalog.load_table("shop.events_clean").scan().to_arrow()
    expected = recompute(CLEAN_EVENTS, events=events.scan().to_arrow())
    assert rows(target, ["event_id"]) == rows(expected, ["event_id"])


def _worker(project: Project, workflow: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CALVE_CRASH_AT", None)
    env.pop("CALVE_HOME", None)
    if crash_at:
        env["CALVE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, str(WORKER), str(project.root), workflow], env=env, capture_output=True, text=True
    )


def test_run_json_from_the_command_line(project_with: ProjectFactory, tmp_path: Path) -> None:
    project = project_with(copy=COPY)
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    env = {k: v for k, v in os.environ.items() if k not in ("CALVE_HOME", "CALVE_PROJECT")}
    calve = [sys.executable, "-m", "calve", "--project", str(project.root)]
    done = subprocess.run(
        [*calve, "run", "copy", "-p", "label=cli", "--json"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "succeeded" and run["params"] == {"label": "cli"}
    assert run["steps"][0]["metrics"]["rows_written"] == events.scan().to_arrow().num_rows
    listed = subprocess.run([*calve, "runs", "--json"], env=env, capture_output=True, text=True)
    assert [r["run_id"] for r in json.loads(listed.stdout)["runs"]] == [run["run_id"]]
    shown = subprocess.run(
        [*calve, "runs", "show", run["run_id"], "--json"], env=env, capture_output=True, text=True
    )
    assert json.loads(shown.stdout)["steps"][0]["status"] == "succeeded"
    unknown = subprocess.run([*calve, "run", "cpy"], env=env, capture_output=True, text=True)
    assert unknown.returncode == 1 and "did you mean 'copy'?" in unknown.stderr
    bad_param = subprocess.run(
        [*calve, "run", "copy", "-p", "lable=x"], env=env, capture_output=True, text=True
    )
    assert bad_param.returncode == 1 and "did you mean 'label'?" in bad_param.stderr


def test_relative_dates_projection_and_table_properties(project_with: ProjectFactory, tmp_path: Path) -> None:
    project = project_with(
        window="""
            id: window
            params:
              days: {type: int, default: 2}
              before: {type: date, default: logical_date - days days}
            steps:
              - id: recent
                inputs:
                  events:
                    table: shop.events
                    columns: [day, amount]
                    filter: {day: {gt: $before, lte: $logical_date}}
                sql: SELECT * FROM events
                output:
                  table: shop.recent
                  mode: overwrite
                  properties: {write.target-file-size-bytes: "1048576"}
                  sort_by: [amount]
        """,
    )
    events, _ = create_shop(project.catalog)
    shop = Shop()
    for _ in range(4):  # 2026-03-01 .. 2026-03-04
        events.append(shop.round(late_fraction=0, resend_fraction=0)[0])
    result = runner_for(project).run(project.workflow("window"), logical_date=dt.date(2026, 3, 4))
    assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    assert result.run.params == {"days": 2, "before": dt.date(2026, 3, 2)}
    recent = project.catalog.load_table("shop.recent")
    assert recent.properties["write.target-file-size-bytes"] == "1048576"
    rows = recent.scan().to_arrow()
    assert rows.column_names == ["day", "amount"]  # only the projected columns
    amounts = rows.column("amount").to_pylist()
    assert amounts == sorted(amounts)  # written in sort_by order (one file)
    assert sorted(set(rows.column("day").to_pylist())) == [dt.date(2026, 3, 3), dt.date(2026, 3, 4)]
    # the same workflow, another day and window
    again = runner_for(project).run(
        project.workflow("window"), {"days": "1"}, logical_date=dt.date(2026, 3, 2)
    )
    assert again is not None and again.run.params["before"] == dt.date(2026, 3, 1)


def test_match_must_name_a_keys_input(project_with: ProjectFactory, tmp_path: Path) -> None:
    project = project_with(
        bad="""
            id: bad
            steps:
              - id: agg
                inputs:
                  changed: {table: shop.events, read: icdc}
                  rows: {table: shop.events, match: chnged}
                sql: SELECT 1 AS n
                output: {table: shop.n, mode: append}
        """,
    )
    with pytest.raises(
        WorkflowError, match=r"match: 'chnged' must name another input of this step with read: keys"
    ):
        project.workflows()


def test_filter_join_deletes_the_aggregates_of_keys_that_lost_all_their_rows(
    project_with: ProjectFactory, tmp_path: Path
) -> None:
    project = project_with(
        totals="""
            id: totals
            steps:
              - id: per_account
                inputs:
                  changed: {table: shop.events, read: keys, keys: [account_id]}
                  events: {table: shop.events, match: changed, columns: [account_id, amount]}
                sql: |
                  SELECT c.account_id, count(e.account_id) AS orders, sum(e.amount) AS amount,
                         count(e.account_id) = 0 AS gone
                  FROM changed AS c LEFT JOIN events AS e USING (account_id)
                  GROUP BY c.account_id
                output: {table: shop.totals, mode: merge, keys: [account_id], delete_column: gone}
        """,
    )
    events, _ = create_shop(project.catalog)
    events.append(Shop(accounts=5).round(late_fraction=0, resend_fraction=0)[0])
    runner = runner_for(project)
    assert runner.run(project.workflow("totals")).status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
    events.delete("account_id = 3")  # a copy-on-write delete: the key's rows are gone
    events.append(Shop(seed=2, accounts=2).round(late_fraction=0, resend_fraction=0)[0])  # accounts 0, 1
    result = runner.run(project.workflow("totals"))
    assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    totals = project.catalog.load_table("shop.totals").scan().to_arrow()
    expected = recompute(
        "SELECT account_id, count(*) AS orders, sum(amount) AS amount FROM events GROUP BY account_id",
        events=events.scan().to_arrow(),
    )
    assert rows(totals, ["account_id"]) == rows(expected.cast(totals.schema), ["account_id"])
    assert 3 not in totals.column("account_id").to_pylist()


def test_compact_step_folds_small_files_without_a_change_for_consumers(
    project_with: ProjectFactory, tmp_path: Path
) -> None:
    project = project_with(
        tidy="""
            id: tidy
            steps:
              - id: copy
                inputs:
                  events: {table: shop.events, read: icdc}
                sql: SELECT event_id, account_id, day, amount FROM events
                output: {table: shop.copy, mode: append, partition_by: [day]}
              - id: compact_copy
                compact: {table: shop.copy, small_file_bytes: 1MiB, min_files: 3}
              - id: count
                inputs:
                  changed: {table: shop.copy, read: keys, keys: [day]}
                sql: SELECT day, count(*) AS n FROM changed GROUP BY day
                output: {table: shop.changed_days, mode: append}
        """,
    )
    workflow = project.workflow("tidy")
    assert [s.id for s in workflow.steps] == ["copy", "compact_copy", "count"]
    events, _ = create_shop(project.catalog)
    runner = runner_for(project)
    shop = Shop()
    for _ in range(4):  # each round adds files to the earlier days' partitions (late events)
        events.append(shop.round()[0])
        result = runner.run(workflow)
        assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    copy = project.catalog.load_table("shop.copy")
    per_day: dict[object, int] = {}
    for task in copy.scan().plan_files():
        per_day[task.file.partition] = per_day.get(task.file.partition, 0) + 1
    assert max(per_day.values()) < 3  # folded
    assert copy.current_snapshot().summary.operation.value == "replace"  # type: ignore[union-attr]
    expected = recompute(
        "SELECT event_id, account_id, day, amount FROM events", events=events.scan().to_arrow()
    )
    assert rows(copy.scan().to_arrow(), ["event_id"]) == rows(expected, ["event_id"])
    # a replace is no change: nothing is pending for the downstream step
    again = runner.run(workflow)
    assert again is not None and again.status is RunStatus.SKIPPED
