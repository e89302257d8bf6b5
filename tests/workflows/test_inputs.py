"""Step inputs as the runner reads them: change ranges widened to a coarser grain for a range overwrite."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pyarrow as pa

from calve.project import Project, init_project
from calve.state import RunStatus
from calve.workflows.runner import Runner
from tests.conftest import ProjectFactory
from tests.shop import Shop, create_shop, recompute, rows

MONTHLY = """
    id: monthly
    steps:
      - id: months
        inputs:
          changed: {table: shop.events, read: ranges, ranges: {day: month}}
          events:
            table: shop.events
            filter: {day: {between: [$range_day_min, $range_day_max]}}
        sql: |
          SELECT CAST(date_trunc('month', day) AS DATE) AS month, count(*) AS orders, sum(amount) AS amount,
                 $changed_day_min AS widened_from, $changed_day_max AS widened_to
          FROM events GROUP BY 1
        output:
          table: shop.monthly
          mode: overwrite
          filter: {month: {between: [$range_day_min, $range_day_max]}}
"""


def test_a_day_range_widened_to_whole_months_overwrites_exactly_the_touched_months(tmp_path: Path) -> None:
    root = tmp_path / "project"
    init_project(root, example=False)
    (root / "workflows" / "monthly.yaml").write_text(textwrap.dedent(MONTHLY))
    project = Project(root)
    runner = Runner.for_project(project)
    events, _ = create_shop(project.catalog)
    shop = Shop(events_per_day=40)
    for _ in range(45):  # six weeks: March and April, late events reach back into March
        events.append(shop.round()[0])
        result = runner.run(project.workflow("monthly"))
        assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error

    out = project.catalog.load_table("shop.monthly").scan().to_arrow()
    for row in out.to_pylist():  # the injected range is whole months: first to last day
        assert row["widened_from"].day == 1
        assert (row["widened_to"] + dt.timedelta(days=1)).day == 1
    expected = recompute(
        "SELECT CAST(date_trunc('month', day) AS DATE) AS month, count(*) AS orders, sum(amount) AS amount "
        "FROM events GROUP BY 1",
        events=events.scan().to_arrow(),
    )
    got = out.select(["month", "orders", "amount"])
    assert rows(got, ["month"]) == rows(expected, ["month"])


def test_icdc_rows_after_a_column_was_renamed_are_read_by_field_id(project_with: ProjectFactory) -> None:
    project = project_with(
        copy="""
            id: copy
            steps:
              - id: copy
                inputs:
                  events: {table: shop.events, read: icdc}
                sql: SELECT event_id, amount, product FROM events
                output: {table: shop.copied, mode: append}
        """
    )
    events, _ = create_shop(project.catalog)
    shop = Shop(events_per_day=20)
    first = shop.round()[0]
    events.append(first)
    with events.update_schema() as update:
        update.rename_column("item", "product")
    second = shop.round()[0].rename_columns(["product" if n == "item" else n for n in first.column_names])
    events.append(second)
    result = Runner.for_project(project).run(project.workflow("copy"))
    assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    copied = project.catalog.load_table("shop.copied").scan().to_arrow()
    expected = pa.concat_tables([first, second.rename_columns(first.column_names)])
    assert sorted(zip(copied["event_id"].to_pylist(), copied["product"].to_pylist(), strict=True)) == sorted(
        zip(expected["event_id"].to_pylist(), expected["item"].to_pylist(), strict=True)
    )
