"""Reading an aggregate step's SQL: its group keys and aggregates, or why it cannot be maintained.

Contract: `analyze_sql(sql, input_alias)` returns an `Analysis` only for one SELECT over the one
relation `input_alias`, grouped by column references or deterministic expressions of columns, whose
output columns are each a group key or a deterministic expression of group keys and of the supported
aggregates (`SUPPORTED`), optionally with `WHERE`, `FILTER (WHERE ...)` and `HAVING`. Anything else
raises `NotIncrementalError`, whose message names the construct and why it cannot be kept from
inserted and deleted rows. The SQL is parsed by sqlglot in the DuckDB dialect, never by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from calve.errors import CalveError

SUPPORTED = "count(*), count(x), count(DISTINCT x), sum(x), avg(x), min(x), max(x), bool_and(x), bool_or(x)"

# why each SELECT clause other than the supported ones cannot be maintained
_CLAUSES = {
    "with_": "WITH (a common table expression): write the step as one SELECT over its input",
    "distinct": "SELECT DISTINCT: a row's presence would depend on other groups' rows",
    "joins": "a join (two relations): the state would depend on both sides' changes; use a filter-join",
    "laterals": "LATERAL: a second relation",
    "pivots": "PIVOT: its output columns depend on the data",
    "qualify": "QUALIFY: a window filter over all groups",
    "windows": "WINDOW: window functions see other groups' rows",
    "order": "ORDER BY: an incremental output is merged by key, so row order is not kept; sort when reading",
    "sort": "SORT BY: row order is not kept by a merge",
    "cluster": "CLUSTER BY: row order is not kept by a merge",
    "distribute": "DISTRIBUTE BY: not an aggregate clause",
    "limit": "LIMIT: which groups are kept depends on every group, not only the changed ones",
    "offset": "OFFSET: which groups are kept depends on every group, not only the changed ones",
    "sample": "a SAMPLE clause is random: the same rows would not give the same output",
    "into": "SELECT INTO: a step's SQL returns rows, it does not create tables",
    "prewhere": "PREWHERE: not a DuckDB clause",
    "connect": "CONNECT BY: a recursive query",
}
# functions whose result changes between runs: the state would mix values of different runs
_VOLATILE_CLASSES: tuple[type[exp.Expr], ...] = tuple(
    getattr(exp, name)
    for name in (
        *("Rand", "Randn", "Uuid", "CurrentDate", "CurrentTime", "CurrentTimestamp", "CurrentDatetime"),
        *("Localtime", "Localtimestamp", "CurrentTimestampLTZ"),
    )
    if hasattr(exp, name)
)
_VOLATILE_NAMES = frozenset(
    {
        *("random", "setseed", "uuid", "uuidv4", "uuidv7", "gen_random_uuid", "nextval", "currval", "setval"),
        *("now", "today", "current_date", "current_time", "current_timestamp", "current_localtime"),
        *("current_localtimestamp", "get_current_time", "get_current_timestamp", "transaction_timestamp"),
        *("txid_current", "current_query", "current_query_id", "current_transaction_id"),
        *("current_connection_id", "sleep_ms"),
    }
)
# names of the state's own columns (and of the output's delete column): a group key cannot take them
_RESERVED = re.compile(
    r"_rows|_set|_value_key|_count|_agg\d+|_a\d+_\w+|_v\d+|_d\d+|_min\d+|_max\d+|_calve_deleted|__calve.*",
    re.I,
)


class NotIncrementalError(CalveError):
    """The step's SQL cannot be maintained as an incremental aggregate; `reason` says which construct.

    The way out is the strategy the runner falls back to (filter-join, range overwrite or full
    recompute), or a rewrite of the SQL that the message suggests.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"not an incremental aggregate: {reason}")


@dataclass(frozen=True)
class Aggregate:
    """One aggregate call of the SQL. `argument` and `condition` have no table qualifiers."""

    kind: str  # count_star | count | count_distinct | sum | avg | min | max | bool_and | bool_or
    argument: exp.Expr | None  # None for count(*)
    condition: exp.Expr | None  # FILTER (WHERE ...)
    text: str  # as written, for explain()


@dataclass(frozen=True)
class Analysis:
    """What the SQL computes, in terms the incremental plan can evaluate.

    `keys` are (output name, expression over input columns). `outputs` and `having` are rewritten:
    each group key is a column named by its output name, each aggregate a column `_agg<i>` (its
    index in `aggregates`).
    """

    relation: str
    keys: tuple[tuple[str, exp.Expr], ...]
    aggregates: tuple[Aggregate, ...]
    where: exp.Expr | None
    outputs: tuple[tuple[str, exp.Expr], ...]
    having: exp.Expr | None
    having_text: str | None  # as written, for explain()


def analyze_sql(sql: str, input_alias: str) -> Analysis:
    """The `Analysis` of an aggregate over `input_alias`, or `NotIncrementalError` naming the obstacle."""
    select = _one_select(sql)
    for clause, why in _CLAUSES.items():
        if select.args.get(clause):
            raise NotIncrementalError(why)
    relation = _relation(select, input_alias)
    _refuse_anywhere(select)
    _strip_qualifiers(select, relation, input_alias)
    items = list(select.expressions)
    if any(
        isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star))
        for item in items
    ):
        raise NotIncrementalError("SELECT *: name the group keys and aggregates")
    names = [item.alias_or_name for item in items]
    for item, name in zip(items, names, strict=True):
        if not isinstance(item, exp.Alias | exp.Column):
            raise NotIncrementalError(
                f"output column {item.sql('duckdb')} has no name: write {item.sql('duckdb')} AS name "
                "(the output is merged into its table by column name)"
            )
        if name.lower() == "_calve_deleted":
            raise NotIncrementalError("output column '_calve_deleted': the name is kept for deleted groups")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise NotIncrementalError(f"output column(s) {', '.join(duplicates)} appear more than once")
    by_alias = {name.lower(): item.unalias() for item, name in zip(items, names, strict=True)}
    keys = _keys(select, items, names, by_alias)
    for name, _ in keys.values():
        if _RESERVED.fullmatch(name):
            raise NotIncrementalError(f"group key {name!r}: the state uses that name; rename the column")
    aggregates: list[Aggregate] = []
    key_names = {normal: name for normal, (name, _) in keys.items()}
    outputs = tuple(
        (name, _rewrite(item.unalias(), key_names, aggregates))
        for item, name in zip(items, names, strict=True)
    )
    having = select.args.get("having")
    having_text = having.this.sql("duckdb") if having is not None else None
    if having is not None:  # DuckDB lets HAVING name an output column: substitute its expression
        condition = having.this.transform(
            lambda n: (
                by_alias[n.name.lower()].copy()
                if isinstance(n, exp.Column) and n.name.lower() in by_alias and _normal(n) not in keys
                else n
            )
        )
        having = _rewrite(condition, {normal: name for normal, (name, _) in keys.items()}, aggregates)
    where = select.args.get("where")
    if where is not None and where.find(exp.AggFunc):
        raise NotIncrementalError("an aggregate in WHERE: filter groups with HAVING")
    where_condition = where.this if where is not None else None
    return Analysis(
        relation, tuple(keys.values()), tuple(aggregates), where_condition, outputs, having, having_text
    )


def _one_select(sql: str) -> exp.Select:
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise NotIncrementalError(f"the SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise NotIncrementalError(
            f"{len(statements)} statements: an incremental aggregate is one SELECT ... GROUP BY "
            "over its input"
        )
    statement = statements[0]
    if isinstance(statement, exp.SetOperation):
        raise NotIncrementalError(f"{statement.key.upper()}: several queries' rows, not one aggregate")
    if not isinstance(statement, exp.Select):
        raise NotIncrementalError(f"a {statement.key.upper()} statement, not a SELECT")
    if statement.args.get("group") is None:
        raise NotIncrementalError(
            "no GROUP BY: the output is one row with no key to merge on; add GROUP BY or recompute it"
        )
    return statement


def _relation(select: exp.Select, input_alias: str) -> str:
    """The name the SQL uses for its input (its alias, else the input's name)."""
    source = select.args["from_"].this if select.args.get("from_") else None
    if isinstance(source, exp.Subquery):
        raise NotIncrementalError("a subquery in FROM: aggregate the input directly")
    if not isinstance(source, exp.Table) or source.args.get("db") or not source.name:
        shown = source.sql("duckdb") if source else "nothing"
        raise NotIncrementalError(f"FROM {shown}: it must read the input {input_alias!r} itself")
    if source.name.lower() != input_alias.lower():
        raise NotIncrementalError(f"FROM {source.name}: the aggregate must read its input {input_alias!r}")
    return source.alias_or_name


def _refuse_anywhere(select: exp.Select) -> None:
    """Constructs that are refused wherever they appear."""
    for node in select.walk():
        if node is not select and isinstance(node, exp.Query | exp.Subquery):
            raise NotIncrementalError(
                f"a subquery ({node.sql('duckdb')}): its rows are not the input's changes"
            )
        if isinstance(node, exp.Window):
            raise NotIncrementalError(
                f"window function {node.sql('duckdb')}: its value for a row depends on other rows of the "
                "partition, which a changelog does not carry"
            )
        if isinstance(node, exp.Parameter | exp.Placeholder):
            raise NotIncrementalError(
                f"parameter {node.sql('duckdb')}: its value can change between runs, and the state kept "
                "from earlier runs would mix values; write the value in the SQL (a new SQL rebuilds "
                "the state)"
            )
        name = node.name.lower() if isinstance(node, exp.Anonymous) else None
        if isinstance(node, _VOLATILE_CLASSES) or name in _VOLATILE_NAMES:
            raise NotIncrementalError(
                f"non-deterministic function {node.sql('duckdb')}: rows aggregated in different runs "
                "would see different values"
            )


def _strip_qualifiers(select: exp.Select, relation: str, input_alias: str) -> None:
    allowed = {relation.lower(), input_alias.lower()}
    for column in select.find_all(exp.Column):
        if column.table:
            if column.table.lower() not in allowed or column.args.get("db"):
                raise NotIncrementalError(
                    f"column {column.sql('duckdb')} names a relation other than {relation!r}"
                )
            column.set("table", None)


def _normal(expression: exp.Expr) -> str:
    """A text that two spellings of one expression share (DuckDB identifiers ignore case)."""
    return normalize_identifiers(expression.copy(), dialect="duckdb").sql("duckdb")


def _keys(
    select: exp.Select, items: list[exp.Expr], names: list[str], by_alias: dict[str, exp.Expr]
) -> dict[str, tuple[str, exp.Expr]]:
    """Each group key's normal text -> (its output column name, its expression)."""
    group = select.args["group"]
    for clause in ("grouping_sets", "cube", "rollup", "totals"):
        if group.args.get(clause):
            raise NotIncrementalError(
                f"GROUP BY {clause.upper().replace('_', ' ')}: one output row per group is merged on its "
                "key; several groupings would need several outputs"
            )
    if group.args.get("all"):
        expressions = [item.unalias() for item in items if not _has_aggregate(item)]
    else:
        expressions = []
        for expression in group.expressions:
            if isinstance(expression, exp.Literal) and not expression.is_string:
                position = int(expression.this)
                if not 1 <= position <= len(items):
                    raise NotIncrementalError(f"GROUP BY {position}: there are {len(items)} output columns")
                expression = items[position - 1].unalias()
            elif isinstance(expression, exp.Column) and expression.name.lower() in by_alias:
                aliased = by_alias[expression.name.lower()]  # DuckDB lets GROUP BY name an output column
                if not _has_aggregate(aliased):
                    expression = aliased
            expressions.append(expression)
    if not expressions:
        raise NotIncrementalError("GROUP BY with no key: add GROUP BY or recompute it")
    output_names = {_normal(item.unalias()): name for item, name in zip(items, names, strict=True)}
    keys: dict[str, tuple[str, exp.Expr]] = {}
    for expression in expressions:
        if _has_aggregate(expression):
            raise NotIncrementalError(
                f"GROUP BY {expression.sql('duckdb')}: a group key cannot hold an aggregate"
            )
        if _normal(expression) not in output_names:
            raise NotIncrementalError(
                f"group key {expression.sql('duckdb')} is not an output column: the output is merged on its "
                f"group keys, so SELECT it (as a column of its own)"
            )
        keys[_normal(expression)] = (output_names[_normal(expression)], expression)
    return keys


def _has_aggregate(expression: exp.Expr) -> bool:
    return any(isinstance(node, exp.AggFunc) for node in expression.walk())


def _rewrite(expression: exp.Expr, keys: dict[str, str], aggregates: list[Aggregate]) -> exp.Expr:
    """`expression` with group keys and aggregates replaced by the columns that hold their values."""

    def visit(node: exp.Expr) -> exp.Expr:
        key = keys.get(_normal(node))
        if key is not None:
            return exp.column(key, quoted=True)
        if isinstance(node, exp.AggFunc | exp.Filter) or _is_duckdb_aggregate(node):
            aggregate = _aggregate(node)
            if aggregate not in aggregates:
                aggregates.append(aggregate)
            return exp.column(f"_agg{aggregates.index(aggregate)}", quoted=True)
        if isinstance(node, exp.Column):
            raise NotIncrementalError(
                f"column {node.sql('duckdb')} is neither a group key nor inside an aggregate"
            )
        return node

    return expression.copy().transform(visit, copy=False)


def _aggregate(node: exp.Expr) -> Aggregate:
    """The `Aggregate` of a call (with its FILTER), or the reason it is not supported."""
    text = node.sql("duckdb")
    condition = None
    if isinstance(node, exp.Filter):
        condition = node.expression.this if isinstance(node.expression, exp.Where) else node.expression
        node = node.this
    if any(isinstance(n, exp.Order) for n in node.walk()) or isinstance(node, exp.WithinGroup):
        raise NotIncrementalError(
            f"ordered aggregate {text}: its value depends on the order of all the group's rows; "
            f"supported: {SUPPORTED}"
        )
    if condition is not None and _has_aggregate(condition):
        raise NotIncrementalError(f"{text}: an aggregate inside FILTER (WHERE ...)")
    kinds: dict[type[exp.Expr], str] = {
        exp.Count: "count",
        exp.Sum: "sum",
        exp.Avg: "avg",
        exp.Min: "min",
        exp.Max: "max",
        exp.LogicalAnd: "bool_and",
        exp.LogicalOr: "bool_or",
    }
    kind = kinds.get(type(node))
    extra = [k for k, v in node.args.items() if k not in ("this", "big_int") and v]
    if kind is None or extra:
        raise NotIncrementalError(
            f"aggregate {text} cannot be maintained from inserted and deleted rows; supported: {SUPPORTED}"
        )
    argument = node.this
    if isinstance(argument, exp.Star):
        return Aggregate("count_star", None, condition, text)
    if isinstance(argument, exp.Distinct):
        if len(argument.expressions) != 1 or kind not in ("count", "min", "max"):
            raise NotIncrementalError(
                f"{text}: DISTINCT is supported in count(DISTINCT x) over one column, min and max"
            )
        argument = argument.expressions[0]
        kind = "count_distinct" if kind == "count" else kind
    if _has_aggregate(argument):
        raise NotIncrementalError(f"{text}: an aggregate inside an aggregate")
    return Aggregate(kind, argument, condition, text)


def _is_duckdb_aggregate(node: exp.Expr) -> bool:
    """An aggregate that sqlglot does not know (an `Anonymous` call DuckDB lists as an aggregate)."""
    if not isinstance(node, exp.Anonymous):
        return False
    from calve.aggregates._duck import is_aggregate_function

    return is_aggregate_function(node.name)
