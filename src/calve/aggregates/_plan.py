"""An aggregate step maintained from its input's changelog: delta, apply, finalize.

Contract: for any history of inserted and deleted rows, starting from `initial(rows)` (or from no
state) and applying each change with `apply(state of the changed groups, delta(inserted, deleted))`,
`finalize` of the changed groups' state gives exactly the rows that the step's SQL gives over the
current input for those groups: same column names, same types (DuckDB's, with 128-bit integers as
BIGINT like calve's engine), NULLs as in SQL; a group left with no row (or failing HAVING) is
listed for deletion by `output_merge`. Sums and averages of floating-point columns are exact up to
rounding (the order of additions differs). Every computation reads only the changed rows and the
changed groups' state, in DuckDB.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from calve.aggregates._analysis import Aggregate, Analysis, analyze_sql
from calve.aggregates._duck import query, quote
from calve.aggregates._state import (
    VALUE_KEYS,
    State,
    StateDelta,
    StateMismatchError,
    StateUpdate,
    with_deletes,
)

_SIGN = "__calve_sign"  # +1 for an inserted row, -1 for a deleted one
_TOTAL = "__calve_total__"  # in a sum's final SQL, where its sum measure goes
_CHANGES = (
    f"(SELECT *, 1 AS {_SIGN} FROM __calve_inserted "
    f"UNION ALL BY NAME SELECT *, -1 AS {_SIGN} FROM __calve_deleted) AS __calve_changes"
)


@dataclass(frozen=True)
class StateColumn:
    """A column of a state table, for `calve explain` and for creating the table."""

    table: str  # "groups" or "values"
    name: str
    meaning: str


@dataclass(frozen=True)
class StateEstimate:
    """The size of the state against the size of the input, measured on a sample of the input.

    Re-aggregating a changed group (filter-join) reads its `input_rows_per_group`; maintaining it
    reads and rewrites its `state_rows_per_group`. The rule of docs/incremental-aggregates.md:
    incremental when the state of a group is at most a quarter of its rows.
    """

    input_rows: int
    groups: int
    value_rows: int

    @property
    def input_rows_per_group(self) -> float:
        return self.input_rows / max(self.groups, 1)

    @property
    def state_rows_per_group(self) -> float:
        return (self.groups + self.value_rows) / max(self.groups, 1)

    @property
    def incremental_is_cheaper(self) -> bool:
        return 4 * self.state_rows_per_group <= self.input_rows_per_group


def analyze(sql: str, input_alias: str) -> AggregatePlan:
    """The incremental plan of an aggregate step over its input `input_alias`.

    Raises `NotIncrementalError` (with the construct and why) when the SQL cannot be maintained.
    """
    return AggregatePlan(sql, input_alias, analyze_sql(sql, input_alias))


class AggregatePlan:
    """How to keep one aggregate step's output from its input's changes (build it with `analyze`).

    Usage, per run (the runner reads and merges the Iceberg tables; everything here is Arrow in, Arrow out):

        delta = plan.delta(inserted, deleted)                 # or plan.delta_from_changelog(rows)
        keys = plan.changed_groups(delta)                     # read the state rows of these groups
        update = plan.apply(State(groups_rows, value_rows), delta)
        merge update.groups_merge() into the groups state on plan.group_keys
        merge update.values_merge() into the values state on plan.value_keys
        merge plan.output_merge(update) into the output on plan.group_keys (delete_column DELETE_COLUMN)
    """

    def __init__(self, sql: str, input_alias: str, analysis: Analysis) -> None:
        self.sql = sql
        self.input_alias = input_alias
        self.analysis = analysis
        self.group_keys = tuple(name for name, _ in analysis.keys)
        self.value_keys = (*self.group_keys, *VALUE_KEYS)
        self.output_columns = tuple(name for name, _ in analysis.outputs)
        self._measures: dict[str, str] = {f"coalesce(sum({_SIGN}), 0)": "_rows"}  # delta SQL -> column
        self._meanings: dict[str, str] = {"_rows": "input rows of the group (that pass WHERE)"}
        self._counts = ["_rows"]  # measures that are counts: never below zero
        self._sets: dict[tuple[str, str], int] = {}  # (argument, condition) -> value set id
        self._set_sql: list[tuple[str, str]] = []  # per value set: (argument, condition)
        # per aggregate: SQL over g (groups) and v (value summaries), and the sum measure in it if any
        self._finals: list[tuple[str, str | None]] = []
        self._summaries: list[str] = []  # SQL over the values table, per set aggregate
        for index, aggregate in enumerate(analysis.aggregates):
            self._add(index, aggregate)

    # -- building the SQL -------------------------------------------------------------------------

    def _add(self, index: int, aggregate: Aggregate) -> None:
        argument = aggregate.argument.sql("duckdb") if aggregate.argument is not None else ""
        condition = aggregate.condition.sql("duckdb") if aggregate.condition is not None else ""

        def where(*extra: str) -> str:
            return " AND ".join(f"({c})" for c in (condition, *extra) if c) or "true"

        def measure(role: str, sql: str, meaning: str, count: bool = True) -> str:
            name = self._measures.setdefault(f"coalesce({sql}, 0)", f"_a{index}_{role}")
            self._meanings.setdefault(name, meaning + (f" (FILTER {condition})" if condition else ""))
            if count and name not in self._counts:
                self._counts.append(name)
            return f"g.{quote(name)}"

        def count_of(*extra: str, meaning: str, role: str = "count") -> str:
            return measure(role, f"sum({_SIGN}) FILTER (WHERE {where(*extra)})", meaning)

        kind = aggregate.kind
        if kind == "count_star":
            final = count_of(meaning="rows") if condition else 'g."_rows"'
        elif kind == "count":
            final = count_of(f"{argument} IS NOT NULL", meaning=f"non-null values of {argument}")
        elif kind in ("sum", "avg"):
            n = count_of(f"{argument} IS NOT NULL", meaning=f"non-null values of {argument}")
            signed = f"CASE WHEN {_SIGN} > 0 THEN {argument} ELSE -({argument}) END"
            total = measure(
                "sum",
                f"sum({signed}) FILTER (WHERE {where(f'{argument} IS NOT NULL')})",
                f"sum of {argument}",
                count=False,
            )
            if kind == "avg":
                final = f"CASE WHEN {n} > 0 THEN CAST({total} AS DOUBLE) / {n} END"
            else:  # _TOTAL is typed in finalize: an integer sum is a HUGEINT in DuckDB
                self._finals.append((f"CASE WHEN {n} > 0 THEN {_TOTAL} END", total))
                return
        elif kind in ("bool_and", "bool_or"):
            true = count_of(f"{argument}", meaning=f"rows where {argument} is true", role="true")
            false = count_of(f"NOT ({argument})", meaning=f"rows where {argument} is false", role="false")
            first, then = (false, "false") if kind == "bool_and" else (true, "true")
            other, otherwise = (true, "true") if kind == "bool_and" else (false, "false")
            final = f"CASE WHEN {first} > 0 THEN {then} WHEN {other} > 0 THEN {otherwise} END"
        else:  # min, max, count_distinct: a multiset of values per group
            value_set = self._sets.setdefault((argument, condition), len(self._sets))
            if value_set == len(self._set_sql):
                self._set_sql.append((argument, condition))
            summary = "count(*)" if kind == "count_distinct" else f"{kind}(_v{value_set})"
            self._summaries.append(f"{summary} FILTER (WHERE _set = {value_set}) AS _agg{index}")
            final = f"coalesce(v._agg{index}, 0)" if kind == "count_distinct" else f"v._agg{index}"
        self._finals.append((final, None))

    def _keys_sql(self, prefix: str = "") -> str:
        return ", ".join(prefix + quote(name) for name in self.group_keys)

    # -- the API ----------------------------------------------------------------------------------

    def delta(self, inserted: pa.Table, deleted: pa.Table | None = None) -> StateDelta:
        """The change to the state from inserted and deleted input rows (the same columns as the input)."""
        tables = {
            "__calve_inserted": inserted,
            "__calve_deleted": inserted.slice(0, 0) if deleted is None else deleted,
        }
        keys = ", ".join(
            f"{expression.sql('duckdb')} AS {quote(name)}" for name, expression in self.analysis.keys
        )
        where = self.analysis.where.sql("duckdb") if self.analysis.where is not None else "true"
        measures = ", ".join(f"{sql} AS {quote(name)}" for sql, name in self._measures.items())
        groups = query(f"SELECT {keys}, {measures} FROM {_CHANGES} WHERE {where} GROUP BY ALL", tables)
        values = None
        if self._set_sql:
            per_set = [
                f"SELECT {keys}, {value_set} AS _set, CAST({argument} AS VARCHAR) AS _value_key, "
                f"{argument} AS _v{value_set}, sum({_SIGN}) AS _count FROM {_CHANGES} "
                f"WHERE ({where}) AND ({condition or 'true'}) AND ({argument}) IS NOT NULL "
                f"GROUP BY ALL HAVING sum({_SIGN}) <> 0"
                for value_set, (argument, condition) in enumerate(self._set_sql)
            ]
            values = query(" UNION ALL BY NAME ".join(per_set), tables)
        return StateDelta(groups, values)

    def delta_from_changelog(self, changelog: pa.Table) -> StateDelta:
        """`delta` of `read: changelog` rows: `_change_type` says `insert` or `delete`."""
        kind = changelog["_change_type"]
        rows = changelog.drop_columns(["_change_type"])
        return self.delta(rows.filter(pc.equal(kind, "insert")), rows.filter(pc.equal(kind, "delete")))

    def changed_groups(self, delta: StateDelta) -> pa.Table:
        """The group keys a delta touches: the state rows `apply` needs (groups, and all their values)."""
        return query(
            f"SELECT DISTINCT {self._keys_sql()} FROM __calve_delta", {"__calve_delta": delta.groups}
        )

    def apply(self, current: State | None, delta: StateDelta) -> StateUpdate:
        """The changed groups' new state. `current` must hold every stored row of the changed groups
        (their groups rows, and all of their values rows): finalize recomputes min, max and
        count(DISTINCT) from them. None (or empty tables) for groups not stored yet.
        """
        groups = self._sum_into(current.groups if current else None, delta.groups, self._measures.values())
        self._check_counts(groups, self._counts)
        alive = groups.filter(pc.greater(groups["_rows"], 0))
        gone = groups.filter(pc.equal(groups["_rows"], 0)).select(list(self.group_keys))
        if delta.values is None:
            return StateUpdate(self.group_keys, State(alive, None), gone, None, None)
        value_columns = [f"_v{value_set}" for value_set in range(len(self._set_sql))]
        values = self._sum_into(
            current.values if current else None, delta.values, ["_count"], any_value=value_columns
        )
        self._check_counts(values, ["_count"])
        kept = values.filter(pc.greater(values["_count"], 0))
        changed = kept.filter(kept["__calve_changed"]).drop_columns(["__calve_changed"])
        gone_values = values.filter(pc.equal(values["_count"], 0)).select(list(self.value_keys))
        return StateUpdate(
            self.group_keys, State(alive, kept.drop_columns(["__calve_changed"])), gone, changed, gone_values
        )

    def _sum_into(
        self,
        current: pa.Table | None,
        delta: pa.Table,
        sums: Iterable[str],
        any_value: list[str] | None = None,
    ) -> pa.Table:
        """current + delta, summed per key (the group keys; the value keys when `any_value` is given),
        in the delta's types; with `any_value`, also `__calve_changed`: whether the delta has the key."""
        extra = [f"any_value({quote(c)}) AS {quote(c)}" for c in any_value or []]
        summed = [f"sum({quote(c)}) AS {quote(c)}" for c in sums]
        flag = ", bool_or(__calve_changed) AS __calve_changed" if any_value is not None else ""
        source = "SELECT *, true AS __calve_changed FROM __calve_delta"
        tables = {"__calve_delta": delta}
        if current is not None:
            source = f"SELECT *, false AS __calve_changed FROM __calve_current UNION ALL BY NAME {source}"
            tables["__calve_current"] = current
        keys = self.value_keys if any_value is not None else self.group_keys
        result = query(
            f"SELECT {', '.join(map(quote, keys))}, {', '.join(extra + summed)}{flag} "
            f"FROM ({source}) GROUP BY ALL",
            tables,
        )
        schema = pa.schema([*delta.schema, *([pa.field("__calve_changed", pa.bool_())] if flag else [])])
        return result.select(schema.names).cast(schema)

    def _check_counts(self, table: pa.Table, counts: list[str]) -> None:
        for name in counts:
            if table.num_rows and pc.min(table[name]).as_py() < 0:
                raise StateMismatchError(
                    f"the state's {name} went below zero for some group: the changes do not match the "
                    "state (a change applied twice, or the state built from other rows); rebuild the "
                    "state with AggregatePlan.initial(full_input)"
                )

    def finalize(self, state: State) -> pa.Table:
        """The output rows of the groups in `state` (those with rows, and passing HAVING)."""
        tables = {"__calve_groups": state.groups}
        finals = []
        for index, (final, total) in enumerate(self._finals):
            if total is not None:
                integer = pa.types.is_integer(state.groups.schema.field(total[3:-1]).type)
                final = final.replace(_TOTAL, f"CAST({total} AS HUGEINT)" if integer else total)
            finals.append(f"{final} AS _agg{index}")
        join = ""
        if self._summaries and state.values is not None:
            tables["__calve_values"] = state.values
            on = " AND ".join(f"g.{quote(k)} IS NOT DISTINCT FROM v.{quote(k)}" for k in self.group_keys)
            join = (
                f"LEFT JOIN (SELECT {self._keys_sql()}, {', '.join(self._summaries)} FROM __calve_values "
                f"GROUP BY ALL) AS v ON {on}"
            )
        columns = ", ".join([self._keys_sql("g."), *finals])
        aggregates = f"SELECT {columns} FROM __calve_groups AS g {join}"
        outputs = ", ".join(
            f"{expression.sql('duckdb')} AS {quote(name)}" for name, expression in self.analysis.outputs
        )
        having = self.analysis.having
        condition = f" AND ({having.sql('duckdb')})" if having is not None else ""
        return query(
            f"SELECT {outputs} FROM ({aggregates} WHERE g._rows > 0) AS a WHERE true{condition}", tables
        )

    def output_merge(self, update: StateUpdate) -> pa.Table:
        """The rows to merge into the output on `group_keys`: every changed group, `DELETE_COLUMN` true
        for those that have no output row any more (no rows left, or failing HAVING)."""
        output = self.finalize(update.state)
        keys = self._keys_sql()
        deleted = query(
            f"SELECT {keys} FROM __calve_alive UNION ALL SELECT {keys} FROM __calve_gone "
            f"EXCEPT SELECT {keys} FROM __calve_output",
            {
                "__calve_alive": update.state.groups,
                "__calve_gone": update.gone_groups,
                "__calve_output": output,
            },
        )
        return with_deletes(output, deleted)

    def initial(self, full_input: pa.Table) -> State:
        """The state of every group, rebuilt from all the input's rows (first run, repair, new SQL)."""
        return self.apply(None, self.delta(full_input)).state

    def estimate(self, sample: pa.Table) -> StateEstimate:
        """State size against input size, from a sample of the input (whole groups: sample by key)."""
        delta = self.delta(sample)
        value_rows = delta.values.num_rows if delta.values is not None else 0
        return StateEstimate(sample.num_rows, delta.groups.num_rows, value_rows)

    @property
    def state_columns(self) -> tuple[StateColumn, ...]:
        """The state tables' columns and what each holds (types come from the first delta)."""
        columns = [StateColumn("groups", k, "group key") for k in self.group_keys]
        columns += [StateColumn("groups", name, self._meanings[name]) for name in self._measures.values()]
        if self._set_sql:
            columns += [StateColumn("values", k, "group key") for k in self.group_keys]
            columns += [
                StateColumn("values", "_set", "which value set (see _v<set>)"),
                StateColumn("values", "_value_key", "the value as text (the merge key)"),
            ]
            columns += [
                StateColumn("values", f"_v{s}", f"a non-null value of {a}" + (f" (FILTER {c})" if c else ""))
                for s, (a, c) in enumerate(self._set_sql)
            ]
            columns.append(StateColumn("values", "_count", "input rows holding the value"))
        return tuple(columns)

    def explain(self) -> str:
        """What is maintained and how, in words."""
        lines = [
            f"incremental aggregate over {self.input_alias}, grouped by {', '.join(self.group_keys)}",
            f"  rows: {self.analysis.where.sql('duckdb')}"
            if self.analysis.where is not None
            else "  rows: all",
        ]
        how = {
            "count_star": "a count, + per inserted row and - per deleted one",
            "count": "a count of non-null values, + and -",
            "sum": "a sum and a count of non-null values (NULL when the count is 0), + and -",
            "avg": "a sum and a count of non-null values, divided when read",
            "bool_and": "counts of true and of false values, + and -",
            "bool_or": "counts of true and of false values, + and -",
            "min": "the multiset of values in the values table, smallest of those left",
            "max": "the multiset of values in the values table, largest of those left",
            "count_distinct": "the multiset of values in the values table, how many are left",
        }
        for index, aggregate in enumerate(self.analysis.aggregates):
            lines.append(f"  _agg{index} = {aggregate.text}: {how[aggregate.kind]}")
        if self.analysis.having is not None:
            lines.append(
                f"  HAVING {self.analysis.having_text}: groups failing it are deleted from the output"
            )
        lines.append("  state:")
        lines += [f"    {c.table}.{c.name}: {c.meaning}" for c in self.state_columns]
        lines.append(f"  output merged on {', '.join(self.group_keys)}; a group with no rows left is deleted")
        return "\n".join(lines)
