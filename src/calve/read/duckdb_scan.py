"""Reading planned Iceberg data files with DuckDB's `read_parquet`, only where that is exact.

`read_parquet` knows nothing of Iceberg: it applies no delete file and matches columns by name.
Given `schema=MAP {field_id: {name, type, default_value}}` it matches them by Iceberg field id
instead: a renamed column keeps its values, an int read as long is widened, a column absent from an
older file is NULL. Those are Iceberg's projection rules for v1/v2 tables, so DuckDB may read a set
of planned files exactly when (`scan_schema`):

- no planned task has a delete file (read_parquet would return deleted rows) — raw reads that want
  file positions (`matched_positions`) are exempt: positions are positions in the file;
- the table has no `schema.name-mapping.default` property (its files may lack field ids, which a
  field-id map would read as NULL columns: add_files, migrated tables);
- format version <= 2 and no field has an `initial_default` (v3 fills absent columns with it);
- every selected column has a primitive type the map covers (no nested, uuid, fixed, v3 types);
- every file is local (`file:` or a plain path; object stores need pyiceberg's FileIO) and its path
  has no glob character (`read_parquet` expands `*`, `?`, `[` and `{` in each path).

Otherwise every function here returns None and the caller reads with pyiceberg's ArrowScan.
Paths are bound as a query parameter, never pasted; the field map is built from Iceberg metadata
with names quoted as SQL strings; key columns are quoted identifiers of the table's own schema.

    scanned = read_matched(table, tasks, keys, row_filter, schema)   # rows of the key tuples
    files = matching_files(table, tasks, keys)                       # path -> rows holding a key
    kept = read_unmatched(table, tasks, keys)                         # rows holding none of the keys
    positions = matched_positions(table, tasks, keys)                 # path -> file positions

Each query runs on a cursor of one in-process DuckDB database kept for these reads, never for a
step's SQL (opening a database costs ~30 ms of CPU, a cursor ~1 ms). That database has build-side
selection switched off: with the keys small and the files large, DuckDB may build its hash table on
the files' side (RIGHT_SEMI) and take ~3x longer (measured in `benchmarks/stage2.py`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.expressions.visitors import bind, extract_field_ids
from pyiceberg.io.pyarrow import expression_to_pyarrow, schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
    TimestamptzType,
    TimeType,
)

NAME_MAPPING_PROPERTY = "schema.name-mapping.default"
_DUCKDB_TYPES: dict[type[IcebergType], str] = {
    BooleanType: "BOOLEAN",
    IntegerType: "INTEGER",
    LongType: "BIGINT",
    FloatType: "FLOAT",
    DoubleType: "DOUBLE",
    DateType: "DATE",
    TimeType: "TIME",
    TimestampType: "TIMESTAMP",
    TimestamptzType: "TIMESTAMPTZ",
    StringType: "VARCHAR",
    BinaryType: "BLOB",
}
_GLOB = frozenset("*?[{")


def duckdb_type(field_type: IcebergType) -> str | None:
    """The DuckDB type of an Iceberg primitive type, None when the field map does not cover it."""
    if isinstance(field_type, DecimalType):
        return f"DECIMAL({field_type.precision},{field_type.scale})"
    return _DUCKDB_TYPES.get(type(field_type))


def schema_map(schema: Schema) -> str | None:
    """The `schema=` argument of read_parquet for `schema` (top-level primitive fields), or None."""
    parts = []
    for field in schema.fields:
        kind = duckdb_type(field.field_type)
        if kind is None or field.initial_default is not None:
            return None
        entry = f"name: {_string(field.name)}, type: {_string(kind)}, default_value: NULL"
        parts.append(f"{int(field.field_id)}: {{{entry}}}")
    return "MAP {" + ", ".join(parts) + "}"


def local_path(location: str) -> str | None:
    """A data file's location as a local path DuckDB reads literally, None for object stores."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    path = location if not parsed.scheme else parsed.netloc + parsed.path
    return None if _GLOB & set(path) else path


@dataclass(frozen=True)
class ScanSchema:
    """What a DuckDB scan of planned files needs: their local paths and the field map."""

    paths: list[str]
    field_map: str

    def source(self, *options: str) -> str:
        """The read_parquet call (paths bound as `$paths`)."""
        extra = "".join(f", {option}=true" for option in options)
        return f"read_parquet($paths, schema={self.field_map}{extra})"


def scan_schema(
    table: Table, tasks: Sequence[FileScanTask], schema: Schema, *, raw: bool = False
) -> ScanSchema | None:
    """The paths and field map to read `tasks` projected on `schema` with DuckDB, None if unsafe.

    With `raw`, delete files are allowed: the caller wants rows as stored (file positions)."""
    metadata = table.metadata
    if metadata.format_version > 2 or NAME_MAPPING_PROPERTY in metadata.properties:
        return None
    if not raw and any(task.delete_files for task in tasks):
        return None
    if any(field.initial_default is not None for field in metadata.schema().fields):
        return None
    field_map = schema_map(schema)
    if field_map is None:
        return None
    paths = []
    for task in tasks:
        path = local_path(task.file.file_path)
        if path is None:
            return None
        paths.append(path)
    return ScanSchema(paths, field_map)


# ---- the queries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchedRows:
    rows: pa.Table  # the rows whose key tuple is in the keys, filtered, projected
    rows_scanned: int  # rows in the files DuckDB scanned (their record counts)


@dataclass(frozen=True)
class MatchedScan:
    """The rows of planned files whose key tuple is in `keys`, not read yet: a query to run where
    the rows are needed (`to_arrow()`, in calve's own read database: a step's database may not read
    files). Build it with `scan_matched`."""

    read: ScanSchema
    keys: pa.Table  # cast to the columns' types
    columns: tuple[str, ...]  # the projection, in order
    result_schema: pa.Schema  # the Arrow schema of the rows, as ArrowScan would give them
    rows_scanned: int  # rows in the files the query scans (their record counts)

    def select(self, keys_relation: str) -> str:
        """The query, over the keys registered as `keys_relation` (paths bound as `$paths`)."""
        columns = ", ".join(f"d.{_identifier(c)}" for c in self.columns)
        keys = _identifier(keys_relation)
        on = " AND ".join(f"d.{_identifier(n)} = {keys}.{_identifier(n)}" for n in self.keys.column_names)
        return (
            f"SELECT {columns} FROM {self.read.source()} AS d SEMI JOIN {_identifier(keys_relation)} ON {on}"
        )

    def to_arrow(self) -> pa.Table:
        """The rows as an Arrow table (read in calve's own read database)."""
        if not self.read.paths or self.keys.num_rows == 0:
            return self.result_schema.empty_table()
        with _cursor() as con:
            con.register("__calve_keys", self.keys)
            rows = con.sql(self.select("__calve_keys"), params={"paths": self.read.paths}).to_arrow_table()
        return rows.cast(self.result_schema)


def read_all(table: Table, tasks: Sequence[FileScanTask], schema: Schema) -> pa.Table | None:
    """Every row of `tasks` projected onto `schema`, read by DuckDB (about twice as fast as
    ArrowScan on appended files); None when DuckDB may not read these files."""
    read = scan_schema(table, tasks, schema)
    if read is None:
        return None
    if not tasks:
        return _result_schema(schema).empty_table()
    columns = ", ".join(_identifier(f.name) for f in schema.fields)
    with _cursor() as con:
        rows = con.sql(
            f"SELECT {columns} FROM {read.source()}", params={"paths": read.paths}
        ).to_arrow_table()
    return rows.cast(_result_schema(schema))


def scan_matched(
    table: Table, tasks: Sequence[FileScanTask], keys: pa.Table, schema: Schema
) -> MatchedScan | None:
    """`read_matched` without a row filter, as a `MatchedScan` to run later; None when DuckDB may
    not read these files."""
    names = keys.column_names
    if any(n not in {f.name for f in schema.fields} for n in names):
        return None
    read = scan_schema(table, tasks, schema)
    if read is None:
        return None
    columns = tuple(f.name for f in schema.fields)
    rows_scanned = sum(task.file.record_count for task in tasks)
    return MatchedScan(read, cast_keys(schema, keys), columns, _result_schema(schema), rows_scanned)


def read_matched(
    table: Table,
    tasks: Sequence[FileScanTask],
    keys: pa.Table,
    row_filter: BooleanExpression,
    schema: Schema,
) -> MatchedRows | None:
    """The rows of `tasks` whose key tuple (the columns of `keys`) is in `keys` and that match
    `row_filter`, projected onto `schema`: ArrowScan followed by an exact semi-join, in one DuckDB
    query. None when DuckDB may not read these files (see the module docstring)."""
    names = keys.column_names
    current = table.schema()
    filter_ids = _filter_field_ids(table, row_filter)
    # the projection (maybe an older snapshot's schema), the key columns in it, the filter's columns
    fields = {f.field_id: f for f in schema.fields}
    for field_id in filter_ids - fields.keys():
        fields[field_id] = current.find_field(field_id)
    if any(fields[i].name != current.find_field(i).name for i in filter_ids):
        return None  # a filter column renamed since the pinned snapshot: leave it to ArrowScan
    if len({f.name for f in fields.values()}) < len(fields):
        return None
    scan = Schema(*fields.values())
    read = scan_schema(table, tasks, scan)
    if read is None:
        return None
    if not tasks or keys.num_rows == 0:
        return MatchedRows(schema.as_arrow().empty_table(), 0)  # as read_files gives no rows
    with _cursor() as con:
        con.register("__calve_keys", cast_keys(scan, keys))
        rows = con.sql(
            f"SELECT d.* FROM {read.source()} AS d SEMI JOIN __calve_keys AS k ON {_on(names)}",
            params={"paths": read.paths},
        ).to_arrow_table()
    if filter_ids:  # applied as ArrowScan applies it, over the (few) matched rows
        rows = rows.filter(expression_to_pyarrow(bind(current, row_filter, case_sensitive=True)))
    rows = rows.select([f.name for f in schema.fields]).cast(_result_schema(schema))
    return MatchedRows(rows, sum(task.file.record_count for task in tasks))


def matching_files(table: Table, tasks: Sequence[FileScanTask], keys: pa.Table) -> dict[str, int] | None:
    """Per data file path of `tasks`: how many of its rows hold a key tuple of `keys` (files
    holding none are left out). None when DuckDB may not read these files."""
    names = keys.column_names
    read = scan_schema(table, tasks, table.schema().select(*names))
    if read is None:
        return None
    if not tasks or keys.num_rows == 0:
        return {}
    by_path = {path: task.file.file_path for path, task in zip(read.paths, tasks, strict=True)}
    with _cursor() as con:
        con.register("__calve_keys", cast_keys(table.schema(), keys))
        hits = con.sql(
            f"SELECT filename, count(*) FROM {read.source('filename')} AS d "
            f"SEMI JOIN __calve_keys AS k ON {_on(names)} GROUP BY filename",
            params={"paths": read.paths},
        ).fetchall()
    return {by_path[path]: int(count) for path, count in hits}


def read_unmatched(table: Table, tasks: Sequence[FileScanTask], keys: pa.Table) -> pa.Table | None:
    """Every row of `tasks` (current schema) whose key tuple is not in `keys`. None when unsafe."""
    names = keys.column_names
    schema = table.schema()
    read = scan_schema(table, tasks, schema)
    if read is None:
        return None
    if not tasks:
        return schema.as_arrow().empty_table()
    with _cursor() as con:
        con.register("__calve_keys", cast_keys(table.schema(), keys))
        rows = con.sql(
            f"SELECT d.* FROM {read.source()} AS d ANTI JOIN __calve_keys AS k ON {_on(names)}",
            params={"paths": read.paths},
        ).to_arrow_table()
    return rows.cast(_result_schema(schema))


def matched_positions(
    table: Table, tasks: Sequence[FileScanTask], keys: pa.Table
) -> dict[str, np.ndarray[Any, Any]] | None:
    """Per data file path: the sorted positions in the file of the rows holding a key tuple of
    `keys`, as stored (deletes not applied: the caller subtracts rows already deleted). Files
    holding none are left out. None when DuckDB may not read these files."""
    names = keys.column_names
    read = scan_schema(table, tasks, table.schema().select(*names), raw=True)
    if read is None:
        return None
    if not tasks or keys.num_rows == 0:
        return {}
    by_path = {path: task.file.file_path for path, task in zip(read.paths, tasks, strict=True)}
    with _cursor() as con:
        con.register("__calve_keys", cast_keys(table.schema(), keys))
        hits = con.sql(
            f"SELECT filename, file_row_number FROM {read.source('filename', 'file_row_number')} AS d "
            f"SEMI JOIN __calve_keys AS k ON {_on(names)}",
            params={"paths": read.paths},
        ).to_arrow_table()
    if hits.num_rows == 0:
        return {}
    files = hits.column("filename").combine_chunks().dictionary_encode()
    indices = files.indices.to_numpy(zero_copy_only=False)
    rows = hits.column("file_row_number").to_numpy().astype(np.int64, copy=False)
    order = np.lexsort((rows, indices))
    indices, rows = indices[order], rows[order]
    bounds = np.flatnonzero(np.diff(indices)) + 1
    result = {}
    for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(rows)], strict=True):
        result[by_path[files.dictionary[int(indices[start])].as_py()]] = rows[start:stop]
    return result


def _filter_field_ids(table: Table, row_filter: BooleanExpression) -> set[int]:
    if isinstance(row_filter, AlwaysTrue):
        return set()
    return extract_field_ids(bind(table.schema(), row_filter, case_sensitive=True))


def _result_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of ArrowScan's rows (of pyiceberg-written files): no field ids in the column
    metadata, strings and binaries with 32-bit offsets (DuckDB's own Arrow types)."""
    small = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}
    arrow = schema_to_pyarrow(schema, include_field_ids=False)
    return pa.schema([f.with_type(small.get(f.type, f.type)) for f in arrow])


def cast_keys(schema: Schema, keys: pa.Table) -> pa.Table:
    """The keys with their columns' types in `schema`, as joins with the table's rows compare them."""
    return keys.cast(Schema(*(schema.find_field(n) for n in keys.column_names)).as_arrow())


def _on(names: Sequence[str]) -> str:
    """Equality of every key column (NULL matches nothing, as in Arrow's joins)."""
    return " AND ".join(f"d.{_identifier(n)} = k.{_identifier(n)}" for n in names)


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---- the database ------------------------------------------------------------------------------


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Whether two tables of one schema hold the same rows (as multisets; row order does not matter).

    Compared by fingerprint: the row count and the exact sums of two independent 64-bit hashes of
    every row (DuckDB's `hash` of the row's values, unsalted and salted). Equal multisets always
    match; different ones match with a probability near 2^-128. About 20 times cheaper than an
    EXCEPT ALL both ways, which costs as much as recomputing the rows.
    """
    if a.num_rows != b.num_rows:
        return False
    if a.num_rows == 0:
        return True
    columns = ", ".join(_identifier(name) for name in a.column_names)
    query = (
        f"SELECT count(*), sum(hash({columns})::HUGEINT), sum(hash({columns}, 'calve')::HUGEINT) "
        "FROM __calve_rows"
    )
    fingerprints: list[list[tuple[Any, ...]]] = []
    for rows in (a, b.select(a.column_names).cast(a.schema)):
        with _cursor() as con:
            con.register("__calve_rows", rows)
            fingerprints.append(con.execute(query).fetchall())
    return bool(fingerprints[0] == fingerprints[1])


_DATABASE: Any = None
_LOCK = threading.Lock()
_CURSORS = itertools.count()


class _cursor:
    """A cursor of the shared read database, closed (its registrations gone) after the block."""

    def __enter__(self) -> Any:
        global _DATABASE
        import duckdb

        with _LOCK:
            if _DATABASE is None:
                database = duckdb.connect(":memory:")
                # a global option in DuckDB, and this database runs only the joins of this module
                # (never a step's SQL): keep the keys as the hash join's build side
                database.execute("SET disabled_optimizers = 'build_side_probe_side'")
                _DATABASE = database
            self.con = _DATABASE.cursor()
        return self.con

    def __exit__(self, *exc: object) -> None:
        self.con.close()
