"""A `TableScan` (an input planned, not read) reads on the driver exactly what pyiceberg reads, keys
matched; and a filter value taken from it (`$input.column`) reads that column only, same values."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pyiceberg.expressions import GreaterThanOrEqual, In

from calve.catalog import embedded_catalog
from calve.read.planning import plan_files
from calve.read.table_scan import TableScan
from calve.workflows.filters import expression
from calve.workflows.model import InputColumnRef, Predicate
from calve.write.tables import load_or_create


def test_a_scan_reads_its_rows_and_gives_one_column_to_filters(tmp_path: Path) -> None:
    catalog = embedded_catalog(tmp_path)
    rows = pa.table({"id": pa.array(range(40), pa.int64()), "account": pa.array([i % 7 for i in range(40)])})
    table = load_or_create(catalog, "t.rows", rows.schema, ())
    for start in range(0, 40, 10):
        table.append(rows.slice(start, 10))
    table = catalog.load_table("t.rows")
    row_filter = GreaterThanOrEqual("id", 12)
    keys = pa.table({"id": pa.array([3, 12, 15, 33, 99], pa.int64())})
    scan = TableScan(
        table,
        table.metadata.current_snapshot_id,
        row_filter,
        table.schema(),
        tuple(plan_files(table, row_filter)),
        keys,
    )
    read = scan.to_arrow()
    assert sorted(read.column("id").to_pylist()) == [12, 15, 33]
    assert scan.rows_scanned == 30  # the three files holding ids from 10 up: their record counts
    condition = expression([Predicate("account", "in", InputColumnRef("s", "account"))], {}, {"s": scan})
    assert isinstance(condition, In)
    assert sorted(v.value for v in condition.literals) == sorted({12 % 7, 15 % 7, 33 % 7})
