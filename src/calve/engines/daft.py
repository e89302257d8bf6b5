"""The Daft engines: Daft's SQL on its local (native) runner, or on a Ray cluster.

Installed with `pip install 'calve[ray]'` (daft, ray); imported only when a project selects them
(`engine: daft` or `engine: {name: ray, address: HOST:PORT}` in calve.yaml), and a missing package
fails with that install line.

What runs where: pyiceberg plans every scan and does every commit on the driver (the process running
calve), as with DuckDB. Pinned and ICDC inputs reach the engine planned, not read (`TableScan`): the
workers read their files; other inputs arrive as Arrow. `stage` keeps a step's result on the workers,
which write it as the target's data files; the driver commits them with the step's checkpoints in
one Iceberg commit (`calve.engines.daft_io`). A run killed before that commit leaves orphan files
at most, never rows (`calve orphans`, docs/engines.md).

A step's SQL is the workflow file's, written for DuckDB: `calve.engines.daft_sql` rewrites what Daft
spells differently, binds the values as literals built by sqlglot, and refuses what Daft cannot run
or what reaches past the step's inputs (Daft's SQL reads files and URLs on its own). The statements
run in a `daft.Session` of their own holding only the step's inputs as temporary tables: no catalog
is attached and `daft.sql`'s lookup of Python variables is never used.

Daft sets its runner once per process: a process runs Daft either locally or on one Ray cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from calve.errors import ConfigError, DataError, SqlError

if TYPE_CHECKING:
    from calve.engines.daft_io import DaftOutput

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
    accepts_scans = False  # no DuckDB MatchedScan: matched rows arrive as Arrow
    reads_tables = True  # pinned and ICDC inputs arrive as TableScan, read on the workers
    writes_files = True  # `stage`: the workers write the output's data files

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

    def run(self, sql: str, relations: dict[str, Any], params: dict[str, Any]) -> pa.Table | None:
        frame = self._frame(sql, relations, params)
        if frame is None:
            return None
        return conform_types(self._guard(frame.to_arrow))

    def stage(self, sql: str, relations: dict[str, Any], params: dict[str, Any]) -> DaftOutput | None:
        """Run `sql` and keep the result where Daft computed it: a `DaftOutput`, which the workers
        write as the target's data files (`calve.engines.daft_io`); None if the SQL returns no rows."""
        from calve.engines.daft_io import DaftOutput

        frame = self._frame(sql, relations, params)
        return None if frame is None else self._guard(lambda: DaftOutput(frame))

    def _frame(self, sql: str, relations: dict[str, Any], params: dict[str, Any]) -> Any:
        """The last statement's rows as a Daft DataFrame, not run yet (earlier ones are collected)."""
        from calve.engines.daft_io import scan_frame
        from calve.engines.daft_sql import translate
        from calve.read.table_scan import TableScan

        query = translate(sql, params, frozenset(relations))  # refuses before anything starts
        self._ensure_runner()
        daft = _import_daft()
        session = daft.Session()
        for name, rows in relations.items():
            if isinstance(rows, TableScan):
                frame = scan_frame(rows)  # read on the workers
            else:
                frame = daft.from_arrow(rows if isinstance(rows, pa.Table) else rows.to_arrow())
            session.create_temp_table(name, frame)
        result = None
        for statement in query.statements:
            frame = self._guard(lambda text=statement.sql: session.sql(text))
            if frame is None:
                continue
            if statement.creates is not None:
                session.create_temp_table(statement.creates, self._guard(frame.collect))
                continue
            result = frame
        return result

    @staticmethod
    def _guard(action: Any) -> Any:
        """`action()`, with Daft's planning and execution errors as calve's SqlError."""
        from daft.exceptions import DaftCoreException

        try:
            return action()
        except (DaftCoreException, ValueError) as exc:
            raise SqlError(f"Daft: {exc}".splitlines()[0]) from None


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


def conform_type(kind: pa.DataType) -> pa.DataType:
    """The type calve stores for a type Daft returns (see `conform_types`)."""
    if pa.types.is_unsigned_integer(kind):
        return pa.int64() if kind.bit_width >= 32 else pa.int32()
    if pa.types.is_large_string(kind):
        return pa.string()
    if pa.types.is_large_binary(kind):
        return pa.binary()
    return kind


def conform_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, conform_type(f.type), f.nullable) for f in schema])


def conform_types(table: pa.Table) -> pa.Table:
    """Daft's result with DuckDB's types: unsigned counts as BIGINT (Iceberg has no unsigned type),
    large strings and binaries as plain ones, so a table is the same whichever engine made it."""
    import pyarrow.compute as pc

    columns = []
    fields = []
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = field.type
        target = conform_type(kind)
        if kind == pa.uint64() and len(column) and (pc.max(column).as_py() or 0) > _LONG_MAX:
            raise DataError(
                f"column {field.name!r} holds {pc.max(column).as_py()}, which does not fit a BIGINT "
                "(Iceberg long); cast it in the SQL to the type you want stored"
            )
        if target != kind:
            column = column.cast(target)
        columns.append(column)
        fields.append(pa.field(field.name, target, field.nullable))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
