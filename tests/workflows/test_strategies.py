"""Strategy steps: an aggregate over one whole table kept exact by calve, whatever strategy it takes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyiceberg.expressions import EqualTo

from calve.errors import ConfigError
from calve.project import Project, init_project
from calve.state import RunStatus
from calve.workflows.model import Strategy
from calve.workflows.runner import Runner
from calve.workflows.strategies import choose
from tests.shop import Shop, create_shop, recompute, rows

PER_ACCOUNT = """
    SELECT account_id, count(*) AS orders, sum(amount) AS amount, count(DISTINCT item) AS items,
           max(day) AS last_day
    FROM events
    GROUP BY account_id
"""

WORKFLOW = """
    id: totals
    steps:
      - id: per_account
        inputs:
          events: {{table: shop.events}}
        sql: |
{sql}
        strategy: {strategy}
        output: {{table: shop.per_account, mode: merge, keys: [{keys}]}}
"""


def _project(tmp_path: Path, strategy: str, sql: str = PER_ACCOUNT, keys: str = "account_id") -> Project:
    root = tmp_path / "project"
    init_project(root, example=False)
    _write_workflow(root, strategy, sql, keys)
    return Project(root)


def _write_workflow(root: Path, strategy: str, sql: str, keys: str = "account_id") -> None:
    body = textwrap.indent(textwrap.dedent(sql).strip(), " " * 10)
    text = WORKFLOW.format(strategy=strategy, sql=body, keys=keys)
    (root / "workflows" / "totals.yaml").write_text(textwrap.dedent(text))


@pytest.mark.parametrize("strategy", ["filter_join", "recompute", "auto", "aggregate"])
def test_the_output_equals_a_recompute_after_late_resent_and_deleted_rows(
    tmp_path: Path, strategy: str
) -> None:
    project = _project(tmp_path, strategy)
    runner = Runner.for_project(project)
    events, _ = create_shop(project.catalog)
    shop = Shop(events_per_day=60, accounts=12)
    for day in range(6):
        events.append(shop.round()[0])
        if day in (2, 4):  # every row of one account goes: its group must go too
            events.delete(EqualTo("account_id", day))
        result = runner.run(project.workflow("totals"))
        assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
        (step,) = result.steps
        assert step.metrics.strategy == ("filter_join" if strategy == "auto" else strategy)
        got = project.catalog.load_table("shop.per_account").scan().to_arrow()
        expected = recompute(PER_ACCOUNT, events=events.scan().to_arrow())
        assert rows(got, ["account_id"]) == rows(expected.cast(got.schema), ["account_id"])
    again = runner.run(project.workflow("totals"))
    assert again is not None and again.status is RunStatus.SKIPPED  # nothing new: nothing read


def test_a_forced_strategy_that_does_not_apply_says_why(tmp_path: Path) -> None:
    sql = "SELECT CAST(date_trunc('month', day) AS DATE) AS month, count(*) AS n FROM events GROUP BY 1"
    project = _project(tmp_path, "filter_join", sql, keys="month").workflow("totals")
    step = project.steps[0]
    with pytest.raises(ConfigError, match=r"output key 'month' is not a column of shop\.events"):
        choose(step, ["event_id", "account_id", "day", "item", "amount", "sent_at"])
    chosen = choose(step.__class__(**{**step.__dict__, "strategy": Strategy.AUTO}), ["day"])
    assert chosen.strategy is Strategy.AGGREGATE  # counts only: additive


WORKER = Path(__file__).parent.parent / "workflow_worker.py"


def _worker(project: Project, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CALVE_CRASH_AT", "CALVE_HOME")}
    env["PYTHONPATH"] = str(Path(__file__).parent.parent.parent)
    if crash_at:
        env["CALVE_CRASH_AT"] = crash_at
    command = [sys.executable, str(WORKER), str(project.root), "totals"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    "crash_at",
    [
        "consumer.after_commit@1",  # the values state committed; the groups state and the output not
        "consumer.after_commit@2",  # both states committed; the output not
        "runner.after_compute",  # the same point, as the runner sees it
        "consumer.during_commit@3",  # inside the output's commit
    ],
)
def test_an_aggregate_killed_between_its_commits_reruns_exactly_once(tmp_path: Path, crash_at: str) -> None:
    project = _project(tmp_path, "aggregate")
    events, _ = create_shop(project.catalog)
    shop = Shop(events_per_day=60, accounts=12)
    events.append(shop.round()[0])
    assert _worker(project).returncode == 0
    events.append(shop.round()[0])
    events.delete(EqualTo("account_id", 3))
    killed = _worker(project, crash_at)
    assert killed.returncode == -9, killed.stderr
    events.append(shop.round()[0])  # more changes before the rerun
    rerun = _worker(project)
    assert rerun.returncode == 0, rerun.stderr
    got = project.catalog.load_table("shop.per_account").scan().to_arrow()
    expected = recompute(PER_ACCOUNT, events=events.scan().to_arrow())
    assert rows(got, ["account_id"]) == rows(expected.cast(got.schema), ["account_id"])


def test_a_changed_sql_rebuilds_the_state_and_replaces_the_output(tmp_path: Path) -> None:
    project = _project(tmp_path, "aggregate")
    runner = Runner.for_project(project)
    events, _ = create_shop(project.catalog)
    shop = Shop(events_per_day=60, accounts=12)
    for _ in range(3):
        events.append(shop.round()[0])
        assert runner.run(project.workflow("totals")).status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
    changed = PER_ACCOUNT.replace("count(*) AS orders", "count(*) FILTER (WHERE amount > 2500) AS orders")
    _write_workflow(project.root, "aggregate", changed)  # the business logic changed
    project = Project(project.root)
    events.append(shop.round()[0])
    result = Runner.for_project(project).run(project.workflow("totals"))
    assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    got = project.catalog.load_table("shop.per_account").scan().to_arrow()
    expected = recompute(changed, events=events.scan().to_arrow())
    assert rows(got, ["account_id"]) == rows(expected.cast(got.schema), ["account_id"])
    events.append(shop.round()[0])  # and it goes on incrementally from the rebuilt state
    assert Runner.for_project(project).run(project.workflow("totals")).status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
    got = project.catalog.load_table("shop.per_account").scan().to_arrow()
    expected = recompute(changed, events=events.scan().to_arrow())
    assert rows(got, ["account_id"]) == rows(expected.cast(got.schema), ["account_id"])
