"""Daft's worker-side reads and writes give exactly what the driver's would: a `TableScan` read by
Daft equals pyiceberg's read of it for generated filters (dates, timestamps, strings, nulls, IN,
NOT, OR), with key matching, and with position deletes; a staged merge removes and writes exactly
what the driver's merge does.

Marked `daft`: needs `calve[ray]`; runs on Daft's local runner, apart from `-m ray`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Not,
    NotEqualTo,
    NotIn,
    NotNull,
    Or,
    StartsWith,
)
from pyiceberg.table import Table

from calve.catalog import embedded_catalog
from calve.read.planning import plan_files
from calve.read.table_scan import TableScan
from calve.write.consumer import Consumer
from calve.write.tables import load_or_create
from tests.conftest import require_extra

pytestmark = pytest.mark.daft

DAYS = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(4)]
NAMES = ["apple", "apricot", "banana", None, "cherry"]


def _rows(start: int, count: int) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "day": pa.array([DAYS[i % len(DAYS)] for i in ids], pa.date32()),
            "at": pa.array(
                [dt.datetime(2026, 3, 1) + dt.timedelta(hours=7 * i) for i in ids], pa.timestamp("us")
            ),
            "name": pa.array([NAMES[i % len(NAMES)] for i in ids], pa.string()),
            "amount": pa.array([None if i % 7 == 0 else i * 1.5 for i in ids], pa.float64()),
        }
    )


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Table]:
    require_extra("daft")
    from daft.runners import get_or_infer_runner_type

    from calve.engines.daft import DaftEngine, _current_runner

    if _current_runner() is not None and get_or_infer_runner_type() != "native":
        pytest.skip("this process runs Daft on Ray: run `pytest -m daft` in a process of its own")
    DaftEngine()._ensure_runner()
    catalog = embedded_catalog(Path(tmp_path_factory.mktemp("daft_io")))
    made = {}
    for name, properties in (("plain", {}), ("mor", {"write.merge.mode": "merge-on-read"})):
        table = load_or_create(catalog, f"io.{name}", _rows(0, 1).schema, ("day",), properties)
        for start in range(0, 120, 40):  # three appends: several files per day
            table.append(_rows(start, 40))
        made[name] = catalog.load_table(f"io.{name}")
    # merge-on-read: a merge of a few keys writes position delete files (calve.write.mor)
    mor = made["mor"]
    Consumer(catalog, "edit").commit(mor, [], _rows(3, 4), mode="merge", keys=["id"])
    made["mor"] = catalog.load_table("io.mor")
    assert any(t.delete_files for t in plan_files(made["mor"]))
    return made


def _values(column: str) -> st.SearchStrategy[object]:
    return {
        "id": st.integers(-5, 130),
        "day": st.sampled_from([*DAYS, dt.date(2026, 2, 27)]),
        "at": st.sampled_from([dt.datetime(2026, 3, 1) + dt.timedelta(hours=h) for h in (0, 35, 300, 900)]),
        "name": st.sampled_from(["apple", "b", "cherry", "zz"]),
        "amount": st.floats(0, 200, allow_nan=False),
    }[column]


@st.composite
def predicates(draw: st.DrawFn, depth: int = 2) -> BooleanExpression:
    if depth > 0 and draw(st.booleans()):
        kind = draw(st.sampled_from(["and", "or", "not"]))
        left = draw(predicates(depth - 1))
        if kind == "not":
            return Not(left)
        right = draw(predicates(depth - 1))
        return And(left, right) if kind == "and" else Or(left, right)
    column = draw(st.sampled_from(["id", "day", "at", "name", "amount"]))
    op = draw(
        st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "null", "not_null", "starts"])
    )
    if op == "null":
        return IsNull(column)
    if op == "not_null":
        return NotNull(column)
    if op == "starts":
        return StartsWith("name", draw(st.sampled_from(["ap", "b", "x"])))
    if op in ("in", "not_in"):
        values = draw(st.lists(_values(column), min_size=1, max_size=3, unique=True))
        return In(column, values) if op == "in" else NotIn(column, values)
    value = draw(_values(column))
    make = {
        "eq": EqualTo,
        "ne": NotEqualTo,
        "lt": LessThan,
        "le": LessThanOrEqual,
        "gt": GreaterThan,
        "ge": GreaterThanOrEqual,
    }[op]
    return make(column, value)


def _sorted(rows: pa.Table) -> list[dict[str, object]]:
    return sorted(rows.to_pylist(), key=lambda r: r["id"])


def _scan(table: Table, row_filter: BooleanExpression, keys: pa.Table | None = None) -> TableScan:
    projection = table.schema().select("id", "day", "name", "amount")
    tasks = tuple(plan_files(table, row_filter))
    return TableScan(table, table.metadata.current_snapshot_id, row_filter, projection, tasks, keys)


def _on_daft(scan: TableScan) -> pa.Table:
    from calve.engines.daft import conform_types
    from calve.engines.daft_io import scan_frame

    return conform_types(scan_frame(scan).to_arrow())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row_filter=predicates(), which=st.sampled_from(["plain", "mor"]))
def test_daft_reads_exactly_the_rows_pyiceberg_reads(
    tables: dict[str, Table], row_filter: BooleanExpression, which: str
) -> None:
    scan = _scan(tables[which], row_filter)
    assert _sorted(_on_daft(scan)) == _sorted(scan.to_arrow())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(st.integers(-3, 125), min_size=1, max_size=12, unique=True),
    which=st.sampled_from(["plain", "mor"]),
)
def test_daft_matches_keys_as_the_driver_does(tables: dict[str, Table], ids: list[int], which: str) -> None:
    keys = pa.table({"id": pa.array(ids, pa.int64())})
    scan = _scan(tables[which], GreaterThanOrEqual("day", DAYS[1]), keys)
    expected = _sorted(scan.to_arrow())
    assert _sorted(_on_daft(scan)) == expected
    assert {r["id"] for r in expected} <= set(ids)


def test_a_staged_merge_rewrites_what_the_driver_merge_rewrites(
    tmp_path: Path, tables: dict[str, Table]
) -> None:
    """The same merge through a `DaftOutput` and as Arrow, into two copies of one table: the same
    files (by partition and rows) removed, the same rows after."""
    import daft

    from calve.engines.daft_io import DaftOutput

    catalog = embedded_catalog(tmp_path)
    upserts = _rows(30, 15).set_column(4, "amount", pa.array([9.0] * 15, pa.float64()))
    removed = {}
    after = {}
    for how in ("driver", "workers"):
        target = load_or_create(catalog, f"io.merge_{how}", _rows(0, 1).schema, ("day",))
        for start in range(0, 120, 40):
            target.append(_rows(start, 40))
        target = catalog.load_table(f"io.merge_{how}")
        data = upserts if how == "driver" else DaftOutput(daft.from_arrow(upserts))
        result = Consumer(catalog, "m").commit(target, [], data, mode="merge", keys=["id"])
        assert result.merge is not None
        removed[how] = sorted((str(f.partition), f.record_count) for f in result.merge.deleted_files)
        assert (result.merge.written_files is not None) == (how == "workers")
        after[how] = _sorted(catalog.load_table(f"io.merge_{how}").scan().to_arrow())
    assert removed["workers"] == removed["driver"] and removed["driver"]
    assert after["workers"] == after["driver"]
    assert len(after["driver"]) == 120


def test_a_staged_output_refuses_values_that_do_not_convert(tmp_path: Path, tables: dict[str, Table]) -> None:
    """Conforming on the workers refuses what pyarrow's safe cast (the driver's path) refuses,
    where Daft's cast alone would store a null or drop a fraction."""
    import daft

    from calve.engines.daft_io import DaftOutput
    from calve.errors import DataError

    catalog = embedded_catalog(tmp_path)
    target = load_or_create(catalog, "io.ints", pa.schema([("id", pa.int32()), ("v", pa.int64())]), ())

    def output(**columns: pa.Array) -> DaftOutput:
        return DaftOutput(daft.from_arrow(pa.table(columns)))

    fine = output(v=pa.array([2, None], pa.int64()), id=pa.array([1, 2], pa.int64()))
    assert fine.conformed(target, "s").to_arrow().to_pylist() == [{"id": 1, "v": 2}, {"id": 2, "v": None}]
    with pytest.raises(DataError, match=r"1 value.*'id' do not convert"):
        output(id=pa.array([2**40, 3], pa.int64()), v=pa.array([1, 2], pa.int64())).conformed(target, "s")
    with pytest.raises(DataError, match="fractions"):
        output(id=pa.array([1], pa.int64()), v=pa.array([1.5], pa.float64())).conformed(target, "s")
