"""The plan's contract on examples: output types as calve's engine gives them, vanishing groups, the
changelog form of the input, a state that does not match its changes, and the cost estimate."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from calve.aggregates import DELETE_COLUMN, State, StateMismatchError, analyze
from calve.engines.duckdb import DuckDBEngine

TYPED = pa.table(
    {
        "k": pa.array(["a", "a", "b", None], pa.string()),
        "i32": pa.array([1, 2, None, 4], pa.int32()),
        "i64": pa.array([10, None, 30, 40], pa.int64()),
        "dec": pa.array([Decimal("1.25"), Decimal("2.50"), None, Decimal("0.10")], pa.decimal128(10, 2)),
        "f": pa.array([0.5, 1.5, 2.5, None], pa.float64()),
        "day": pa.array([dt.date(2026, 1, 2), None, dt.date(2026, 1, 1), dt.date(2026, 1, 3)], pa.date32()),
        "flag": pa.array([True, None, False, True], pa.bool_()),
    }
)
TYPED_SQL = """
SELECT k, count(*) AS n, count(i64) AS n_i64, sum(i32) AS s32, sum(i64) AS s64, sum(dec) AS sdec,
       sum(f) AS sf, avg(i64) AS a64, avg(dec) AS adec, min(day) AS first_day, max(day) AS last_day,
       count(DISTINCT day) AS days, bool_and(flag) AS every, sum(i64) * 2 AS twice,
       sum(i64) / count(*) AS mean
FROM events GROUP BY k
"""


def _sorted(table: pa.Table) -> list[tuple[object, ...]]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def test_output_types_and_values_are_the_engines() -> None:
    plan = analyze(TYPED_SQL, "events")
    expected = DuckDBEngine().run(TYPED_SQL, {"events": TYPED}, {})
    assert expected is not None
    rebuilt = plan.finalize(plan.initial(TYPED))
    assert rebuilt.schema == expected.schema
    assert _sorted(rebuilt) == _sorted(expected)
    assert rebuilt.schema.field("s64").type == pa.int64()  # HUGEINT in DuckDB, BIGINT in calve
    assert rebuilt.schema.field("sdec").type == pa.decimal128(38, 2)

    # the same rows reached incrementally: all inserted, then two deleted and inserted again
    update = plan.apply(None, plan.delta(TYPED))
    again = plan.apply(update.state, plan.delta(TYPED.slice(0, 2), TYPED.slice(0, 2)))
    incremental = plan.finalize(again.state)
    assert incremental.schema == expected.schema
    assert _sorted(incremental) == _sorted(expected)


def test_a_group_without_rows_is_deleted_from_the_output_and_the_state() -> None:
    plan = analyze("SELECT k, max(i64) AS hi FROM events GROUP BY k", "events")
    state = plan.initial(TYPED)
    b = TYPED.slice(2, 1)  # the only row of group 'b'
    update = plan.apply(state, plan.delta(TYPED.slice(0, 0), b))
    assert update.gone_groups.to_pylist() == [{"k": "b"}]
    merge = plan.output_merge(update)
    assert merge.column_names == ["k", "hi", DELETE_COLUMN]
    deleted = {r["k"]: r[DELETE_COLUMN] for r in merge.to_pylist()}
    assert deleted == {"a": False, None: False, "b": True}
    groups = {r["k"]: r[DELETE_COLUMN] for r in update.groups_merge().to_pylist()}
    assert groups["b"] is True
    values = update.values_merge()
    assert values is not None
    assert [(r["k"], r["_value_key"], r[DELETE_COLUMN]) for r in values.to_pylist()] == [("b", "30", True)]


def test_max_is_retracted_to_the_next_value() -> None:
    plan = analyze("SELECT k, max(i64) AS hi, count(DISTINCT i64) AS n FROM events GROUP BY k", "events")
    rows = pa.table({"k": ["a", "a", "a"], "i64": [5, 9, 9]})
    state = plan.initial(rows)
    update = plan.apply(state, plan.delta(rows.slice(0, 0), rows.slice(1, 1)))  # one 9 of two
    assert plan.finalize(update.state).to_pylist() == [{"k": "a", "hi": 9, "n": 2}]
    update = plan.apply(update.state, plan.delta(rows.slice(0, 0), rows.slice(2, 1)))  # the other 9
    assert plan.finalize(update.state).to_pylist() == [{"k": "a", "hi": 5, "n": 1}]


def test_delta_from_a_changelog() -> None:
    plan = analyze("SELECT k, count(*) AS n FROM events GROUP BY k", "events")
    changelog = pa.table({"k": ["a", "a", "b"], "_change_type": ["insert", "delete", "insert"]})
    delta = plan.delta_from_changelog(changelog)
    assert sorted(delta.groups.select(["k", "_rows"]).to_pylist(), key=repr) == [
        {"k": "a", "_rows": 0},
        {"k": "b", "_rows": 1},
    ]


def test_deleting_rows_the_state_never_saw_is_refused() -> None:
    plan = analyze("SELECT k, min(i64) AS lo FROM events GROUP BY k", "events")
    with pytest.raises(StateMismatchError, match=r"initial\(full_input\)"):
        plan.apply(None, plan.delta(TYPED.slice(0, 0), TYPED.slice(0, 1)))


def test_state_columns_and_estimate() -> None:
    plan = analyze(
        "SELECT k, sum(i64) AS s, avg(i64) AS a, count(DISTINCT day) AS days FROM events GROUP BY k", "events"
    )
    names = [(c.table, c.name) for c in plan.state_columns]
    assert names == [
        ("groups", "k"),
        ("groups", "_rows"),
        ("groups", "_a0_count"),  # shared by sum and avg of the same column
        ("groups", "_a0_sum"),
        ("groups", "_d0"),  # the distinct days, kept per group
        ("values", "k"),
        ("values", "_set"),
        ("values", "_value_key"),
        ("values", "_v0"),
        ("values", "_count"),
    ]
    assert plan.value_keys == ("k", "_set", "_value_key")
    state = plan.initial(TYPED)
    assert state.values is not None
    assert [c.name for c in plan.state_columns if c.table == "groups"] == state.groups.column_names

    many = pa.table({"k": ["a"] * 1000, "i64": list(range(1000)), "day": [dt.date(2026, 1, 1)] * 1000})
    estimate = plan.estimate(many)
    assert (estimate.input_rows, estimate.groups, estimate.value_rows) == (1000, 1, 1)
    assert estimate.incremental_is_cheaper
    distinct = plan.estimate(
        many.set_column(2, "day", pa.array([dt.date(2026, 1, 1) + dt.timedelta(i) for i in range(1000)]))
    )
    assert distinct.state_rows_per_group == 1001
    assert not distinct.incremental_is_cheaper


def test_state_tables_round_trip_through_plain_arrow() -> None:
    """The state is plain Arrow: what a runner stores and reads back (here via Python lists) works."""
    plan = analyze("SELECT k, min(day) AS first, bool_or(flag) AS any_flag FROM events GROUP BY k", "events")
    state = plan.initial(TYPED)
    assert state.values is not None
    stored = State(
        pa.Table.from_pylist(state.groups.to_pylist(), schema=state.groups.schema),
        pa.Table.from_pylist(state.values.to_pylist(), schema=state.values.schema),
    )
    assert _sorted(plan.finalize(stored)) == _sorted(plan.finalize(state))
