"""SQL engines: what runs a workflow's SQL steps. The embedded default is DuckDB, in process.

An engine receives the step's inputs as named Arrow tables and its parameters as values, and returns
the result as an Arrow table. Values are always bound as parameters (`$name` in the SQL), never
pasted into the text; inputs are registered under their validated names. pyiceberg plans every scan
and does every commit, whatever the engine.

Other engines plug in through the `calve.engines` entry point group (name -> Engine class).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

import pyarrow as pa

from calve.errors import CalveError, ConfigError


class SqlError(CalveError):
    """The engine rejected a step's SQL; `line` is 1-based within the SQL text, when the engine says."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.engine_message = message
        self.line = line


class Engine(Protocol):
    name: str

    def run(self, sql: str, relations: dict[str, pa.Table], params: dict[str, Any]) -> pa.Table | None:
        """Run `sql` (one or more statements; the last one's rows are the result) over `relations`."""
        ...


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


def get_engine(name: str) -> Engine:
    """The engine called `name`: built in (duckdb) or registered under the `calve.engines` entry points."""
    if name == "duckdb":
        return DuckDBEngine()
    for entry in entry_points(group="calve.engines"):
        if entry.name == name:
            engine: Engine = entry.load()()
            return engine
    available = ["duckdb", *(e.name for e in entry_points(group="calve.engines"))]
    raise ConfigError(
        f"no engine named {name!r}; available: {', '.join(available)} (set engine: in calve.yaml)"
    )
