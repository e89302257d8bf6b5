"""The DuckDB that evaluates the state's SQL: one in-memory database per process, a cursor per query.

Opening a DuckDB database costs ~30 ms of CPU and a cursor ~1 ms, so the database is opened once.
The state's SQL carries the step's own expressions, so this database is opened as the engine's is
(`calve.engines.duckdb.sandboxed_database`: external access off, configuration locked): it only
ever reads the Arrow tables registered here.
Results come back as Arrow with DuckDB's 128-bit integers as BIGINT, as calve's engine returns them
(`sum()` of an integer column is a HUGEINT in DuckDB; an overflow fails rather than wrap).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import pyarrow as pa

from calve.engines.duckdb import sandboxed_database

_lock = threading.Lock()
_database: Any = None


def _cursor() -> Any:
    global _database
    with _lock:
        if _database is None:
            _database = sandboxed_database()
        return _database.cursor()


def quote(name: str) -> str:
    """A column name as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def query(sql: str, tables: dict[str, pa.Table]) -> pa.Table:
    """The rows of `sql` over `tables` (registered under their keys), 128-bit integers as BIGINT."""
    con = _cursor()
    try:
        for name, table in tables.items():
            con.register(name, table)
        relation = con.sql(sql)
        huge = {
            n
            for n, t in zip(relation.columns, relation.types, strict=True)
            if str(t) in ("HUGEINT", "UHUGEINT")
        }
        if huge:
            relation = relation.project(
                ", ".join(
                    f"CAST({quote(n)} AS BIGINT) AS {quote(n)}" if n in huge else quote(n)
                    for n in relation.columns
                )
            )
        result: pa.Table = relation.to_arrow_table()
        return result
    finally:
        con.close()


@functools.cache
def is_aggregate_function(name: str) -> bool:
    """Whether DuckDB knows `name` as an aggregate function (for calls sqlglot does not know)."""
    con = _cursor()
    try:
        found = con.execute(
            "SELECT count(*) FROM duckdb_functions() WHERE lower(function_name) = lower(?) "
            "AND function_type = 'aggregate'",
            [name],
        ).fetchone()
        return bool(found and found[0])
    finally:
        con.close()
