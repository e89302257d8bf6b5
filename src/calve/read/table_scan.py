"""A table's rows at a snapshot, planned on the driver and read where the engine runs.

An engine that reads Iceberg itself (the Daft engines, on their workers) receives an input as a
`TableScan`: the table, the pinned snapshot, the row filter and the projection, with the files
pyiceberg planned for them. Every other engine, and any calve code that needs the rows on the
driver, calls `to_arrow()`, which reads the planned files with pyiceberg here.

    scan = TableScan(table, snapshot_id, row_filter, projection, tuple(tasks))
    scan.to_arrow()   # on the driver: exactly the rows the engine would read

With `keys` (an input with `match:`), only the rows whose key tuple is a row of `keys` are the
input's: the tasks are then the files that may hold one (`calve.write.merge.plan_key_files`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyiceberg.expressions import BooleanExpression
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table

from calve.read.planning import read_files

NAME_MAPPING_PROPERTY = "schema.name-mapping.default"


@dataclass(frozen=True)
class TableScan:
    """The rows of `table` at `snapshot_id` that match `row_filter`, with `projection`'s columns."""

    table: Table
    snapshot_id: int | None
    row_filter: BooleanExpression
    projection: Schema
    tasks: tuple[FileScanTask, ...]  # the planned files (pruned by partition and column bounds)
    keys: pa.Table | None = None  # match: the key tuples (columns named as the table's) to keep

    @property
    def column_names(self) -> list[str]:
        return self.projection.column_names

    @property
    def rows_scanned(self) -> int:
        """The rows of the planned files (their record counts): what a reader decodes for them."""
        return sum(task.file.record_count for task in self.tasks)

    @property
    def bytes_scanned(self) -> int:
        return sum(task.file.file_size_in_bytes for task in self.tasks)

    @property
    def has_deletes(self) -> bool:
        return any(task.delete_files for task in self.tasks)

    def to_arrow(self) -> pa.Table:
        """The rows, read on the driver by pyiceberg (deletes applied, the filter and keys exact)."""
        rows = read_files(self.table, list(self.tasks), self.row_filter, self.projection)
        return rows if self.keys is None else semi_join(rows, self.keys)


def semi_join(table: pa.Table, keys: pa.Table) -> pa.Table:
    """The rows of `table` whose key tuple (the columns of `keys`) is in `keys`, in table order."""
    names = keys.column_names
    numbered = table.select(names).append_column(
        "__calve_row", pa.array(np.arange(table.num_rows, dtype=np.int64))
    )
    kept = numbered.join(keys.cast(table.select(names).schema), keys=names, join_type="left semi")
    row_ids = kept.column("__calve_row").to_numpy()
    return table.take(np.sort(row_ids))


def readable_by_name(table: Table) -> bool:
    """Whether the table's data files can be read by column name (as `daft.read_parquet` does)
    instead of by field id: one schema ever (no rename, no added column), no name mapping (files
    without field ids), no column defaults, format v1 or v2."""
    metadata = table.metadata
    return (
        len(metadata.schemas) == 1
        and metadata.format_version <= 2
        and NAME_MAPPING_PROPERTY not in metadata.properties
        and all(field.initial_default is None for field in metadata.schema().fields)
    )


def has_equality_deletes(tasks: tuple[FileScanTask, ...] | list[FileScanTask]) -> bool:
    from pyiceberg.manifest import DataFileContent

    return any(d.content == DataFileContent.EQUALITY_DELETES for t in tasks for d in t.delete_files)
