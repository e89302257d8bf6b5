"""The loader: step order, cycles, range grains (and `widen`), injected names, and the docs that list them."""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from pathlib import Path

import pytest

from calve.errors import WorkflowError
from calve.workflows.injection import CATALOGUE
from calve.workflows.loader import load_workflow
from calve.workflows.model import Workflow
from calve.workflows.values import widen

DOCS = Path(__file__).resolve().parents[2] / "docs" / "workflows.md"


def load(tmp_path: Path, text: str) -> Workflow:
    path = tmp_path / "w.yaml"
    path.write_text(textwrap.dedent(text))
    return load_workflow(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(WorkflowError) as caught:
        load(tmp_path, text)
    return caught.value.problems


def test_ready_steps_run_in_file_order(tmp_path: Path) -> None:
    workflow = load(
        tmp_path,
        """\
        steps:
          - {id: report, sql: SELECT * FROM b, inputs: {b: db.b}, output: {table: db.report, mode: append}}
          - {id: z_first, sql: SELECT 1 AS x, output: {table: db.a, mode: append}}
          - {id: b, sql: SELECT * FROM a, inputs: {a: db.a}, output: {table: db.b, mode: append}}
          - {id: a_free, sql: SELECT 1 AS x, output: {table: db.free, mode: append}}
          - {id: last, depends_on: [z_first], sql: SELECT 1 AS x, output: {table: db.last, mode: append}}
        """,
    )
    # ready together: z_first and a_free (file order, not name order); then b and last; then report
    assert [s.id for s in workflow.steps] == ["z_first", "a_free", "b", "last", "report"]


def test_a_cycle_is_a_problem_at_its_first_step_that_names_the_cycle(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        steps:
          - id: free
            sql: SELECT 1 AS x
          - id: a
            depends_on: [c]
            sql: SELECT 1 AS x
          - id: b
            depends_on: [a]
            sql: SELECT 1 AS x
            output: {table: db.b_out, mode: append}
          - id: c
            sql: SELECT * FROM t
            inputs: {t: db.b_out}
        """,
    )
    assert found == [
        "w.yaml:5: steps[1].depends_on: the steps depend on each other in a cycle: a -> c -> b -> a "
        "(each depends on the next); remove one of these dependencies (a depends_on, or a step that "
        "reads a table that another step of the cycle writes)"
    ]


def test_a_step_that_depends_on_itself(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, "steps:\n  - {id: me, depends_on: [me], sql: SELECT 1}\n")
    assert found.startswith(
        "w.yaml:2: steps[0].depends_on: the steps depend on each other in a cycle: me -> me"
    )


def test_ranges_take_a_grain_per_column(tmp_path: Path) -> None:
    workflow = load(
        tmp_path,
        """\
        steps:
          - id: monthly
            inputs:
              changed: {table: db.orders, read: ranges, ranges: {order_day: month, ordered_at: year}}
              orders:
                table: db.orders
                filter: {order_day: {between: [$changed_order_day_min, $range_order_day_max]}}
            sql: SELECT * FROM orders WHERE ordered_at <= $range_ordered_at_max
            output:
              table: db.monthly
              mode: overwrite
              filter: {order_day: {between: [$range_order_day_min, $range_order_day_max]}}
        """,
    )
    changed = workflow.steps[0].inputs[0]
    assert changed.ranges == ("order_day", "ordered_at")
    assert changed.range_grains == (("order_day", "month"), ("ordered_at", "year"))
    assert changed.range_grain("order_day") == "month"
    listed = load(
        tmp_path,
        """\
        steps:
          - id: s
            inputs: {c: {table: db.o, read: ranges, ranges: [day]}}
            sql: SELECT 1 AS x
            output: {table: db.out, mode: append}
        """,
    )
    assert listed.steps[0].inputs[0].ranges == ("day",) and listed.steps[0].inputs[0].range_grains == ()


def test_a_grain_must_be_day_month_or_year(tmp_path: Path) -> None:
    (found,) = problems(
        tmp_path,
        """\
        steps:
          - id: s
            inputs:
              c:
                table: db.o
                read: ranges
                ranges: {day: mnth}
            sql: SELECT 1 AS x
            output: {table: db.out, mode: append}
        """,
    )
    assert found == (
        "w.yaml:7: steps[0].inputs.c.ranges.day: 'mnth' is not one of day, month, year "
        "(did you mean 'month'?)"
    )


def test_filters_may_use_the_range_names_of_the_other_inputs_only(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        steps:
          - id: s
            inputs:
              c: {table: db.o, read: ranges, ranges: {day: month}}
              rows: {table: db.o, filter: {day: {gte: $c_day_min}, x: {eq: $c_snapshot_id}}}
            sql: SELECT 1 AS x
            output: {table: db.out, mode: append}
        """,
    )
    assert len(found) == 1 and "'$c_snapshot_id' is not a param of this step" in found[0]


def test_docs_list_every_injected_name() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("#### Injected parameters", 1)[1].split("\n#### ", 1)[0]
    rows = section.split("|---|---|", 1)[1].split("\n\n", 1)[0]  # the table's body, below its header
    documented = re.findall(r"^\| `([^`]+)` \|", rows, flags=re.MULTILINE)
    for injected in CATALOGUE:
        assert f"`{injected.pattern}`" in section, f"docs/workflows.md does not list {injected.pattern}"
    # and nothing else: the table is the catalogue
    assert documented == [i.pattern for i in CATALOGUE]


@pytest.mark.parametrize(
    ("value", "grain", "expected"),
    [
        (dt.date(2026, 2, 14), "day", (dt.date(2026, 2, 14), dt.date(2026, 2, 14))),
        (dt.date(2026, 2, 14), "month", (dt.date(2026, 2, 1), dt.date(2026, 2, 28))),
        (dt.date(2024, 2, 29), "month", (dt.date(2024, 2, 1), dt.date(2024, 2, 29))),
        (dt.date(2026, 12, 31), "month", (dt.date(2026, 12, 1), dt.date(2026, 12, 31))),
        (dt.date(2026, 7, 4), "year", (dt.date(2026, 1, 1), dt.date(2026, 12, 31))),
        (
            dt.datetime(2026, 2, 14, 13, 5),
            "month",
            (dt.datetime(2026, 2, 1), dt.datetime(2026, 2, 28, 23, 59, 59, 999999)),
        ),
        (
            dt.datetime(2026, 2, 14, 13, 5, tzinfo=dt.UTC),
            "day",
            (
                dt.datetime(2026, 2, 14, tzinfo=dt.UTC),
                dt.datetime(2026, 2, 14, 23, 59, 59, 999999, tzinfo=dt.UTC),
            ),
        ),
    ],
)
def test_widen_a_date_or_timestamp_to_its_day_month_or_year(
    value: dt.date, grain: str, expected: tuple[dt.date, dt.date]
) -> None:
    assert widen(value, grain) == expected
    assert type(widen(value, grain)[0]) is type(value)


def test_widen_refuses_other_grains_and_values() -> None:
    with pytest.raises(ValueError, match="'week' is not a grain: use day, month, year"):
        widen(dt.date(2026, 1, 1), "week")
    with pytest.raises(TypeError, match="only dates and timestamps"):
        widen(5, "month")  # type: ignore[type-var]
