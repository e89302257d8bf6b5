"""Run and step metrics recorded for real runs match what the runs did: rows against the tables, skew
against a hand count, the lookback estimate against the files, and the class of each kind of error."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, LongType, NestedField

from calve.project import Project
from calve.state import RunMetrics, RunStatus, StepMetrics
from calve.workflows.runner import Runner
from calve.write.consumer import Consumer
from tests.conftest import ProjectFactory

SOURCE = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "day", DateType(), required=False),
    NestedField(3, "amount", LongType(), required=False),
)
BY_DAY = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "day"))

COPY = """
    id: copy
    steps:
      - id: copy
        inputs:
          events: {table: obs.events, read: icdc}
          day_one:
            table: obs.events
            filter: {day: {eq: 2026-01-01}}
        sql: |
          SELECT id, day, amount FROM events
          WHERE id NOT IN (SELECT id FROM day_one WHERE amount < 0)
        output: {table: obs.copied, mode: append, partition_by: [day]}
"""
SETTINGS = """
    observe: {lookback_days: 2}
"""


def rows_for(days: dict[int, int], first_id: int) -> pa.Table:
    """`days[d]` rows on 2026-01-d, ids counting up from `first_id`."""
    ids, dates = [], []
    for day, count in days.items():
        for _ in range(count):
            ids.append(first_id + len(ids))
            dates.append(dt.date(2026, 1, day))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "day": pa.array(dates, pa.date32()),
            "amount": pa.array([10] * len(ids), pa.int64()),
        }
    )


def create_source(catalog: Catalog) -> Table:
    catalog.create_namespace("obs")
    return catalog.create_table("obs.events", schema=SOURCE, partition_spec=BY_DAY)


def test_metrics_of_a_run_match_what_it_read_and_wrote(project_with: ProjectFactory) -> None:
    project = project_with(settings=SETTINGS, copy=COPY)
    source = create_source(project.catalog)
    source.append(rows_for({1: 5, 2: 3, 3: 2}, 1))  # one file per day: 5, 3 and 2 rows
    runner = Runner.for_project(project)

    result = runner.run(project.workflow("copy"))
    assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    (step,) = project.state.step_runs(result.run.run_id)
    metrics = step.metrics
    copied = project.catalog.load_table("obs.copied")
    assert metrics.rows_written == copied.scan().to_arrow().num_rows == 10
    changes = metrics.inputs["events"]
    assert (changes.snapshots, changes.files, changes.records) == (1, 3, 10)
    assert (changes.rows_read, changes.files_read, changes.files_skipped) == (10, 3, 0)
    assert changes.bytes_read == sum(t.file.file_size_in_bytes for t in source.scan().plan_files())
    day_one = metrics.inputs["day_one"]  # the filter pruned the files of days 2 and 3
    assert (day_one.rows_read, day_one.files_read, day_one.files_skipped) == (5, 1, 2)
    assert metrics.rows_read == 10 + 5
    # skew by hand: partitions written 5, 3, 2; files read 5, 3, 2 (changes) and 5 (day one)
    assert metrics.skew is not None
    assert metrics.skew.to_dict() == {
        "output_partitions": 3,
        "largest_partition_rows": 5,
        "median_partition_rows": 3,
        "input_files": 4,
        "largest_file_rows": 5,
        "median_file_rows": 4.0,
    }
    assert metrics.timings is not None and set(metrics.timings.to_dict()) == {
        "plan_s",
        "read_s",
        "compute_s",
        "write_s",
        "commit_s",
    }
    assert all(v >= 0 for v in metrics.timings.to_dict().values())
    assert metrics.timings.commit_s > 0 and metrics.timings.write_s > 0
    assert metrics.peak_rss_bytes is not None and metrics.peak_rss_bytes > 0
    assert metrics.error_class is None
    source_commit = source.current_snapshot()
    assert source_commit is not None
    assert metrics.source_commit_at == source_commit.timestamp_ms / 1000

    run = project.state.run(result.run.run_id)
    assert run is not None
    assert run.metrics == result.run.metrics
    assert (run.metrics.rows_read, run.metrics.rows_written) == (15, 10)
    assert run.metrics.cpu_s is not None and run.metrics.cpu_s > 0
    assert run.metrics.peak_rss_bytes == metrics.peak_rss_bytes
    assert run.finished_at is not None and run.metrics.freshness_s is not None
    assert run.metrics.freshness_s == pytest.approx(
        run.finished_at - source_commit.timestamp_ms / 1000, abs=0.01
    )
    # a lookback of 2 days over the output's partition column `day`: days 2 and 3 (3 + 2 rows)
    assert (run.metrics.lookback_days, run.metrics.lookback_rows_estimate) == (2, 5)
    assert run.metrics.error_class is None

    source.append(rows_for({4: 4, 1: 1}, 100))  # a new day, and a late row for day 1
    second = runner.run(project.workflow("copy"))
    assert second is not None and second.status is RunStatus.SUCCEEDED
    run_metrics = second.run.metrics
    (step2,) = second.steps
    assert step2.metrics.inputs["events"].records == 5 and step2.metrics.rows_written == 5
    # the lookback re-reads days 3 and 4 (2 + 4 rows) and misses the late row; calve read the 5 new ones
    assert run_metrics.lookback_rows_estimate == 2 + 4
    assert step2.metrics.skew is not None and step2.metrics.skew.output_partitions == 2


def test_old_metrics_json_stays_readable() -> None:
    old = {
        "rows_read": 3,
        "inputs": {"e": {"table": "t", "from_snapshot_id": 1, "to_snapshot_id": 2, "snapshots": 1}},
    }
    metrics = StepMetrics.from_dict(old)
    assert metrics.rows_read == 3 and metrics.timings is None and metrics.skew is None
    assert metrics.inputs["e"].files_skipped is None
    newer = {**old, "timings": {"plan_s": 1.0, "someday_s": 2.0}, "unknown": 1}
    assert StepMetrics.from_dict(newer).timings is not None
    assert RunMetrics.from_dict({}) == RunMetrics()
    assert RunMetrics.from_dict({"cpu_s": 1.5, "new_key": 1}).cpu_s == 1.5


FAILING = {
    "sql": """
        id: failing
        steps:
          - id: broken
            inputs:
              events: {table: obs.events, read: icdc}
            sql: SELECT id, no_such_column FROM events
            output: {table: obs.out, mode: append}
    """,
    "data": """
        id: failing
        steps:
          - id: broken
            inputs:
              events: {table: obs.events, read: icdc}
            sql: SELECT sum(v) AS total FROM (VALUES (9223372036854775807), (9223372036854775807)) t(v)
            output: {table: obs.out, mode: append}
    """,
    "commit_conflict": """
        id: failing
        steps:
          - id: broken
            inputs:
              events: {table: obs.events, read: icdc}
            python: racing_step:copy
            output: {table: obs.out, mode: append}
    """,
}

# another run of the same consumer commits while this one computes: its checkpoint moved
RACING_STEP = """
from calve.write.consumer import Consumer


def copy(ctx):
    target = ctx.catalog.load_table("obs.out")
    source = ctx.catalog.load_table("obs.events")
    Consumer(ctx.catalog, "failing-broken").reset(target, source, source.current_snapshot().snapshot_id)
    return ctx.inputs["events"].select(["id"])
"""


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("sql", "user.sql"), ("data", "user.data"), ("commit_conflict", "system.commit_conflict")],
)
def test_the_error_class_of_a_failed_run(project_with: ProjectFactory, kind: str, expected: str) -> None:
    project = project_with(failing=FAILING[kind])
    (project.root / "racing_step.py").write_text(RACING_STEP)
    source = create_source(project.catalog)
    source.append(rows_for({1: 2}, 1))
    if kind == "commit_conflict":
        target = project.catalog.create_table("obs.out", schema=pa.schema([("id", pa.int64())]))
        Consumer(project.catalog, "failing-broken").reset(target, source, None)
    result = Runner.for_project(project).run(project.workflow("failing"))
    assert result is not None and result.status is RunStatus.FAILED
    (step,) = project.state.step_runs(result.run.run_id)
    assert step.metrics.error_class == expected
    stored = project.state.run(result.run.run_id)
    assert stored is not None and stored.metrics.error_class == expected
    assert stored.transient is (expected == "system.commit_conflict")
    assert stored.metrics.lookback_rows_estimate is None and stored.metrics.freshness_s is None


def test_no_extra_collection_with_calve_observe_0(
    project_with: ProjectFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CALVE_OBSERVE", "0")
    project: Project = project_with(copy=COPY)
    create_source(project.catalog).append(rows_for({1: 2}, 1))
    result = Runner.for_project(project).run(project.workflow("copy"))
    assert result is not None and result.status is RunStatus.SUCCEEDED
    (step,) = result.steps
    assert step.metrics.timings is None and step.metrics.skew is None and step.metrics.peak_rss_bytes is None
    assert result.run.metrics.rows_written == 2 and result.run.metrics.lookback_rows_estimate is None


def test_the_observe_section_of_calve_yaml(tmp_path: Path) -> None:
    from calve.errors import ProjectError
    from calve.project import DEFAULT_SETTINGS

    def settings(text: str, name: str) -> Project:
        (tmp_path / name).mkdir()
        (tmp_path / name / "calve.yaml").write_text(text)
        return Project(tmp_path / name)

    lines = DEFAULT_SETTINGS.splitlines()
    start = lines.index("# observe:")
    enabled = [line.removeprefix("# ") if start <= i <= start + 1 else line for i, line in enumerate(lines)]
    assert settings("\n".join(enabled) + "\n", "commented").settings.lookback_days == 14
    assert settings("observe: {lookback_days: 0}\n", "off").settings.lookback_days == 0
    with pytest.raises(ProjectError, match=r"calve.yaml:1: observe.lookback_days: must be a whole number"):
        settings("observe: {lookback_days: -3}\n", "bad")
