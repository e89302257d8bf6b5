"""A project with real runs for the web UI's tests: three workflows on the shop's tables, run for real.

`copy` appends the new events of shop.events to shop.copied (twice, then once with nothing new),
`daily` re-aggregates the days that changed into shop.daily, and `broken` fails on a column that does
not exist (its error names workflows/broken.yaml and the line). Built once per test module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from calve.project import Project
from calve.state import RunStatus
from calve.workflows.runner import Runner
from tests.conftest import make_project
from tests.shop import Shop, create_shop

HOSTILE = "<script>alert('x')</script>"

COPY = """
    id: copy
    description: Copies the new events <b>as they are</b>.
    params:
      label: {type: string, default: plain}
    triggers:
      - incremental: {sources: [shop.events], min_interval: 1m}
      - cron: "0 6 * * *"
    steps:
      - id: copy
        inputs:
          events: {table: shop.events, read: icdc}
        sql: |
          SELECT event_id, account_id, day, amount, $label AS label
          FROM events
        output: {table: shop.copied, mode: append}
"""

DAILY = """
    id: daily
    triggers:
      - interval: 15m
    steps:
      - id: per_day
        inputs:
          changed: {table: shop.copied, read: ranges, ranges: [day]}
          rows:
            table: shop.copied
            filter: {day: {between: [$range_day_min, $range_day_max]}}
        sql: SELECT day, count(*) AS events, sum(amount) AS amount FROM rows GROUP BY day
        output:
          table: shop.daily
          mode: overwrite
          filter: {day: {between: [$range_day_min, $range_day_max]}}
"""

BROKEN = """
    id: broken
    steps:
      - id: clean
        inputs:
          events: {table: shop.events, read: icdc}
        sql: |
          SELECT event_id,
                 no_such_column
          FROM events
        output: {table: shop.clean, mode: append}
"""


@dataclass(frozen=True)
class UiProject:
    project: Project
    succeeded: list[str]  # run ids, oldest first
    failed: str
    hostile: str  # a succeeded run whose param value is HOSTILE

    @property
    def root(self) -> Path:
        return self.project.root


def build_ui_project(root: Path) -> UiProject:
    project = make_project(root, copy=COPY, daily=DAILY, broken=BROKEN)
    events, _ = create_shop(project.catalog)
    shop = Shop(events_per_day=60)
    runner = Runner.for_project(project)
    workflows = project.workflows()
    succeeded = []

    def run(workflow: str, **params: str) -> str:
        result = runner.run(workflows[workflow], params)
        assert result is not None
        if result.status is not RunStatus.FAILED:
            succeeded.append(result.run.run_id)
        return result.run.run_id

    events.append(shop.round()[0])
    run("copy")
    run("daily")
    events.append(shop.round()[0])
    hostile = run("copy", label=HOSTILE)
    run("daily")
    run("copy")  # nothing new: skipped
    failed = run("broken")
    state = project.state
    assert state.run(failed) is not None and state.run(failed).status is RunStatus.FAILED  # type: ignore[union-attr]
    return UiProject(project, succeeded, failed, hostile)


@pytest.fixture(scope="module")
def ui_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiProject]:
    yield build_ui_project(tmp_path_factory.mktemp("ui") / "project")
