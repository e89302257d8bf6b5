"""The embedded engine: DuckDB in process, over Arrow tables it scans without copying.

Statements are split by DuckDB's own parser; every `$name` is bound as a parameter, never pasted into
the text; errors keep DuckDB's LINE position, mapped back to the statement's place in the SQL text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from calve.errors import SqlError


@dataclass(frozen=True)
class _Statement:
    text: str
    first_line: int  # 0-based line offset of the statement in the whole SQL text
    params: frozenset[str]


def _statements(sql: str) -> list[_Statement]:
    import duckdb

    try:
        parsed = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        message = str(exc)
        raise SqlError(message, _line_of(message)) from None
    statements = []
    first_line = 0  # the statements' texts are consecutive slices of `sql`
    for statement in parsed:
        text = statement.query
        statements.append(_Statement(text, first_line, frozenset(statement.named_parameters)))
        first_line += text.count("\n")
    return statements


def sql_parameters(sql: str) -> set[str]:
    """The `$name` parameters that `sql` uses (raises ValueError if it does not parse)."""
    try:
        return set().union(*(s.params for s in _statements(sql)))
    except SqlError as exc:
        raise ValueError(exc.engine_message) from None


def _line_of(message: str) -> int | None:
    match = re.search(r"LINE (\d+):", message)
    return int(match.group(1)) if match else None


class DuckDBEngine:
    """DuckDB in process: inputs are Arrow tables that DuckDB scans without copying."""

    name = "duckdb"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def run(self, sql: str, relations: dict[str, pa.Table], params: dict[str, Any]) -> pa.Table | None:
        import duckdb

        statements = _statements(sql)
        if not statements:
            raise SqlError("the SQL holds no statement")
        con = duckdb.connect(":memory:")
        try:
            if self.threads:
                con.execute(f"SET threads = {int(self.threads)}")  # an int, not user text
            for name, table in relations.items():
                con.register(name, table)
            result: pa.Table | None = None
            for statement in statements:
                bound = {k: params[k] for k in statement.params if k in params}
                missing = statement.params - bound.keys()
                if missing:
                    raise SqlError(
                        f"no value for parameter(s): {', '.join('$' + m for m in sorted(missing))}"
                    )
                try:
                    relation = con.sql(statement.text, params=bound or None)
                    result = relation.to_arrow_table() if relation is not None else None
                except duckdb.Error as exc:
                    message = _positioned(con, statement.text, bound, str(exc))
                    line = _line_of(message)
                    raise SqlError(message, None if line is None else line + statement.first_line) from None
            return result
        finally:
            con.close()


def _positioned(con: Any, text: str, params: dict[str, Any], message: str) -> str:
    """DuckDB's relational API drops the LINE/caret of binder errors; the DB-API reports them."""
    import duckdb

    if _line_of(message) is not None:
        return message
    try:
        con.execute(text, params or None)  # fails again, now with the position (failure path only)
    except duckdb.Error as exc:
        return str(exc)
    return message
