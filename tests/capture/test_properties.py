"""Property: for random histories and random snapshot pairs, change set and changelog account
exactly for the difference between full scans of the two snapshots.

A history mixes appends, copy-on-write deletes (pyiceberg), merge-on-read position deletes and
compactions (built as Spark commits them), and schema changes (added and renamed columns).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.expressions import In
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import StringType

from calve import capture_changes, compute_changelog, create_icdc_table
from calve.capture.changelog import read_tasks, snapshot_schema
from calve.catalog import embedded_catalog
from tests.conftest import EVENTS
from tests.iceberg_writers import compact, delete_positions

operations = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 6)),
    st.tuples(st.just("delete_cow"), st.integers(0, 2**16)),
    st.tuples(st.just("delete_mor"), st.integers(0, 2**16)),
    st.tuples(st.just("compact"), st.just(0)),
    st.tuples(st.just("add_column"), st.just(0)),
    st.tuples(st.just("rename_column"), st.just(0)),
)


def _rows(table: Table, first_id: int, count: int) -> pa.Table:
    schema = table.schema().as_arrow()
    ids = list(range(first_id, first_id + count))
    columns: dict[str, Any] = {}
    for field in schema:
        if field.name == "id":
            columns["id"] = pa.array(ids, pa.int64())
        elif pa.types.is_timestamp(field.type):
            columns[field.name] = pa.array([dt.datetime(2026, 1, 1, i % 24) for i in ids], field.type)
        elif pa.types.is_date(field.type):
            columns[field.name] = pa.array([dt.date(2026, 1, 1 + i % 28) for i in ids], field.type)
        else:
            columns[field.name] = pa.array([f"v{i % 3}" if i % 4 else None for i in ids], field.type)
    return pa.table(columns, schema=schema)


def _apply(table: Table, op: str, arg: int, state: dict[str, int]) -> None:
    live = list(table.scan().plan_files()) if table.current_snapshot() else []
    if op == "append":
        table.append(_rows(table, state["next_id"], arg))
        state["next_id"] += arg
    elif op == "delete_cow" and live:
        ids = table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist()
        if ids:
            victims = {ids[(arg + k * 7) % len(ids)] for k in range(1 + arg % 3)}
            table.delete(In("id", victims))
    elif op == "delete_mor" and live:
        task = live[arg % len(live)]
        positions = sorted({(arg + k) % task.file.record_count for k in range(1 + arg % 2)})
        delete_positions(table, {task.file.file_path: positions})
    elif op == "compact" and live:
        compact(table)
    elif op == "add_column":
        with table.update_schema() as update:
            update.add_column(f"c{state['columns']}", StringType())
        state["columns"] += 1
    elif op == "rename_column":
        current = [f.name for f in table.schema().fields if f.name not in ("id", "ts", "day")]
        if current:
            with table.update_schema() as update:
                update.rename_column(current[0], f"{current[0]}_r")


def _full_scan(table: Table, snapshot_id: int | None, schema: Schema) -> Counter[tuple[Any, ...]]:
    """All rows of a snapshot, projected by field id onto one schema."""
    if snapshot_id is None:
        return Counter()
    tasks = table.scan(snapshot_id=snapshot_id).plan_files()
    return Counter(tuple(row.values()) for row in read_tasks(table, schema, tasks).to_pylist())


def _rows_of(table: pa.Table) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(row.values()) for row in table.to_pylist())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(operations, min_size=1, max_size=8),
    picks=st.lists(st.integers(0, 100), min_size=4, max_size=4),
)
def test_change_sets_account_for_the_difference_of_full_scans(
    history: list[tuple[str, int]], picks: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        catalog = embedded_catalog(Path(folder))
        catalog.create_namespace("db")
        table = catalog.create_table("db.t", schema=EVENTS, properties={"format-version": "2"})
        state = {"next_id": 0, "columns": 0}
        table.append(_rows(table, 0, 3))
        state["next_id"] = 3
        snapshots: list[int | None] = [None, table.current_snapshot().snapshot_id]
        has_deletes = False
        for op, arg in history:
            _apply(table, op, arg, state)
            has_deletes |= op == "delete_mor"
            snapshots.append(table.current_snapshot().snapshot_id)

        for a, b in zip(picks[::2], picks[1::2], strict=True):
            i, j = sorted((a % len(snapshots), b % len(snapshots)))
            since, until = snapshots[i], snapshots[j]
            if until is None or since == until:
                continue
            changes = capture_changes(table, since=since, until=until)
            log = compute_changelog(table, changes)

            schema = snapshot_schema(table, until)
            before, after = _full_scan(table, since, schema), _full_scan(table, until, schema)
            assert _rows_of(log.inserted) == after - before
            assert _rows_of(log.deleted) == before - after
            if not has_deletes:  # without delete files, file record counts are row counts
                assert (
                    sum(after.values()) - sum(before.values())
                    == changes.added_records - changes.removed_records
                )
            if changes.is_append_only:
                icdc = create_icdc_table(catalog, table, changes, "icdc.t")
                icdc_rows = catalog.load_table(icdc.identifier).scan().to_arrow()
                assert icdc.records == log.inserted.num_rows == icdc_rows.num_rows
                # the ICDC table reads with the source's current schema
                current = table.schema()
                expected = _full_scan(table, until, current) - _full_scan(table, since, current)
                assert _rows_of(icdc_rows) == expected
