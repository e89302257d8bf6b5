"""The Daft engines: Daft's SQL on its local (native) runner, or on a Ray cluster.

Installed with `pip install 'calve[ray]'` (daft, ray); imported only when a project selects them
(`engine: daft` or `engine: {name: ray, address: HOST:PORT}` in calve.yaml), and a missing package
fails with that install line.

What runs where: pyiceberg plans every scan and does every commit on the driver (the process running
calve), as with DuckDB. The step's inputs reach the engine as Arrow tables, which Daft partitions
(on Ray: puts in the cluster's object store) and the SQL runs on Daft's workers; the result comes
back to the driver as Arrow and is committed there with the step's checkpoints, in one Iceberg
commit. A run killed at any point therefore leaves no partial rows: what the workers computed is
lost with the driver, and the rerun computes it again (docs/engines.md).

A step's SQL is the workflow file's, written for DuckDB: `calve.engines.daft_sql` rewrites what Daft
spells differently, binds the values as literals built by sqlglot, and refuses what Daft cannot run
or what reaches past the step's inputs (Daft's SQL reads files and URLs on its own). The statements
run in a `daft.Session` of their own holding only the step's inputs as temporary tables: no catalog
is attached and `daft.sql`'s lookup of Python variables is never used.

Daft sets its runner once per process: a process runs Daft either locally or on one Ray cluster.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from calve.errors import ConfigError, DataError, SqlError

INSTALL_HINT = "pip install 'calve[ray]'"


def _import_daft() -> Any:
    try:
        import daft
    except ImportError as exc:
        raise ConfigError(
            f"the {exc.name or 'daft'} package is missing: the daft and ray engines need the ray extra; "
            f"install it with: {INSTALL_HINT} (or set engine: duckdb in calve.yaml)"
        ) from None
    return daft


class DaftEngine:
    """Daft's SQL on Daft's local runner (all cores of this machine, out of core)."""

    name = "daft"
    accepts_scans = False  # inputs arrive as Arrow tables

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def _ensure_runner(self) -> None:
        daft = _import_daft()
        from daft.runners import get_or_infer_runner_type

        if _current_runner() is None:
            daft.set_runner_native(self.threads)
        elif get_or_infer_runner_type() != "native":
            raise ConfigError(
                "this process already runs Daft on Ray: Daft sets one runner per process, so the daft "
                "and ray engines cannot both run in it (run each project in its own process)"
            )

    def run(self, sql: str, relations: dict[str, pa.Table], params: dict[str, Any]) -> pa.Table | None:
        from calve.engines.daft_sql import translate

        query = translate(sql, params, frozenset(relations))  # refuses before anything starts
        self._ensure_runner()
        daft = _import_daft()
        from daft.exceptions import DaftCoreException

        session = daft.Session()
        for name, table in relations.items():
            arrow = table if isinstance(table, pa.Table) else table.to_arrow()
            session.create_temp_table(name, daft.from_arrow(arrow))
        result: pa.Table | None = None
        for statement in query.statements:
            try:
                frame = session.sql(statement.sql)
                if frame is None:
                    continue
                if statement.creates is not None:
                    session.create_temp_table(statement.creates, frame.collect())
                    continue
                result = frame.to_arrow()
            except (DaftCoreException, ValueError) as exc:
                raise SqlError(f"Daft: {exc}".splitlines()[0]) from None
        return None if result is None else conform_types(result)


class RayEngine(DaftEngine):
    """Daft's SQL on a Ray cluster: `address` is the cluster's (HOST:PORT of `ray start --head`, or
    `auto`); without one, Ray starts a local cluster in this process."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        super().__init__()
        self.address = address

    def _ensure_runner(self) -> None:
        daft = _import_daft()
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"the ray package is missing: the ray engine needs the ray extra; install it with: "
                f"{INSTALL_HINT}"
            ) from None
        from daft.runners import get_or_infer_runner_type

        if _current_runner() is None:
            try:
                daft.set_runner_ray(address=self.address, noop_if_initialized=True)
            except ConnectionError as exc:
                raise ConfigError(
                    f"cannot reach the Ray cluster at {self.address}: {exc}; start it with "
                    "`ray start --head` or fix engine.address in calve.yaml"
                ) from None
        elif get_or_infer_runner_type() != "ray":
            raise ConfigError(
                "this process already runs Daft locally: Daft sets one runner per process, so the daft "
                "and ray engines cannot both run in it (run each project in its own process)"
            )


def _current_runner() -> Any:
    """Daft's runner of this process, None until one is set (Daft's own check, without setting one)."""
    from daft.runners import _get_runner

    return _get_runner()


_LONG_MAX = 2**63 - 1


def conform_types(table: pa.Table) -> pa.Table:
    """Daft's result with DuckDB's types: unsigned counts as BIGINT (Iceberg has no unsigned type),
    large strings and binaries as plain ones, so a table is the same whichever engine made it."""
    import pyarrow.compute as pc

    columns = []
    fields = []
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = field.type
        target = kind
        if pa.types.is_unsigned_integer(kind):
            target = pa.int64() if kind.bit_width >= 32 else pa.int32()
            if kind == pa.uint64() and len(column) and (pc.max(column).as_py() or 0) > _LONG_MAX:
                raise DataError(
                    f"column {field.name!r} holds {pc.max(column).as_py()}, which does not fit a BIGINT "
                    "(Iceberg long); cast it in the SQL to the type you want stored"
                )
        elif pa.types.is_large_string(kind):
            target = pa.string()
        elif pa.types.is_large_binary(kind):
            target = pa.binary()
        if target != kind:
            column = column.cast(target)
        columns.append(column)
        fields.append(pa.field(field.name, target, field.nullable))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
