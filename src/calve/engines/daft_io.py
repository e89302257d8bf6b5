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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.expressions.visitors import BoundBooleanExpressionVisitor, bind, visit
from pyiceberg.io.pyarrow import _convert_scalar
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table

from calve.errors import CalveError, DataError
from calve.read.table_scan import TableScan
from calve.write.tables import check_columns

if TYPE_CHECKING:
    import daft

FILE_COLUMN = "__calve_file"


def _daft() -> Any:
    import daft

    return daft


class _ToDaft(BoundBooleanExpressionVisitor[Any]):
    """pyiceberg's bound expression as a Daft expression (values as Python values of the column)."""

    def __init__(self) -> None:
        self.daft = _daft()

    def _col(self, term: Any) -> Any:
        return self.daft.col(term.ref().field.name)

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
    None for no filter. Rows where it is null are dropped, as pyiceberg's scans drop them."""
    if isinstance(row_filter, AlwaysTrue):
        return None
    return visit(bind(schema, row_filter, case_sensitive=True), _ToDaft())


def scan_frame(scan: TableScan) -> Any:
    """A `TableScan` as a Daft DataFrame read on the workers: exactly `scan.to_arrow()`'s rows."""
    daft = _daft()
    table = scan.table
    columns = scan.projection.column_names
    if not scan.tasks:
        return daft.from_arrow(scan.projection.as_arrow().empty_table())
    condition = to_daft_filter(scan.row_filter, table.schema())
    if scan.has_deletes or len(table.schemas()) > 1:
        # deletes to apply, or columns renamed or added since some files were written: Daft's Iceberg
        # reader maps them by field id (it plans the snapshot again, on the driver)
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


class DaftOutput:
    """A step's result computed by Daft and kept where it was computed (on Ray: the workers' object
    stores), collected once; `write_files` and `merge_files` write it as the target's data files."""

    def __init__(self, frame: daft.DataFrame) -> None:
        self.frame = frame.collect()  # computed once; every later action reads the materialized rows
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
            self._rows = len(self.frame)
        return self._rows

    def to_arrow(self) -> pa.Table:
        from calve.engines.daft import conform_types

        return conform_types(self.frame.to_arrow())

    def select_arrow(self, columns: Sequence[str]) -> pa.Table:
        """A few columns on the driver (keys, flags): the rows stay on the workers."""
        from calve.engines.daft import conform_types

        return conform_types(self.frame.select(*columns).to_arrow())

    def _with(self, frame: daft.DataFrame) -> DaftOutput:
        return DaftOutput(frame)

    def where_flag(self, flag: str, keep: bool) -> DaftOutput:
        """The rows whose `flag` column is true (`keep`) or not (false or null), without the flag."""
        column = _daft().col(flag).cast(_daft().DataType.bool()).fill_null(False)
        return self._with(self.frame.where(column if keep else ~column).exclude(flag))

    def sorted(self, columns: Sequence[str]) -> DaftOutput:
        return self._with(self.frame.sort(list(columns)))

    def column_range(self, column: str) -> tuple[Any, Any] | None:
        daft = _daft()
        values = self.frame.agg(
            daft.col(column).min().alias("low"), daft.col(column).max().alias("high")
        ).to_pydict()
        low, high = values["low"][0], values["high"][0]
        return None if low is None else (low, high)

    def conformed(self, target: Table, step: str) -> DaftOutput:
        """The target's columns, in its order and with its types (as `calve.write.tables.conform`)."""
        expected = target.schema().as_arrow()
        check_columns(self.column_names, expected.names, target, step)
        have = self.frame.schema()
        daft = _daft()
        columns = []
        for field in expected:
            column = daft.col(field.name)
            wanted = _daft_type(field.type)
            if have[field.name].dtype != wanted:
                column = column.cast(wanted)
            columns.append(column.alias(field.name))
        from daft.exceptions import DaftCoreException

        try:
            return self._with(self.frame.select(*columns))
        except (DaftCoreException, ValueError) as exc:  # a cast that fails on the data
            raise DataError(
                f"step {step!r}: the output does not convert to {'.'.join(target.name())}'s column types "
                f"({str(exc).splitlines()[0]}); cast it in the step"
            ) from None

    def write_files(self, target: Table) -> list[DataFile]:
        """Write the rows as data files of `target` on the workers; not committed (the driver does)."""
        return write_frame(self.frame, target)

    def merge_files(
        self, target: Table, tasks: Sequence[FileScanTask], keys: pa.Table
    ) -> tuple[list[DataFile], list[DataFile], int]:
        """Upsert the rows into `target` on `keys` (all the key tuples: upserts and deletes), rewriting
        only the planned files that hold one: (files removed, files written, target rows matched)."""
        return merge_frame(self.frame, target, tasks, keys)


def write_frame(frame: daft.DataFrame, target: Table) -> list[DataFile]:
    """The frame's rows written as data files of `target` by the workers (not committed). On Ray,
    rows are first shuffled by the target's partition values, so that each partition is written by
    one task: one file per partition and write (else one per task and partition, and a later merge
    rewrites that many more files)."""
    from daft.dataframe import DataFrame
    from daft.io.iceberg.iceberg_write import partition_field_to_expr
    from daft.runners import get_or_infer_runner_type

    spec, schema = target.spec(), target.schema()
    if spec.fields and get_or_infer_runner_type() == "ray":
        frame = frame.repartition(None, *(partition_field_to_expr(f, schema) for f in spec.fields))
    written = DataFrame(frame._builder.write_iceberg(target, io_config(target))).collect().to_pydict()
    return [f for f in written.get("data_file", []) if f is not None and f.record_count > 0]


def merge_frame(
    upserts: daft.DataFrame, target: Table, tasks: Sequence[FileScanTask], keys: pa.Table
) -> tuple[list[DataFile], list[DataFile], int]:
    daft = _daft()
    names = keys.column_names
    if not tasks:
        return [], write_frame(upserts, target), 0
    by_path = {task.file.file_path: task.file for task in tasks}
    candidates = daft.read_parquet(list(by_path), io_config=io_config(target), file_path_column=FILE_COLUMN)
    schema = target.schema()
    key_frame = daft.from_arrow(keys.cast(Schema(*(schema.find_field(n) for n in names)).as_arrow()))
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
        return [], write_frame(upserts, target), 0
    matched = [read for read in hits[FILE_COLUMN] if counts.get(planned[_local(read)])]
    kept = (
        candidates.where(daft.col(FILE_COLUMN).is_in(matched))
        .join(key_frame, on=names, how="anti")
        .exclude(FILE_COLUMN)
    )
    typed = [daft.col(f.name).cast(_daft_type(f.type)).alias(f.name) for f in schema.as_arrow()]
    rows = kept.select(*typed).concat(upserts.select(*typed))
    return [by_path[path] for path in counts], write_frame(rows, target), sum(counts.values())


def _local(path: str) -> str:
    return path.removeprefix("file://")
