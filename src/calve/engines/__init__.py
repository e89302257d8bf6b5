"""SQL engines: what runs a workflow's SQL steps. The embedded default is DuckDB, in process.

An engine receives the step's inputs as named Arrow tables and its parameters as values, and returns
the result as an Arrow table. Values are always bound as parameters (`$name` in the SQL), never
pasted into the text; inputs are registered under their validated names. pyiceberg plans every scan
and does every commit, whatever the engine.

Every engine keeps a step's SQL to the step's inputs: no file, URL, other database, extension or
setting is reachable from it (the embedded engine: DuckDB with external access off and its
configuration locked; an engine added later, such as Ray, must give the same guarantee). The SQL
text is also checked at `calve validate` (`calve.engines.reach`), which refuses the same constructs
early, with file:line.

Other engines plug in through the `calve.engines` entry point group (name -> Engine class).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from calve.errors import ConfigError, SqlError

if TYPE_CHECKING:
    import pyarrow as pa


class Engine(Protocol):
    """Runs a step's SQL. An engine whose `accepts_scans` attribute is true may also receive, as a
    relation, a `calve.read.duckdb_scan.MatchedScan` (rows of Parquet files not read yet, with the
    query that reads them); every other engine receives Arrow tables only."""

    name: str

    def run(self, sql: str, relations: dict[str, pa.Table], params: dict[str, Any]) -> pa.Table | None:
        """Run `sql` (one or more statements; the last one's rows are the result) over `relations`."""
        ...


def get_engine(name: str) -> Engine:
    """The engine called `name`: built in (duckdb) or registered under the `calve.engines` entry points."""
    if name == "duckdb":
        from calve.engines.duckdb import DuckDBEngine

        return DuckDBEngine()
    for entry in entry_points(group="calve.engines"):
        if entry.name == name:
            engine: Engine = entry.load()()
            return engine
    available = ["duckdb", *(e.name for e in entry_points(group="calve.engines"))]
    raise ConfigError(
        f"no engine named {name!r}; available: {', '.join(available)} (set engine: in calve.yaml)"
    )


__all__ = ["Engine", "SqlError", "get_engine"]
