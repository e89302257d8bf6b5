"""A step's SQL, written for DuckDB, made into SQL that Daft runs: rewrites, bound values, the reach rule.

Workflow files are written once, in DuckDB's dialect; the Daft and Ray engines run them unchanged.
`translate` parses each statement with sqlglot (DuckDB dialect) and:

- rewrites the constructs that Daft 0.7 spells differently, with the same meaning: `QUALIFY` (to a
  subquery), an aggregate's `FILTER (WHERE c)` (to `agg(CASE WHEN c THEN x ELSE NULL END)`), a plain
  `trim(x)` (to `strip(x)`), a `CASE` with no `ELSE` (an explicit `ELSE NULL`);
- binds every `$name` as a literal built by sqlglot's literal builder (`exp.convert`: a string is
  quoted with its quotes doubled, a date becomes `CAST('...' AS DATE)`), never by pasting text:
  Daft's SQL has no bound parameters (`daft.sql`'s bindings are DataFrames only);
- refuses what Daft cannot run (`incompatibilities`) and what reaches past the step's inputs
  (`reaches`): Daft's SQL reads files and URLs by itself (`read_parquet(...)`, `read_csv(...)`,
  `FROM 'path.parquet'`, `url_download(...)`, `file(...)`), so every table a statement names must be
  one of its inputs, a CTE, or a table made by an earlier statement of the step, no table function
  is allowed, and no function that reads or writes a file or URL.

Both checks run on the text alone (no Daft import), at `calve validate` with the line of each
construct, and again in the engine before anything runs.

    query = translate(sql, params, inputs={"events"})
    for statement in query.statements: ...
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from calve.errors import SqlError

# Daft functions that reach files, URLs or remote services (Daft 0.7's SQL function list, checked
# by a test against the installed Daft): never allowed in a step's SQL
REACHING_FUNCTIONS = frozenset(
    {
        "url_download",
        "url_upload",
        "file",
        "file_exists",
        "file_path",
        "file_size",
        "audio_file",
        "image_file",
        "image_file_metadata",
        "video_file",
        "hdf5_file",
        "decode_image_file",
        "tokenize_encode",  # loads a tokenizer, possibly from a model hub
        "tokenize_decode",
        "s3config",
        "gcsconfig",
        "azureconfig",
        "httpconfig",
        "tosconfig",
    }
)
REACHING_PREFIXES = ("read_", "url_", "file_", "write_", "embed", "prompt", "llm_")


def reaches_out(function: str) -> bool:
    """Whether a Daft function of this name may read or write a file, a URL or a remote service."""
    name = function.lower()
    return name in REACHING_FUNCTIONS or name.startswith(REACHING_PREFIXES) or name.endswith("_scan")


DAFT_HINT = (
    "Daft's SQL (engine: daft / ray) differs here from DuckDB's; see 'SQL differences' in docs/engines.md"
)
REACH_HINT = (
    "a step's SQL reads only the tables declared as its inputs (no files, URLs or table functions): "
    "declare the table as an input of the step (see 'What a step can reach' in docs/workflows.md)"
)


@dataclass(frozen=True)
class Problem:
    """One construct of a step's SQL that the Daft engines refuse (unsupported, or reaching out)."""

    construct: str
    line: int  # 1-based, within the whole SQL text
    message: str


@dataclass(frozen=True)
class DaftStatement:
    """One statement as Daft runs it: a query, or a query kept as a named temporary table."""

    sql: str  # Daft's text, values bound as literals
    creates: str | None  # CREATE [TEMP] TABLE / VIEW name AS ...: the name; None for the result


@dataclass(frozen=True)
class DaftQuery:
    statements: tuple[DaftStatement, ...]


def translate(sql: str, params: dict[str, Any], inputs: set[str] | frozenset[str]) -> DaftQuery:
    """`sql` as Daft statements over `inputs` with `params` bound; raises SqlError (with the line) for
    the first construct Daft cannot run or that reaches past the inputs, or a value it cannot bind."""
    parsed = _parse(sql)
    problems = _problems(parsed, inputs)
    if problems:
        first = problems[0]
        raise SqlError(first.message, first.line)
    made: list[DaftStatement] = []
    for statement in parsed:
        tree = _rewrite(statement.tree.copy())
        missing = sorted(statement.params - params.keys())
        if missing:
            raise SqlError(f"no value for parameter(s): {', '.join('$' + m for m in missing)}")
        tree = _bind(tree, params)
        creates = None
        from sqlglot import exp

        if isinstance(tree, exp.Create):
            creates = tree.this.name if isinstance(tree.this, exp.Table) else tree.this.this.name
            tree = tree.expression
        made.append(DaftStatement(tree.sql(dialect="duckdb"), creates))
    if made[-1].creates is not None:
        raise SqlError("the step's last statement must be a query (its rows are the step's output)")
    return DaftQuery(tuple(made))


def incompatibilities(sql: str, inputs: set[str] | frozenset[str] | None = None) -> tuple[Problem, ...]:
    """Every construct of `sql` that the Daft engines refuse, in text order (none if it does not
    parse: the DuckDB checks report that). With `inputs`, a table that is none of them is one too."""
    from calve.engines.duckdb import statements

    try:
        statements(sql)
    except SqlError:
        return ()  # not SQL at all: the DuckDB checks say so, with DuckDB's message
    try:
        parsed = _parse(sql)
    except SqlError as exc:  # DuckDB reads it, sqlglot (hence calve's translation to Daft) does not
        return (Problem("SQL", exc.line or 1, f"{exc.engine_message}; {DAFT_HINT}"),)
    return tuple(_problems(parsed, inputs))


@dataclass(frozen=True)
class _Parsed:
    tree: Any  # sqlglot expression
    text: str
    first_line: int  # 0-based line offset of the statement in the SQL text
    params: frozenset[str]


def _parse(sql: str) -> list[_Parsed]:
    import sqlglot

    from calve.engines.duckdb import statements

    found = []
    for statement in statements(sql):  # DuckDB's splitter: the same statements and lines as DuckDB
        try:
            tree = sqlglot.parse_one(statement.text, read="duckdb")
        except sqlglot.errors.ParseError as exc:
            line = exc.errors[0].get("line") if exc.errors else None
            raise SqlError(
                f"sqlglot cannot read this statement for Daft: {str(exc).splitlines()[0]}",
                None if line is None else statement.first_line + line,
            ) from None
        found.append(_Parsed(tree, statement.text, statement.first_line, statement.params))
    if not found:
        raise SqlError("the SQL holds no statement")
    return found


def _problems(parsed: list[_Parsed], inputs: set[str] | frozenset[str] | None) -> list[Problem]:
    from sqlglot import exp

    found: list[Problem] = []
    made: set[str] = set()
    for statement in parsed:

        def at(word: str, statement: _Parsed = statement) -> int:
            return statement.first_line + _line_in(statement.text, word)

        tree = statement.tree
        body = tree
        if isinstance(tree, exp.Create) and tree.args.get("kind") in ("TABLE", "VIEW"):
            body = tree.expression
            if not isinstance(body, exp.Query):
                found.append(Problem("CREATE", at("CREATE"), f"CREATE without AS a query; {DAFT_HINT}"))
                continue
            target = tree.this
            made.add((target.this if isinstance(target, exp.Schema) else target).name.lower())
        elif not isinstance(tree, exp.Query):
            word = (statement.text.split() or ["?"])[0].upper()
            found.append(
                Problem(
                    word,
                    at(word),
                    f"{word} does not run on Daft: a step's SQL there is queries (SELECT / WITH / VALUES, "
                    f"and CREATE [TEMP] TABLE|VIEW name AS a query); {DAFT_HINT}",
                )
            )
            continue
        ctes = {cte.alias_or_name.lower() for cte in body.find_all(exp.CTE)}
        for node in body.walk():
            found.extend(_node_problems(node, at, ctes | made, inputs))
    unique = {(p.line, p.construct): p for p in reversed(found)}  # a table function is also a Func
    return sorted(unique.values(), key=lambda p: p.line)


def _node_problems(
    node: Any, at: Any, known: set[str], inputs: set[str] | frozenset[str] | None
) -> list[Problem]:
    from sqlglot import exp

    if isinstance(node, exp.Table):
        if not isinstance(node.this, exp.Identifier):  # a table function: read_parquet(...), range(...)
            name = node.this.name if isinstance(node.this, exp.Func) else node.this.sql()
            name = (node.this.sql_name() if isinstance(node.this, exp.Func) else name).lower()
            return [
                Problem(
                    f"{name}(...)",
                    at(name),
                    f"table function {name}(...) reads outside the inputs; {REACH_HINT}",
                )
            ]
        name = node.name
        if node.this.quoted and _FILE_LIKE.search(name):
            return [Problem(name, at(name), f"the file path {name!r} used as a table; {REACH_HINT}")]
        if node.args.get("db") or node.args.get("catalog"):
            shown = node.sql(dialect="duckdb")
            return [Problem(shown, at(name), f"{shown} names a table in a catalog; {REACH_HINT}")]
        if inputs is not None and name.lower() not in known and name not in inputs:
            listed = ", ".join(sorted(inputs)) or "(none)"
            return [
                Problem(
                    name, at(name), f"{name} is not an input of the step (inputs: {listed}); {REACH_HINT}"
                )
            ]
        return []
    if isinstance(node, exp.Func):
        name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
        if reaches_out(name):
            return [
                Problem(
                    f"{name}(...)", at(name), f"{name}(...) reads or writes outside the inputs; {REACH_HINT}"
                )
            ]
        if isinstance(node, exp.Trim) and (node.expression is not None or node.args.get("position")):
            return [
                Problem(
                    "TRIM",
                    at("trim"),
                    f"trim() with characters or LEADING/TRAILING; use lstrip/rstrip/strip; {DAFT_HINT}",
                )
            ]
    unsupported = _UNSUPPORTED.get(type(node).__name__)
    if unsupported is not None:
        construct, word, fix = unsupported
        return [Problem(construct, at(word), f"{construct} is not supported by Daft; {fix}; {DAFT_HINT}")]
    if isinstance(node, exp.DataType) and node.this in (
        exp.DataType.Type.TIMESTAMPTZ,
        exp.DataType.Type.TIMESTAMPLTZ,
    ):
        return [
            Problem(
                "TIMESTAMPTZ",
                at("TIMESTAMPTZ"),
                f"casts to TIMESTAMP WITH TIME ZONE are not supported by Daft; {DAFT_HINT}",
            )
        ]
    return []


_FILE_LIKE = re.compile(r"[/\\]|://|\.[A-Za-z0-9]{1,8}$")


# sqlglot node -> (construct, word to find its line, fix): the maintained list of what Daft 0.7's
# SQL does not run (checked against Daft by tests/engines/test_daft.py)
_UNSUPPORTED: dict[str, tuple[str, str, str]] = {
    "Any": ("ANY / ALL", "ANY", "use IN (...) or a join"),
    "All": ("ANY / ALL", "ALL", "use NOT IN (...) or a join"),
    "Pivot": ("PIVOT / UNPIVOT", "PIVOT", "write the pivot as CASE aggregates"),
    "Lateral": ("LATERAL", "LATERAL", "write it as a join"),
    "Cube": ("CUBE", "CUBE", "write each grouping as a query and UNION ALL them"),
    "GroupingSets": ("GROUPING SETS", "GROUPING", "write each grouping as a query and UNION ALL them"),
    "Lambda": ("lambda functions", "->", "use Daft's list functions without a lambda"),
}


def _line_in(text: str, word: str) -> int:
    """The 1-based line of `word`'s first occurrence in `text` (1 if not found)."""
    match = re.search(re.escape(word), text, re.I)
    return text[: match.start()].count("\n") + 1 if match else 1


def _rewrite(tree: Any) -> Any:
    """Daft's spelling of the constructs it has under another form (same meaning)."""
    from sqlglot import exp
    from sqlglot.transforms import eliminate_qualify

    tree = tree.transform(eliminate_qualify)
    _RANKS = (exp.Count, exp.RowNumber, exp.Rank, exp.DenseRank)

    def rewrite(node: Any) -> Any:
        if isinstance(node, exp.Filter) and isinstance(node.this, exp.AggFunc):
            condition = node.expression.this  # FILTER (WHERE c): Where(c)
            aggregate = node.this.copy()
            argument = aggregate.this
            if isinstance(argument, exp.Star) or argument is None:
                argument = exp.Literal.number(1)
            elif isinstance(argument, exp.Distinct):
                return node  # count(DISTINCT x) FILTER (...): left as is, Daft says it is unsupported
            aggregate.set("this", exp.Case(ifs=[exp.If(this=condition, true=argument)], default=exp.Null()))
            return aggregate
        if isinstance(node, exp.Case) and node.args.get("default") is None:
            node = node.copy()
            node.set("default", exp.Null())
            return node
        if isinstance(node, exp.Trim) and node.expression is None and not node.args.get("position"):
            return exp.Anonymous(this="strip", expressions=[node.this])
        # Daft counts and ranks in UINT64, which mixes with a signed value as a DOUBLE
        # (coalesce(count, 0)); DuckDB's are BIGINT: cast them so that the rest of the SQL sees BIGINT
        counted = isinstance(node, exp.Count) and not isinstance(node.parent, exp.Window)
        ranked = isinstance(node, exp.Window) and isinstance(node.this, _RANKS)
        if (counted or ranked) and not isinstance(node.parent, exp.Cast):
            return exp.cast(node.copy(), exp.DataType.build("BIGINT"))
        return node

    return tree.transform(rewrite)


def _bind(tree: Any, params: dict[str, Any]) -> Any:
    """Every `$name` replaced by its value as a literal, built by sqlglot (quoted and escaped)."""
    from sqlglot import exp

    def bind(node: Any) -> Any:
        if isinstance(node, exp.Parameter | exp.Placeholder):
            name = node.name
            if name in params:
                return literal(params[name])
        return node

    return tree.transform(bind)


def literal(value: Any) -> Any:
    """A value as a sqlglot literal that Daft reads back as the same value and type."""
    from sqlglot import exp

    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        # Daft has no TIMESTAMPTZ literal: a UTC instant, compared as Daft compares timestamps
        utc = value.astimezone(dt.UTC).replace(tzinfo=None)
        return exp.cast(exp.Literal.string(utc.isoformat(sep=" ")), exp.DataType.build("TIMESTAMP"))
    if isinstance(value, bool | int | float | str | Decimal | dt.date | dt.datetime | None):
        return exp.convert(value)
    if isinstance(value, list | tuple):
        return exp.Array(expressions=[literal(v) for v in value])
    raise SqlError(f"a parameter of type {type(value).__name__} cannot be bound in Daft's SQL: {value!r}")
