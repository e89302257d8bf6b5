"""SQL engines: what runs a workflow's SQL steps. The embedded default is DuckDB, in process.

An engine receives the step's inputs as named Arrow tables and its parameters as values, and returns
the result as an Arrow table. An engine with workers may declare more: `reads_tables` (pinned and
ICDC inputs arrive as a planned `calve.read.table_scan.TableScan`, read on its workers) and
`writes_files` (its `stage` method returns a `calve.write.staged.StagedOutput`, whose data files the
workers write and the driver commits). Values (`$name` in the SQL) are never pasted into the text:
DuckDB binds them as parameters; Daft, which has none, gets literals that sqlglot builds in the parsed tree.
Inputs are registered under their validated names. pyiceberg plans every scan
and the driver does every commit, whatever the engine.

Every engine keeps a step's SQL to the step's inputs: no file, URL, other database, extension or
setting is reachable from it (the embedded engine: DuckDB with external access off and its
configuration locked; the Daft and Ray engines: calve's check of the parsed SQL, refusing every
table that is not an input, every table function and every function that reads files or URLs, then
a Daft session holding only the inputs, see `calve.engines.daft_sql`). The SQL
text is also checked at `calve validate` (`calve.engines.reach`), which refuses the same constructs
early, with file:line.

The engines built in: `duckdb` (the default, in process), `daft` (Daft's local runner) and `ray`
(Daft on a Ray cluster; both need `pip install 'calve[ray]'`, imported only when selected). Other
engines plug in through the `calve.engines` entry point group (name -> Engine class).

calve.yaml selects the project's, as a name or a mapping; a workflow file's own `engine:` (the same
syntax) selects that workflow's (`Runner.engine_for`):

    engine: duckdb
    engine: {name: ray, address: 127.0.0.1:6379}

Daft sets its runner once per process, so the workflows of one project (which the scheduler runs in
one process) may use one Daft runner at most: `daft` (with one `threads`) or `ray` at one address;
`calve validate` refuses a project that mixes them (`Project.workflows`).
"""

from __future__ import annotations

from dataclasses import dataclass
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


BUILT_IN = ("duckdb", "daft", "ray")
# the engines that run Daft's SQL: `calve validate` checks a step's SQL for Daft's dialect there
DAFT_ENGINES = frozenset({"daft", "ray"})
ENGINE_KEYS = ("name", "address", "threads")


@dataclass(frozen=True)
class EngineSpec:
    """calve.yaml's `engine:`: which engine runs SQL steps, and its settings.

    engine: duckdb                                  # EngineSpec("duckdb")
    engine: {name: ray, address: 127.0.0.1:6379}    # EngineSpec("ray", address=...)
    """

    name: str = "duckdb"
    address: str | None = None  # ray: the cluster's HOST:PORT (or auto); none: a local Ray in process
    threads: int | None = None  # duckdb, daft: worker threads (none: one per core)

    @property
    def runs_daft_sql(self) -> bool:
        return self.name in DAFT_ENGINES

    @property
    def daft_runner(self) -> str | None:
        """The Daft runner this engine sets for its process, None for an engine that is not Daft's.

        Daft sets one runner per process and keeps it: two engines of one process must name the same.
        """
        if self.name == "daft":
            return "daft (local)" if self.threads is None else f"daft (local, threads {self.threads})"
        if self.name == "ray":
            return f"ray at {self.address}" if self.address else "ray (a local Ray in process)"
        return None

    @classmethod
    def parse(cls, value: Any) -> EngineSpec:
        """The setting from its YAML value (a name or a mapping); raises ValueError saying the fix."""
        if isinstance(value, str):
            return cls(value)
        if not isinstance(value, dict):
            raise ValueError(
                f"must be an engine name or a mapping, not {type(value).__name__}; "
                "as in engine: duckdb, or engine: {name: ray, address: 127.0.0.1:6379}"
            )
        unknown = sorted(str(k) for k in value if k not in ENGINE_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; an engine has {', '.join(ENGINE_KEYS)}")
        name = value.get("name")
        if not isinstance(name, str):
            raise ValueError("needs name: duckdb, daft or ray (or an engine registered by a plugin)")
        address = value.get("address")
        if address is not None and (not isinstance(address, str) or name != "ray"):
            raise ValueError("address is the Ray cluster's HOST:PORT, a string, for name: ray only")
        threads = value.get("threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a whole number of at least 1, not {threads!r}")
        if threads is not None and name == "ray":
            raise ValueError("threads is for duckdb and daft; a Ray cluster's size is set where it starts")
        return cls(name, address, threads)


def get_engine(spec: EngineSpec | str) -> Engine:
    """The engine `spec` names: built in (duckdb, daft, ray) or registered under `calve.engines`."""
    spec = EngineSpec(spec) if isinstance(spec, str) else spec
    name = spec.name
    if name == "duckdb":
        from calve.engines.duckdb import DuckDBEngine

        return DuckDBEngine(spec.threads)
    if name == "daft":
        from calve.engines.daft import DaftEngine

        return DaftEngine(spec.threads)
    if name == "ray":
        from calve.engines.daft import RayEngine

        return RayEngine(spec.address)
    for entry in entry_points(group="calve.engines"):
        if entry.name == name:
            engine: Engine = entry.load()()
            return engine
    raise ConfigError(
        f"no engine named {name!r}; available: {', '.join(engine_names())} (set engine: in calve.yaml, "
        "or in the workflow file)"
    )


def engine_names() -> list[str]:
    """The engines `engine:` can name: the built-in ones, then those registered by plugins."""
    return [*BUILT_IN, *(e.name for e in entry_points(group="calve.engines") if e.name not in BUILT_IN)]


__all__ = ["Engine", "EngineSpec", "SqlError", "engine_names", "get_engine"]
