"""Reading inputs and writing outputs on Daft's workers; the driver plans and commits.

What moves off the driver with the Daft engines (`engine: daft` or `engine: {name: ray, ...}`):

- **Inputs.** A pinned table or a published ICDC table reaches the engine as a
  `calve.read.table_scan.TableScan`: the files pyiceberg planned on the driver (partition and column
  bounds pruning), the row filter and the projection. The workers read those files
  (`daft.read_parquet`) and apply the filter, converted from pyiceberg's expression
  (`to_daft_filter`). A table with delete files or an evolved schema is read with
  `daft.read_iceberg` at the pinned snapshot instead, which applies position deletes and maps
  columns by field id.
- **Outputs.** The step's result stays on the workers (`DaftOutput`, collected there once). The
  workers write it as Parquet data files of the target (Daft's Iceberg writer: the target's partition
  spec, column statistics, field ids) and hand the driver only the files' metadata
  (`pyiceberg.manifest.DataFile`); the driver commits them with the step's checkpoints in one Iceberg
  commit (`calve.write.consumer`). A run killed between the two leaves orphan files, never rows.
- **Merges.** The driver plans the files that may hold a changed key (`plan_key_files`, manifest
  bounds only). The workers find which of them hold one (the key columns, semi-joined with the keys),
  write those files' other rows with the upserts, and the driver commits: those files out, the new
  ones in. A table with merge-on-read deletes or an evolved schema is merged on the driver.

Daft's Iceberg writer is reached through `DataFrame._builder.write_iceberg`, the step before
`DataFrame.write_iceberg` commits (which calve must do itself, with the checkpoint): tested with
Daft 0.7.26 (`calve[ray]` pins daft < 0.8).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.expressions.visitors import BoundBooleanExpressionVisitor, bind, visit
from pyiceberg.io.pyarrow import _convert_scalar
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table
from pyiceberg.types import BinaryType, FixedType, UUIDType

from calve.errors import CalveError, DataError
from calve.read.duckdb_scan import cast_keys, local_path
from calve.read.table_scan import TableScan, has_equality_deletes, readable_by_name
from calve.write.staged import StagedOutput
from calve.write.tables import check_columns

FILE_COLUMN = "__calve_file"


def _daft() -> Any:
    import daft

    return daft


class NotConvertible(Exception):
    """A filter that Daft would not evaluate as pyiceberg does: the input is read on the driver."""


class _ToDaft(BoundBooleanExpressionVisitor[Any]):
    """pyiceberg's bound expression as a Daft expression (values as Python values of the column)."""

    def __init__(self, schema: Schema) -> None:
        self.daft = _daft()
        self.schema = schema

    def _col(self, term: Any) -> Any:
        field = term.ref().field
        if self.schema.find_column_name(field.field_id) != field.name:  # a nested field
            raise NotConvertible(f"{field.name} is a nested field")
        if isinstance(field.field_type, UUIDType | FixedType | BinaryType):  # compared as bytes by pyarrow
            raise NotConvertible(f"{field.name} is {field.field_type}")
        return self.daft.col(field.name)

    @staticmethod
    def _value(term: Any, value: Any) -> Any:
        return _convert_scalar(value, term.ref().field.field_type).as_py()

    # a null is in no value list, and so is kept by NOT IN: pyarrow's `is_in`, which pyiceberg's
    # reads use, is false for it where Daft's is null (found by tests/engines/test_daft_io.py)
    def visit_in(self, term: Any, literals: set[Any]) -> Any:
        return self._col(term).is_in([self._value(term, v) for v in literals]).fill_null(False)

    def visit_not_in(self, term: Any, literals: set[Any]) -> Any:
        return ~self.visit_in(term, literals)

    def visit_is_nan(self, term: Any) -> Any:
        return self._col(term).is_nan()

    def visit_not_nan(self, term: Any) -> Any:
        return ~self._col(term).is_nan()

    def visit_is_null(self, term: Any) -> Any:
        return self._col(term).is_null()

    def visit_not_null(self, term: Any) -> Any:
        return self._col(term).not_null()

    def visit_equal(self, term: Any, literal: Any) -> Any:
        return self._col(term) == self.daft.lit(self._value(term, literal.value))

    def visit_not_equal(self, term: Any, literal: Any) -> Any:
        return self._col(term) != self.daft.lit(self._value(term, literal.value))

    def visit_greater_than_or_equal(self, term: Any, literal: Any) -> Any:
        return self._col(term) >= self.daft.lit(self._value(term, literal.value))

    def visit_greater_than(self, term: Any, literal: Any) -> Any:
        return self._col(term) > self.daft.lit(self._value(term, literal.value))

    def visit_less_than(self, term: Any, literal: Any) -> Any:
        return self._col(term) < self.daft.lit(self._value(term, literal.value))

    def visit_less_than_or_equal(self, term: Any, literal: Any) -> Any:
        return self._col(term) <= self.daft.lit(self._value(term, literal.value))

    def visit_starts_with(self, term: Any, literal: Any) -> Any:
        return self._col(term).startswith(literal.value)

    def visit_not_starts_with(self, term: Any, literal: Any) -> Any:
        return ~self._col(term).startswith(literal.value)

    def visit_true(self) -> Any:
        return self.daft.lit(True)

    def visit_false(self) -> Any:
        return self.daft.lit(False)

    def visit_not(self, child_result: Any) -> Any:
        return ~child_result

    def visit_and(self, left_result: Any, right_result: Any) -> Any:
        return left_result & right_result

    def visit_or(self, left_result: Any, right_result: Any) -> Any:
        return left_result | right_result


def to_daft_filter(row_filter: BooleanExpression, schema: Schema) -> Any:
    """`row_filter` (pyiceberg, as calve builds from a workflow's `filter:`) as a Daft expression;
    None for no filter. Rows where it is null are dropped, as pyiceberg's scans drop them. Raises
    `NotConvertible` for a filter on a nested, UUID, fixed or binary column."""
    if isinstance(row_filter, AlwaysTrue):
        return None
    return visit(bind(schema, row_filter, case_sensitive=True), _ToDaft(schema))


def scan_frame(scan: TableScan) -> Any:
    """A `TableScan` as a Daft DataFrame read on the workers: exactly `scan.to_arrow()`'s rows.

    The planned files are read by name (`daft.read_parquet`) when that is exact; a table with
    position deletes, or whose files may not match its columns by name, through Daft's Iceberg
    reader (field ids, deletes applied; it plans the snapshot again). Equality deletes, and filters
    Daft would evaluate differently, are read on the driver and handed over."""
    daft = _daft()
    table = scan.table
    columns = scan.projection.column_names
    if not scan.tasks:
        return daft.from_arrow(scan.projection.as_arrow().empty_table())
    try:
        condition = to_daft_filter(scan.row_filter, table.schema())
    except NotConvertible:
        return daft.from_arrow(scan.to_arrow())
    if has_equality_deletes(scan.tasks):
        return daft.from_arrow(scan.to_arrow())
    if scan.has_deletes or not readable_by_name(table):
        frame = daft.read_iceberg(table, snapshot_id=scan.snapshot_id, io_config=io_config(table))
    else:
        paths = [task.file.file_path for task in scan.tasks]
        frame = daft.read_parquet(paths, io_config=io_config(table))
    if condition is not None:
        frame = frame.where(condition)
    if scan.keys is not None:  # match: the rows of the key tuples, joined on the workers
        frame = frame.join(daft.from_arrow(scan.keys), on=scan.keys.column_names, how="semi")
    return frame.select(*columns)


def io_config(table: Table) -> Any:
    """Daft's IOConfig for the table's storage (from the pyiceberg FileIO properties)."""
    from daft.io.iceberg._iceberg import _convert_iceberg_file_io_properties_to_io_config

    return _convert_iceberg_file_io_properties_to_io_config(table.io.properties, table.location())


def _daft_type(arrow_type: pa.DataType) -> Any:
    return _daft().DataType.from_arrow_type(arrow_type)


class DaftOutput(StagedOutput):
    """A step's result computed by Daft and kept where it was computed (on Ray, the workers' object
    stores). The engine's result is collected once (`collect=True`); what calve derives from it
    (without the delete flag, conformed to the target) stays lazy over those collected rows until
    `write_files` or `merge_files` writes it as the target's data files."""

    def __init__(self, frame: Any, collect: bool = True, sort_by: Sequence[str] = ()) -> None:
        self.frame = frame.collect() if collect else frame
        self.sort_by = tuple(sort_by)
        self._rows: int | None = None

    @property
    def schema(self) -> pa.Schema:
        """The rows' Arrow schema as calve stores them (see `calve.engines.daft.conform_types`)."""
        from calve.engines.daft import conform_schema

        return conform_schema(self.frame.schema().to_pyarrow_schema())

    @property
    def column_names(self) -> list[str]:
        return list(self.frame.column_names)

    @property
    def num_rows(self) -> int:
        if self._rows is None:
            self._rows = self.frame.count_rows()
        return self._rows

    def to_arrow(self) -> pa.Table:
        from calve.engines.daft import conform_types

        rows = conform_types(self.frame.to_arrow())
        return rows.sort_by([(c, "ascending") for c in self.sort_by]) if self.sort_by else rows

    def select_arrow(self, columns: Sequence[str]) -> pa.Table:
        """A few columns on the driver (keys, flags): the rows stay on the workers."""
        from calve.engines.daft import conform_types

        return conform_types(self.frame.select(*columns).to_arrow())

    def _with(self, frame: Any) -> DaftOutput:
        return DaftOutput(frame, collect=False, sort_by=self.sort_by)

    def where_flag(self, flag: str, keep: bool) -> DaftOutput:
        """The rows whose `flag` column is true (`keep`) or not (false or null), without the flag."""
        column = _daft().col(flag).cast(_daft().DataType.bool()).fill_null(False)
        return self._with(self.frame.where(column if keep else ~column).exclude(flag))

    def sorted(self, columns: Sequence[str]) -> DaftOutput:
        """Sorted when written: by the partition values, then `columns` (see `write_frame`)."""
        return DaftOutput(self.frame, collect=False, sort_by=columns)

    def column_range(self, column: str) -> tuple[Any, Any] | None:
        daft = _daft()
        values = self.frame.agg(
            daft.col(column).min().alias("low"), daft.col(column).max().alias("high")
        ).to_pydict()
        low, high = values["low"][0], values["high"][0]
        return None if low is None else (low, high)

    def conformed(self, target: Table, step: str) -> DaftOutput:
        """The target's columns, in its order and with its types (as `calve.write.tables.conform`):
        a value that does not convert is refused, as pyarrow's safe cast refuses it (Daft's cast
        would make it null), and so is a cast that would drop a fraction."""
        expected = target.schema().as_arrow()
        check_columns(self.column_names, expected.names, target, step)
        have = self.frame.schema()
        daft = _daft()
        columns, cast = [], []
        for field in expected:
            column = daft.col(field.name)
            wanted = _daft_type(field.type)
            source = have[field.name].dtype
            if source != wanted:
                given = source.to_arrow_dtype()
                if pa.types.is_floating(given) and pa.types.is_integer(field.type):
                    raise DataError(
                        f"step {step!r}: column {field.name!r} is {given} but the table has {field.type}, "
                        "and converting would drop fractions; cast or round it in the step"
                    )
                column = column.cast(wanted)
                cast.append(field.name)
            columns.append(column.alias(field.name))
        conformed = self._with(self.frame.select(*columns))
        if cast:  # a value Daft could not convert became null: count them, on the workers
            counts = self.frame.agg(
                *(daft.col(n).count().alias(f"before_{n}") for n in cast),
                *(c.count().alias(f"after_{c.name()}") for c in columns if c.name() in cast),
            ).to_pydict()
            for name in cast:
                lost = counts[f"before_{name}"][0] - counts[f"after_{name}"][0]
                if lost:
                    raise DataError(
                        f"step {step!r}: {lost} value(s) of column {name!r} do not convert to the table's "
                        f"{expected.field(name).type}; cast them in the step"
                    )
        return conformed

    def write_files(self, target: Table) -> list[DataFile]:
        """Write the rows as data files of `target` on the workers; not committed (the driver does)."""
        return write_frame(self.frame, target, self.sort_by)

    def merge_files(
        self, target: Table, tasks: Sequence[FileScanTask], keys: pa.Table
    ) -> tuple[list[DataFile], list[DataFile], int]:
        """Upsert the rows into `target` on `keys` (all the key tuples: upserts and deletes), rewriting
        only the planned files that hold one: (files removed, files written, target rows matched)."""
        return merge_frame(self.frame, target, tasks, keys, self.sort_by)


def write_frame(frame: Any, target: Table, sort_by: Sequence[str] = ()) -> list[DataFile]:
    """The frame's rows written as data files of `target` by the workers (not committed).

    On Ray, rows are first shuffled by the target's partition values, so that each partition is
    written by one task: one file per partition and write (else one per task and partition, and a
    later merge rewrites that many more files). With `sort_by`, the rows are range-partitioned by the
    partition values and `sort_by` together, which keeps each file sorted. A local file the driver
    cannot see afterwards (the workers wrote to a disk of their own, not the shared warehouse) is
    refused before anything is committed."""
    from daft.dataframe import DataFrame
    from daft.io.iceberg.iceberg_write import partition_field_to_expr
    from daft.runners import get_or_infer_runner_type

    spec, schema = target.spec(), target.schema()
    partitions = [partition_field_to_expr(f, schema) for f in spec.fields]
    if sort_by:
        frame = frame.sort([*partitions, *sort_by])
    elif partitions and get_or_infer_runner_type() == "ray":
        frame = frame.repartition(None, *partitions)
    written = DataFrame(frame._builder.write_iceberg(target, io_config(target))).collect().to_pydict()
    files = []
    for data_file in written.get("data_file", []):
        if data_file is None:
            continue
        path = local_path(data_file.file_path)
        if path is not None:
            if not os.path.exists(path) or os.path.getsize(path) != data_file.file_size_in_bytes:
                raise CalveError(
                    f"a Daft worker wrote {data_file.file_path}, which this process (the driver) cannot "
                    f"read: the workers must write to the warehouse the driver sees ({target.location()}); "
                    "use a shared file system or an object store for a cluster of several machines"
                )
            if data_file.record_count == 0:  # Daft may write an empty file: never committed
                os.unlink(path)
                continue
        if data_file.record_count > 0:
            files.append(data_file)
    return files


def merge_frame(
    upserts: Any, target: Table, tasks: Sequence[FileScanTask], keys: pa.Table, sort_by: Sequence[str] = ()
) -> tuple[list[DataFile], list[DataFile], int]:
    """Merge on the workers: of the planned `tasks` (files that may hold a key), the ones where a key
    tuple of `keys` matched are rewritten without those rows, together with `upserts`:
    (files removed, files written, target rows matched). The caller makes sure the files read by
    name and hold no deletes (`calve.write.merge.plan_merge`)."""
    daft = _daft()
    names = keys.column_names
    if not tasks:
        return [], write_frame(upserts, target, sort_by), 0
    by_path = {task.file.file_path: task.file for task in tasks}
    candidates = daft.read_parquet(list(by_path), io_config=io_config(target), file_path_column=FILE_COLUMN)
    schema = target.schema()
    key_frame = daft.from_arrow(cast_keys(schema, keys))
    hits = (
        candidates.select(FILE_COLUMN, *names)
        .join(key_frame, on=names, how="semi")
        .groupby(FILE_COLUMN)
        .agg(daft.col(names[0]).count("all").alias("hits"))
        .to_pydict()
    )
    # Daft names a local file by its path, without pyiceberg's file:// scheme
    planned = {_local(path): path for path in by_path}
    counts: dict[str, int] = {}
    for read, hit in zip(hits[FILE_COLUMN], hits["hits"], strict=True):
        if _local(read) not in planned:
            raise CalveError(f"Daft read {read!r}, which is not one of the planned files")
        counts[planned[_local(read)]] = hit
    if not counts:
        return [], write_frame(upserts, target, sort_by), 0
    matched = [read for read in hits[FILE_COLUMN] if counts.get(planned[_local(read)])]
    kept = (
        candidates.where(daft.col(FILE_COLUMN).is_in(matched))
        .join(key_frame, on=names, how="anti")
        .exclude(FILE_COLUMN)
    )
    typed = [daft.col(f.name).cast(_daft_type(f.type)).alias(f.name) for f in schema.as_arrow()]
    rows = kept.select(*typed).concat(upserts.select(*typed))
    return [by_path[path] for path in counts], write_frame(rows, target, sort_by), sum(counts.values())


def _local(path: str) -> str:
    return path.removeprefix("file://")
