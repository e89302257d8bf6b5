"""Property: an aggregate maintained round by round through delta/apply/merge equals a from-scratch run.

Random queries from the supported grammar (group keys, WHERE, FILTER, HAVING, every aggregate, an
expression of aggregates) over random change histories: inserts (also into old groups: late data),
deletes, updates (delete + insert), re-sent duplicates. The test plays the runner: it reads the
stored state of the changed groups, applies the delta, merges the `*_merge` tables into the stored
state and `output_merge` into the stored output, exactly as the Iceberg merges would (by key, with
the delete column). After every round the output must equal calve's DuckDB engine running the SQL
over the current rows (values and types), and the state must equal one rebuilt with `initial`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calve.aggregates import DELETE_COLUMN, AggregatePlan, State, analyze
from calve.engines.duckdb import DuckDBEngine

SCHEMA = pa.schema(
    [("g1", pa.int64()), ("g2", pa.string()), ("x", pa.int64()), ("s", pa.string()), ("b", pa.bool_())]
)
KEYS = {"g1": "g1", "g2": "g2", "parity": "g1 % 2", "g2n": "coalesce(g2, 'none')"}
AGGREGATES = [
    "count(*)", "count(x)", "sum(x)", "avg(x)", "min(x)", "max(x)", "min(s)", "max(s)", "count(DISTINCT s)",
    "count(DISTINCT x)", "bool_and(b)", "bool_or(b)", "max(b)",
]  # fmt: skip
EXPRESSIONS = ["sum(x) / count(*)", "max(x) - min(x)", "count(DISTINCT s) + count(x)"]
CONDITIONS = ["x > 0", "b", "s <> 'p'", "g1 IS NULL", "x IS NULL OR x > -2"]
ENGINE = DuckDBEngine()


@st.composite
def queries(draw: st.DrawFn) -> str:
    keys = draw(st.lists(st.sampled_from(sorted(KEYS)), min_size=1, max_size=2, unique=True))
    columns = [KEYS[k] if KEYS[k] == k else f"{KEYS[k]} AS {k}" for k in keys]
    for index in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            aggregate = draw(st.sampled_from(AGGREGATES))
            if draw(st.integers(0, 2)) == 0:
                aggregate += f" FILTER (WHERE {draw(st.sampled_from(CONDITIONS))})"
        else:
            aggregate = draw(st.sampled_from(EXPRESSIONS))
        columns.append(f"{aggregate} AS a{index}")
    style = draw(st.sampled_from(["names", "positions", "all"]))
    group = {
        "names": ", ".join(KEYS[k] for k in keys),
        "positions": ", ".join(str(i + 1) for i in range(len(keys))),
        "all": "ALL",
    }[style]
    where = f" WHERE {draw(st.sampled_from(CONDITIONS))}" if draw(st.booleans()) else ""
    having = " HAVING count(*) > 1" if draw(st.integers(0, 3)) == 0 else ""
    return f"SELECT {', '.join(columns)} FROM events{where} GROUP BY {group}{having}"


rows = st.fixed_dictionaries(
    {
        "g1": st.one_of(st.none(), st.integers(0, 2)),
        "g2": st.one_of(st.none(), st.sampled_from(["a", "b"])),
        "x": st.one_of(st.none(), st.integers(-3, 3)),
        "s": st.one_of(st.none(), st.sampled_from(["p", "q", "r"])),
        "b": st.one_of(st.none(), st.booleans()),
    }
)
rounds = st.fixed_dictionaries(
    {
        "inserts": st.lists(rows, max_size=6),
        "deletes": st.lists(st.integers(0, 1000), max_size=4),
        "updates": st.lists(st.tuples(st.integers(0, 1000), rows), max_size=3),
        "resent": st.lists(st.integers(0, 1000), max_size=3),
    }
)


def _key(row: dict[str, Any], names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(row[n] for n in names)


class StoredTable:
    """A table merged by key as the runner's Iceberg merge does: upsert, or delete with DELETE_COLUMN."""

    def __init__(self, keys: tuple[str, ...], strict: bool = True) -> None:
        self.keys = keys
        self.strict = strict  # a state table never deletes a key it does not hold; an output may (HAVING)
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.schema: pa.Schema | None = None

    def merge(self, changes: pa.Table) -> None:
        self.schema = self.schema or changes.drop_columns([DELETE_COLUMN]).schema
        for row in changes.to_pylist():
            deleted = row.pop(DELETE_COLUMN)
            if deleted:
                found = self.rows.pop(_key(row, self.keys), None)
                assert found is not None or not self.strict, "deleting a row never written"
            else:
                self.rows[_key(row, self.keys)] = row

    def table(self, only: set[tuple[Any, ...]] | None = None, group_keys: int = 0) -> pa.Table | None:
        if self.schema is None:
            return None
        kept = [r for k, r in self.rows.items() if only is None or k[: group_keys or len(k)] in only]
        return pa.Table.from_pylist(kept, schema=self.schema)

    def rows_of_keys(self, keys: pa.Table) -> pa.Table | None:
        """The rows whose values in `keys`' columns are a row of `keys` (as read_rows_of_keys; NULLs
        match here, as the runner's null-safe reads must)."""
        if self.schema is None:
            return None
        wanted = {tuple(r.values()) for r in keys.to_pylist()}
        kept = [r for r in self.rows.values() if tuple(r[c] for c in keys.column_names) in wanted]
        return pa.Table.from_pylist(kept, schema=self.schema)


def _sorted(table: pa.Table) -> list[tuple[Any, ...]]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def _check_state(plan: AggregatePlan, groups: StoredTable, values: StoredTable, current: pa.Table) -> None:
    rebuilt = plan.initial(current)
    assert _sorted(groups.table() or rebuilt.groups.slice(0, 0)) == _sorted(rebuilt.groups)
    if rebuilt.values is not None:
        stored = values.table()
        stored_rows = _sorted(stored.select(rebuilt.values.schema.names)) if stored is not None else []
        assert stored_rows == _sorted(rebuilt.values)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sql=queries(), history=st.lists(rounds, min_size=1, max_size=6))
def test_maintained_output_equals_a_recomputation(sql: str, history: list[dict[str, Any]]) -> None:
    plan = analyze(sql, "events")
    groups, values = StoredTable(plan.group_keys), StoredTable(plan.value_keys)
    output = StoredTable(plan.group_keys, strict=False)
    current: list[dict[str, Any]] = []
    for change in history:
        inserted, deleted = list(change["inserts"]), []
        for position in change["deletes"]:
            if current:
                deleted.append(current.pop(position % len(current)))
        for position, new in change["updates"]:
            if current:
                deleted.append(current.pop(position % len(current)))
                inserted.append(new)
        inserted += [dict(current[p % len(current)]) for p in change["resent"] if current]
        current += inserted

        delta = plan.delta(
            pa.Table.from_pylist(inserted, schema=SCHEMA), pa.Table.from_pylist(deleted, schema=SCHEMA)
        )
        changed = {_key(r, plan.group_keys) for r in plan.changed_groups(delta).to_pylist()}
        stored_groups = groups.table(changed)
        stored = None
        if stored_groups is not None:
            # only the value rows the delta touches, and whole sets where a min or max goes away
            needed = plan.needed_values(delta, stored_groups)
            stored_values = None
            if needed.touched is not None:
                touched = values.rows_of_keys(needed.touched)
                narrowed = plan.needed_values(delta, stored_groups, touched)
                assert narrowed.full_sets is not None and needed.full_sets is not None
                assert set(_sorted(narrowed.full_sets)) <= set(_sorted(needed.full_sets))
                whole = values.rows_of_keys(narrowed.full_sets)
                parts = [t for t in (touched, whole) if t is not None]
                stored_values = pa.concat_tables(parts) if parts else None
            stored = State(stored_groups, stored_values)
        update = plan.apply(stored, delta)
        if stored_groups is not None:  # the repair path: every value row of the changed groups, recounted
            whole_groups = State(stored_groups, values.table(changed, len(plan.group_keys)))
            repaired = plan.apply(whole_groups, delta, whole_groups=True)
            assert _sorted(repaired.groups_merge()) == _sorted(update.groups_merge()), sql
        groups.merge(update.groups_merge())
        values_merge = update.values_merge()
        if values_merge is not None:
            values.merge(values_merge)
        output.merge(plan.output_merge(update))

        current_table = pa.Table.from_pylist(current, schema=SCHEMA)
        expected = ENGINE.run(sql, {"events": current_table}, {})
        assert expected is not None
        maintained = output.table()
        assert maintained is not None
        assert maintained.schema == expected.schema, sql
        assert _sorted(maintained) == _sorted(expected), sql
        _check_state(plan, groups, values, current_table)
