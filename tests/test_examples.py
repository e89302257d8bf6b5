"""The three processing patterns of the article, as the example workflows users copy, run on rounds of
new, late and re-sent data: after every round the target equals a from-scratch recomputation."""

from __future__ import annotations

from pathlib import Path

import pytest

from calve.state import RunStatus
from calve.workflows.runner import Runner
from tests.shop import (
    ACCOUNT_TOTALS,
    CLEAN_EVENTS,
    DAILY_REVENUE,
    Shop,
    create_shop,
    example_project,
    recompute,
    rows,
)

CASES = {
    # example folder: (workflow, target, recomputation, sort key)
    "append_merge": ("clean_events", "shop.events_clean", CLEAN_EVENTS, ["event_id"]),
    "filter_join": ("account_totals", "shop.account_totals", ACCOUNT_TOTALS, ["account_id"]),
    "range_overwrite": ("daily_revenue", "shop.daily_revenue", DAILY_REVENUE, ["day"]),
}


@pytest.mark.parametrize("example", sorted(CASES))
def test_example_matches_recomputation_round_after_round(example: str, tmp_path: Path) -> None:
    workflow_id, target_name, sql, order = CASES[example]
    project = example_project(example, tmp_path)
    runner = Runner.for_project(project)
    events, refunds = create_shop(project.catalog)
    shop = Shop(seed=len(example))
    workflow = project.workflow(workflow_id)

    for round_number in range(5):
        new_events, new_refunds = shop.round()
        events.append(new_events)
        if round_number % 2 == 0:  # refunds arrive every other round: one source changes alone
            refunds.append(new_refunds)
        result = runner.run(workflow)
        assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
        target = project.catalog.load_table(target_name)
        expected = recompute(sql, events=events.scan().to_arrow(), refunds=refunds.scan().to_arrow())
        assert rows(target.scan().to_arrow(), order) == rows(expected, order), f"round {round_number}"

    # nothing new: the run does nothing and says so
    before = project.catalog.load_table(target_name).current_snapshot()
    result = runner.run(workflow)
    assert result is not None and result.status is RunStatus.SKIPPED
    after = project.catalog.load_table(target_name).current_snapshot()
    assert before is not None and after is not None and after.snapshot_id == before.snapshot_id


def test_incremental_steps_read_only_what_changed(tmp_path: Path) -> None:
    """The filter-join reads the changed accounts' rows only, not the whole table, once it is large."""
    project = example_project("filter_join", tmp_path)
    runner = Runner.for_project(project)
    events, _ = create_shop(project.catalog)
    shop = Shop(seed=3, events_per_day=400, accounts=400)
    for _ in range(6):
        events.append(shop.round(late_fraction=0, resend_fraction=0)[0])
    runner.run(project.workflow("account_totals"))
    # one late event for one account
    late, _ = Shop(seed=9, events_per_day=1, accounts=1).round()
    events.append(late)
    result = runner.run(project.workflow("account_totals"))
    assert result is not None and result.status is RunStatus.SUCCEEDED
    metrics = result.steps[0].metrics
    total_rows = events.scan().to_arrow().num_rows
    assert metrics.inputs["changed"].snapshots == 1
    assert metrics.rows_read < total_rows / 20, metrics  # one account's rows (and the one new key)
    assert metrics.rows_out == 1  # one account re-aggregated (its file is rewritten: copy-on-write)
