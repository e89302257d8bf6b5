"""The embedded engine: DuckDB in process, over Arrow tables it scans without copying.

Statements are split by DuckDB's own parser; every `$name` is bound as a parameter, never pasted into
the text; errors keep DuckDB's LINE position, mapped back to the statement's place in the SQL text.

A step's SQL reaches its inputs and nothing else. The engine's database is opened with
`enable_external_access=false` (no file, URL, attached database, extension install or load, Python
variable lookup) and `lock_configuration=true` (no SET, RESET or PRAGMA can switch it back): a
`COPY ... TO`, `read_csv(...)`, `ATTACH`, `INSTALL` fails with DuckDB's Permission Error, which
`run` reports as a `SqlError` naming the fix. What still works there: the registered Arrow inputs,
temporary tables and views, `CREATE TABLE` in the run's scratch catalog (an in-memory `ATTACH` that
the engine itself makes before the user's SQL), macros, and DuckDB's built-in functions. calve's own
reads of Parquet files (`calve.read.duckdb_scan`) run in a database of their own and reach the
engine as Arrow. `calve.engines.reach` refuses the same constructs earlier, at `calve validate`.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from calve.errors import DataError, SqlError


@dataclass(frozen=True)
class Statement:
    """One statement of a SQL text, as DuckDB's parser splits it."""

    text: str
    first_line: int  # 0-based line offset of the statement in the whole SQL text
    params: frozenset[str]
    kind: str  # DuckDB's statement type: SELECT, CREATE, COPY, SET, ... ("UNKNOWN" if it has none)


# what the user's SQL runs under (see the module docstring); every option is fixed when the database
# opens, since with lock_configuration no statement can change one afterwards
SANDBOX_CONFIG: dict[str, str | bool | int] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}
REACH_HINT = (
    "a step's SQL reads only the tables declared as its inputs (no files, URLs, other databases, "
    "extensions or settings): declare the table as an input of the step (see 'What a step can reach' "
    "in docs/workflows.md)"
)


def sandboxed_database(threads: int | None = None) -> Any:
    """An in-memory DuckDB database with external access off and its configuration locked."""
    import duckdb

    config: dict[str, str | bool | int | float | list[str]] = dict(SANDBOX_CONFIG)
    if threads:
        config["threads"] = int(threads)
    return duckdb.connect(":memory:", config=config)


def statements(sql: str) -> list[Statement]:
    """The statements of `sql` (raises SqlError, with the line, if it does not parse)."""
    import duckdb

    try:
        parsed = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        message = str(exc)
        raise SqlError(message, _line_of(message)) from None
    found = []
    first_line = 0  # the statements' texts are consecutive slices of `sql`
    for statement in parsed:
        text = statement.query
        try:
            kind = statement.type.name
        except ValueError:  # a type the Python enum does not list (UPDATE EXTENSIONS)
            kind = "UNKNOWN"
        found.append(Statement(text, first_line, frozenset(statement.named_parameters), kind))
        first_line += text.count("\n")
    return found


def sql_parameters(sql: str) -> set[str]:
    """The `$name` parameters that `sql` uses (raises ValueError if it does not parse)."""
    try:
        return set().union(*(s.params for s in statements(sql)))
    except SqlError as exc:
        raise ValueError(exc.engine_message) from None


def _line_of(message: str) -> int | None:
    match = re.search(r"LINE (\d+):", message)
    return int(match.group(1)) if match else None


class DuckDBEngine:
    """DuckDB in process: inputs are Arrow tables that DuckDB scans without copying."""

    name = "duckdb"
    # Matched rows are read by calve's own read database (which may read Parquet files), never in
    # the step's database (which may not): the runner hands this engine Arrow tables only.
    accepts_scans = False

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._database: Any = None  # one in-memory DuckDB per engine; each run gets a cursor
        self._runs = itertools.count()

    def _connect(self) -> Any:
        """A fresh connection to the engine's database, in a scratch catalog of its own.

        Opening a DuckDB database costs ~30 ms of CPU, a cursor on an open one ~1 ms; the scratch
        catalog (an attached in-memory database, detached after the run) keeps what one run's SQL
        creates (CREATE TABLE ...) from being seen by the next, as with a database of its own.
        """
        if self._database is None:
            self._database = sandboxed_database(self.threads)
        con = self._database.cursor()
        scratch = f"calve_run_{next(self._runs)}"  # a counter: not user text
        con.execute(f"ATTACH ':memory:' AS {scratch}")
        con.execute(f"USE {scratch}")
        return con, scratch

    def run(self, sql: str, relations: dict[str, pa.Table], params: dict[str, Any]) -> pa.Table | None:
        import duckdb

        parsed = statements(sql)
        if not parsed:
            raise SqlError("the SQL holds no statement")
        con, scratch = self._connect()
        try:
            for name, table in relations.items():
                # matched rows not read yet (MatchedScan) are read by calve's read database
                con.register(name, table if isinstance(table, pa.Table) else table.to_arrow())
            result: pa.Table | None = None
            for statement in parsed:
                bound = {k: params[k] for k in statement.params if k in params}
                missing = statement.params - bound.keys()
                if missing:
                    raise SqlError(
                        f"no value for parameter(s): {', '.join('$' + m for m in sorted(missing))}"
                    )
                try:
                    relation = con.sql(statement.text, params=bound or None)
                    result = _to_arrow(relation) if relation is not None else None
                except duckdb.Error as exc:
                    message = _positioned(con, statement.text, bound, str(exc))
                    if _is_reach(exc, message):
                        message = f"{message}\n{REACH_HINT}"
                    line = _line_of(message)
                    raise SqlError(message, None if line is None else line + statement.first_line) from None
            return result
        finally:
            with contextlib.suppress(duckdb.Error):
                con.execute("USE memory")
                con.execute(f"DETACH {scratch}")
            con.close()


def _is_reach(exc: Exception, message: str) -> bool:
    """Whether DuckDB refused the SQL for reaching past its inputs: a file, a setting, or a function
    of an extension that is not loaded (DuckDB's advice to SET autoload... cannot apply here)."""
    import duckdb

    return (
        isinstance(exc, duckdb.PermissionException)
        or "the configuration has been locked" in message
        or ("is not in the catalog, but it exists in the" in message and "extension" in message)
    )


_HUGE = ("HUGEINT", "UHUGEINT")
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _to_arrow(relation: Any) -> pa.Table:
    """The rows as Arrow, with DuckDB's 128-bit integers as BIGINT (Iceberg `long`).

    `sum()` of a BIGINT column is a HUGEINT in DuckDB, which Arrow carries as decimal(38, 0): a table
    created from it would get a surprising decimal column. Such a column comes out as a BIGINT; a
    value that does not fit fails here, naming the column and the value.
    """
    huge = [name for name, kind in zip(relation.columns, relation.types, strict=True) if str(kind) in _HUGE]
    if not huge:
        return relation.to_arrow_table()
    import duckdb

    columns = ", ".join(
        f"CAST({_quote(n)} AS BIGINT) AS {_quote(n)}" if n in huge else _quote(n) for n in relation.columns
    )
    try:
        return relation.project(columns).to_arrow_table()
    except duckdb.Error as exc:  # a value does not fit: name the first one
        for name in huge:
            check = f"{_quote(name)} NOT BETWEEN {_LONG_MIN} AND {_LONG_MAX}"
            outside = relation.filter(check).limit(1).fetchall()
            if outside:
                value = outside[0][relation.columns.index(name)]
                raise DataError(
                    f"column {name!r} is a 128-bit integer (DuckDB's type for sum() of a BIGINT) and holds "
                    f"{value}, which does not fit a BIGINT (Iceberg long); cast it in the SQL to the type "
                    "you want stored, as in CAST(... AS DECIMAL(38, 0)) or CAST(... AS DOUBLE)"
                ) from None
        raise DataError(f"converting 128-bit integers to BIGINT failed: {exc}") from None


def _quote(name: str) -> str:
    """A column name as a DuckDB identifier (from DuckDB's own result, quoted all the same)."""
    return '"' + name.replace('"', '""') + '"'


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
