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

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from calve.aggregates._analysis import Aggregate, Analysis, analyze_sql
from calve.aggregates._duck import query, quote
from calve.aggregates._state import (
    VALUE_KEYS,
    NeededValues,
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
        keys = plan.changed_groups(delta)                     # read the groups rows of these groups
        needed = plan.needed_values(delta, groups_rows)       # read needed.touched by whole key
        needed = plan.needed_values(delta, groups_rows, touched_rows)  # + needed.full_sets (rare)
        update = plan.apply(State(groups_rows, touched_rows + full_set_rows), delta)
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
        # per aggregate: SQL over g (the groups state), and the sum measure in it if any
        self._finals: list[tuple[str, str | None]] = []
        # groups columns kept from the values sets: _d<set> (distinct values), _min<set>, _max<set>
        self._derived: dict[str, tuple[int, str]] = {}  # column -> (value set, count_distinct|min|max)
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
            column = f"_d{value_set}" if kind == "count_distinct" else f"_{kind}{value_set}"
            self._derived.setdefault(column, (value_set, kind))
            final = f"g.{quote(column)}"
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
        """The group keys a delta touches: the groups state rows `apply` needs."""
        return query(
            f"SELECT DISTINCT {self._keys_sql()} FROM __calve_delta", {"__calve_delta": delta.groups}
        )

    def needed_values(
        self, delta: StateDelta, stored_groups: pa.Table | None, touched_rows: pa.Table | None = None
    ) -> NeededValues:
        """Which stored value rows `apply` needs: those whose key (group keys, `_set`, `_value_key`) the
        delta touches, and the whole value sets of the groups whose min or max goes away.

        `stored_groups` are the stored groups rows of `changed_groups(delta)`. A set is needed whole when
        the delta retracts a value equal to the group's stored min or max: without `touched_rows` (the
        stored rows of `touched`) every such retraction counts; with them, only those that leave the
        value at count 0 (the extreme is really gone and the next one must be found). Read `touched`
        first, then ask again with its rows.
        """
        if delta.values is None:
            return NeededValues(None, None)
        touched = delta.values.select(list(self.value_keys))
        if touched_rows is None or not self._extreme_sets:
            retracted = delta.values.filter(pc.less(delta.values["_count"], 0))
        else:
            summed = self._sum_values(touched_rows, delta.values)
            retracted = summed.filter(pc.equal(summed["_count"], 0))
        return NeededValues(touched, self._full_sets(retracted, stored_groups))

    def _full_sets(self, retracted: pa.Table, stored_groups: pa.Table | None) -> pa.Table:
        """(group keys, `_set`) of the value sets whose stored min or max is among `retracted` values."""
        columns = [*self.group_keys, "_set"]
        if not self._extreme_sets or stored_groups is None or not stored_groups.num_rows:
            return retracted.select(columns).slice(0, 0)
        matches = []
        for value_set in self._extreme_sets:
            extremes = [
                f"r._v{value_set} = g.{quote(c)}"
                for c, (s, kind) in self._derived.items()
                if s == value_set and kind in ("min", "max")
            ]
            matches.append(f"(r._set = {value_set} AND ({' OR '.join(extremes)}))")
        found = query(
            f"SELECT DISTINCT {self._keys_sql('r.')}, r._set FROM __calve_retracted AS r "
            f"JOIN __calve_groups AS g ON {self._same_keys('r', 'g')} WHERE {' OR '.join(matches)}",
            {"__calve_retracted": retracted, "__calve_groups": stored_groups},
        )
        return found.cast(retracted.select(columns).schema)

    @property
    def _extreme_sets(self) -> list[int]:
        return sorted({s for s, kind in self._derived.values() if kind in ("min", "max")})

    def _same_keys(self, left: str, right: str) -> str:
        return (
            " AND ".join(
                f"{left}.{quote(k)} IS NOT DISTINCT FROM {right}.{quote(k)}" for k in self.group_keys
            )
            or "true"
        )

    def apply(self, current: State | None, delta: StateDelta, whole_groups: bool = False) -> StateUpdate:
        """The changed groups' new state.

        `current` holds the stored groups rows of `changed_groups(delta)` and the stored value rows
        that `needed_values` lists (the touched ones, and the whole sets of groups whose min or max
        goes away); None (or empty tables) for nothing stored yet. Distinct counts follow the
        touched values' counts (0 -> above: one more; above -> 0: one less), min and max the touched
        values unless the extreme itself went away. With `whole_groups`, `current.values` holds every
        value row of the changed groups and the distinct counts, mins and maxes are recounted from
        them (the runner's repair after a crash between its commits).
        """
        stored = current.groups if current is not None and current.groups.num_rows else None
        stored_values = current.values if current is not None else None
        values = None
        if delta.values is not None:
            values = self._sum_values(stored_values, delta.values)
            self._check_counts(values, ["_count"])
        groups = self._sum_groups(stored, delta, values, whole_groups)
        self._check_counts(
            groups, [*self._counts, *(c for c, (_, k) in self._derived.items() if k == "count_distinct")]
        )
        alive = groups.filter(pc.greater(groups["_rows"], 0))
        gone = groups.filter(pc.equal(groups["_rows"], 0)).select(list(self.group_keys))
        if values is None:
            return StateUpdate(self.group_keys, State(alive, None), gone, None, None)
        kept = values.filter(pc.greater(values["_count"], 0))
        changed = kept.filter(kept["__calve_changed"]).drop_columns(["__calve_changed", "__calve_old"])
        gone_values = values.filter(pc.equal(values["_count"], 0)).select(list(self.value_keys))
        return StateUpdate(
            self.group_keys,
            State(alive, kept.drop_columns(["__calve_changed", "__calve_old"])),
            gone,
            changed,
            gone_values,
        )

    def _sum_values(self, current: pa.Table | None, delta: pa.Table) -> pa.Table:
        """Stored value rows + the delta's, per value key, in the delta's types, with `__calve_old` (the
        stored count, 0 if none) and `__calve_changed` (the delta has the key). A row read twice (a
        touched value that is also in a whole set) counts once."""
        value_columns = [f"_v{value_set}" for value_set in range(len(self._set_sql))]
        extra = [f"any_value({quote(c)}) AS {quote(c)}" for c in value_columns]
        source = "SELECT *, true AS __calve_changed FROM __calve_delta"
        tables = {"__calve_delta": delta}
        if current is not None and current.num_rows:
            source = (
                "SELECT *, false AS __calve_changed FROM (SELECT DISTINCT * FROM __calve_current) "
                f"UNION ALL BY NAME {source}"
            )
            tables["__calve_current"] = current
        result = query(
            f"SELECT {', '.join(map(quote, self.value_keys))}, {', '.join(extra)}, sum(_count) AS _count, "
            "coalesce(sum(_count) FILTER (WHERE NOT __calve_changed), 0) AS __calve_old, "
            f"bool_or(__calve_changed) AS __calve_changed FROM ({source}) GROUP BY ALL",
            tables,
        )
        schema = pa.schema(
            [*delta.schema, pa.field("__calve_old", pa.int64()), pa.field("__calve_changed", pa.bool_())]
        )
        return result.select(schema.names).cast(schema)

    def _sum_groups(
        self, stored: pa.Table | None, delta: StateDelta, values: pa.Table | None, whole_groups: bool
    ) -> pa.Table:
        """Stored groups rows + the delta's measures, per group, with the distinct counts, mins and
        maxes updated from the summed `values` (see `apply`)."""
        keys = self._keys_sql()
        measures = list(self._measures.values())
        derived = list(self._derived.items())
        tables = {"__calve_delta": delta.groups}
        branches = [f"SELECT {keys}, {', '.join(map(quote, measures))} FROM __calve_delta"]
        if stored is not None:
            tables["__calve_current"] = stored
            join = ""
            columns = [f"g.{quote(m)}" for m in measures]
            full = None
            if not whole_groups and values is not None and self._extreme_sets:
                full = self._full_sets(values.filter(pc.equal(values["_count"], 0)), stored)
            if full is not None and full.num_rows:
                tables["__calve_full"] = full
                flags = ", ".join(f"bool_or(_set = {s}) AS __calve_full{s}" for s in self._extreme_sets)
                join = (
                    f"LEFT JOIN (SELECT {keys}, {flags} FROM __calve_full GROUP BY ALL) AS f "
                    f"ON {self._same_keys('g', 'f')}"
                )
            for column, (value_set, kind) in derived:
                if whole_groups:
                    columns.append(f"NULL AS {quote(column)}")
                elif kind != "count_distinct" and join:
                    columns.append(
                        f"CASE WHEN f.__calve_full{value_set} THEN NULL ELSE g.{quote(column)} END "
                        f"AS {quote(column)}"
                    )
                else:
                    columns.append(f"g.{quote(column)}")
            branches.append(
                f"SELECT {self._keys_sql('g.')}, {', '.join(columns)} FROM __calve_current AS g {join}"
            )
        if values is not None and derived:
            tables["__calve_values"] = values
            columns = []
            for column, (value_set, kind) in derived:
                if kind != "count_distinct":
                    summary = f"{kind}(_v{value_set}) FILTER (WHERE _set = {value_set} AND _count > 0)"
                elif whole_groups:
                    summary = f"count(*) FILTER (WHERE _set = {value_set} AND _count > 0)"
                else:  # a value appearing adds one, a value gone removes one
                    summary = (
                        "sum(CASE WHEN __calve_old = 0 AND _count > 0 THEN 1 WHEN __calve_old > 0 AND "
                        f"_count = 0 THEN -1 ELSE 0 END) FILTER (WHERE _set = {value_set})"
                    )
                columns.append(f"{summary} AS {quote(column)}")
            branches.append(f"SELECT {keys}, {', '.join(columns)} FROM __calve_values GROUP BY ALL")
        summed = [f"sum({quote(m)}) AS {quote(m)}" for m in measures]
        summed += [
            f"coalesce(sum({quote(c)}), 0) AS {quote(c)}"
            if kind == "count_distinct"
            else f"{kind}({quote(c)}) AS {quote(c)}"
            for c, (_, kind) in derived
        ]
        result = query(
            f"SELECT {keys}, {', '.join(summed)} FROM ({' UNION ALL BY NAME '.join(branches)}) GROUP BY ALL",
            tables,
        )
        fields = list(delta.groups.schema)
        for column, (value_set, kind) in derived:
            if kind == "count_distinct":
                fields.append(pa.field(column, pa.int64()))
            else:
                assert delta.values is not None
                fields.append(pa.field(column, delta.values.schema.field(f"_v{value_set}").type))
        schema = pa.schema(fields)
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
        """The output rows of the groups in `state` (those with rows, and passing HAVING). Only the
        groups rows are read: they hold every aggregate's value (`state.values` may be None)."""
        tables = {"__calve_groups": state.groups}
        finals = []
        for index, (final, total) in enumerate(self._finals):
            if total is not None:
                integer = pa.types.is_integer(state.groups.schema.field(total[3:-1]).type)
                final = final.replace(_TOTAL, f"CAST({total} AS HUGEINT)" if integer else total)
            finals.append(f"{final} AS _agg{index}")
        columns = ", ".join([self._keys_sql("g."), *finals])
        aggregates = f"SELECT {columns} FROM __calve_groups AS g"
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
        for name, (value_set, kind) in self._derived.items():
            argument, condition = self._set_sql[value_set]
            what = {"count_distinct": "how many distinct values", "min": "the smallest", "max": "the largest"}
            meaning = f"{what[kind]} of _v{value_set} ({argument}" + (
                f" FILTER {condition}" if condition else ""
            )
            columns.append(StateColumn("groups", name, meaning + ") left in the values table"))
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
            "min": "the smallest value, kept per group; the multiset of values in the values table is read "
            "whole only when that value is gone",
            "max": "the largest value, kept per group; the multiset of values in the values table is read "
            "whole only when that value is gone",
            "count_distinct": "how many distinct values, kept per group: + when a value's count in the "
            "values table leaves 0, - when it returns to 0",
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
