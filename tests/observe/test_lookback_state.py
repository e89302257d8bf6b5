"""The lookback estimate's state kept in the state store: a process that starts without memory reads
no manifest when the store holds the state of the change set's start, and its estimate equals the
one recomputed from every manifest, over appends, overwrites, deletes and compactions."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.expressions import EqualTo, In
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, LongType, NestedField, TimestampType

from calve import capture_changes
from calve.catalog import embedded_catalog
from calve.observe import lookback
from calve.state.lookback import LookbackStates
from calve.state.store import StateStore
from calve.workflows.runner import Runner
from tests.conftest import ProjectFactory
from tests.iceberg_writers import compact

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "day", DateType(), required=False),
    NestedField(3, "ts", TimestampType(), required=False),
)
BY_DAY = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "day"))
DAYS = 3


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    lookback.forget()
    yield
    lookback.forget()


def rows(first_id: int, days: list[int | None]) -> pa.Table:
    """One row per entry of `days` (a day of January 2026, None: no date nor time), ids from `first_id`."""
    dates = [None if d is None else dt.date(2026, 1, 1) + dt.timedelta(days=d) for d in days]
    times = [
        None if d is None else dt.datetime(2026, 1, 1, 7) + dt.timedelta(days=d, hours=i)
        for i, d in enumerate(days)
    ]
    return pa.table(
        {
            "id": pa.array(range(first_id, first_id + len(days)), pa.int64()),
            "day": pa.array(dates, pa.date32()),
            "ts": pa.array(times, pa.timestamp("us")),
        }
    )


def recomputed(table: Table, snapshot_id: int, column: str) -> int | None:
    """The estimate from every manifest, with nothing kept from before."""
    lookback.forget()
    estimate = lookback.lookback_rows(table, snapshot_id, column, DAYS)
    lookback.forget()
    return estimate


def by_hand(table: Table, snapshot_id: int, column: str) -> int:
    """The estimate's definition, from the live files the scan plans."""
    field = table.schema().find_field(column)
    files = [t.file for t in table.scan(snapshot_id=snapshot_id).plan_files()]
    uppers = {
        f.file_path: lookback._micros(field.field_type, (f.upper_bounds or {}).get(field.field_id))
        for f in files
    }
    known = [u for u in uppers.values() if u is not None]
    if not known:
        return sum(f.record_count for f in files)
    end = max(known) + (lookback.DAY_MICROS if column == "day" else 0)
    start = end - DAYS * lookback.DAY_MICROS
    return sum(f.record_count for f in files if uppers[f.file_path] is None or uppers[f.file_path] >= start)  # type: ignore[operator]


def current(table: Table) -> int:
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def test_a_new_process_reads_the_stored_state_instead_of_the_manifests(tmp_path: Path) -> None:
    catalog = embedded_catalog(tmp_path / "home")
    catalog.create_namespace("db")
    table = catalog.create_table("db.t", schema=SCHEMA, partition_spec=BY_DAY)
    for day in range(10):
        table.append(rows(day * 10, [day] * 5 + [day - 2]))
    state = StateStore(tmp_path / "state.db")
    first = current(table)
    estimates = {c: lookback.lookback_rows(table, first, c, DAYS, state=state) for c in ("day", "ts")}
    assert lookback.counters["states_saved"] >= 2
    assert estimates == {c: by_hand(table, first, c) for c in ("day", "ts")}

    table.append(rows(100, [10, 10, 9, None]))  # a new day, a late row, a file without bounds
    table.delete(EqualTo("id", 3))  # an overwrite: day 0's file rewritten without it
    table.delete(In("day", [dt.date(2026, 1, 2)]))  # a delete of whole files
    changes = capture_changes(table, since=first)
    for column in ("day", "ts"):
        lookback.forget()  # a new process: nothing in memory, the state store as the last one left it
        reads, loaded = lookback.counters["manifest_reads"], lookback.counters["states_loaded"]
        estimate = lookback.lookback_rows(table, current(table), column, DAYS, changes, state)
        assert lookback.counters["manifest_reads"] == reads
        assert lookback.counters["states_loaded"] == loaded + 1
        assert estimate == by_hand(table, current(table), column)
        assert estimate == recomputed(table, current(table), column)


def test_a_compaction_in_between_is_recomputed_from_the_manifests(tmp_path: Path) -> None:
    catalog = embedded_catalog(tmp_path / "home")
    catalog.create_namespace("db")
    table = catalog.create_table("db.t", schema=SCHEMA, partition_spec=BY_DAY)
    for day in range(5):
        table.append(rows(day * 10, [day] * 3))
    state = StateStore(tmp_path / "state.db")
    first = current(table)
    lookback.lookback_rows(table, first, "day", DAYS, state=state)
    compact(table)
    table.append(rows(100, [6]))
    changes = capture_changes(table, since=first)
    lookback.forget()
    reads = lookback.counters["manifest_reads"]
    assert lookback.lookback_rows(table, current(table), "day", DAYS, changes, state) == by_hand(
        table, current(table), "day"
    )
    assert lookback.counters["manifest_reads"] > reads  # the stored state could not be used
    stored = LookbackStates(state).get(str(table.metadata.table_uuid), 2)
    assert stored is not None and stored[0] == current(table)  # and was replaced by the new one


def test_a_stored_state_of_another_format_or_type_is_ignored(tmp_path: Path) -> None:
    catalog = embedded_catalog(tmp_path / "home")
    catalog.create_namespace("db")
    table = catalog.create_table("db.t", schema=SCHEMA, partition_spec=BY_DAY)
    table.append(rows(0, [0, 1, 2, 3, 4]))
    state = StateStore(tmp_path / "state.db")
    uuid = str(table.metadata.table_uuid)
    for text in ("not json", json.dumps({"format": 1, "type": "timestamp", "uppers": [[0, 1, 999]]})):
        LookbackStates(state).put(uuid, 2, current(table), text)
        lookback.forget()
        assert lookback.lookback_rows(table, current(table), "day", DAYS, state=state) == 3


def test_a_one_shot_run_reads_no_manifest_of_the_source(project_with: ProjectFactory) -> None:
    """Each run in a fresh process state (as `calve run` starts): after the first, only the state."""
    copy = """
        id: copy
        steps:
          - id: copy
            inputs:
              events: {table: obs.events, read: icdc}
            sql: SELECT id, day, ts FROM events
            output: {table: obs.copied, mode: append, partition_by: [day]}
    """
    project = project_with(settings="observe: {lookback_days: 3}\n", copy=copy)
    project.catalog.create_namespace("obs")
    source = project.catalog.create_table("obs.events", schema=SCHEMA, partition_spec=BY_DAY)
    for day in range(6):
        source.append(rows(day * 10, [day] * 4))
    Runner.for_project(project).run(project.workflow("copy"))
    for day in range(6, 9):
        source.append(rows(day * 10, [day] * 2 + [day - 1]))
        lookback.forget()
        reads = lookback.counters["manifest_reads"]
        result = Runner.for_project(project).run(project.workflow("copy"))
        assert result is not None and result.run.metrics is not None
        assert lookback.counters["manifest_reads"] == reads
        source = project.catalog.load_table("obs.events")
        assert result.run.metrics.lookback_rows_estimate == recomputed(source, current(source), "day")


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"), st.lists(st.one_of(st.none(), st.integers(0, 30)), min_size=1, max_size=6)
        ),
        st.tuples(st.just("delete"), st.integers(0, 2**16)),
        st.tuples(st.just("overwrite"), st.integers(0, 30)),
        st.tuples(st.just("compact"), st.just(0)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=operations, steps=st.lists(st.integers(1, 3), min_size=1, max_size=3))
def test_the_stored_state_brought_forward_equals_the_recomputation(
    history: list[tuple[str, object]], steps: list[int]
) -> None:
    """A history applied a few operations at a time, each batch estimated by a new process from the
    stored state and the change set since it: always the recomputation from manifests."""
    with tempfile.TemporaryDirectory() as folder:
        catalog = embedded_catalog(Path(folder) / "home")
        catalog.create_namespace("db")
        table = catalog.create_table("db.t", schema=SCHEMA, partition_spec=BY_DAY)
        state = StateStore(Path(folder) / "state.db")
        table.append(rows(0, [0, 1, 2]))
        next_id = 3
        last = current(table)
        for column in ("day", "ts"):
            lookback.lookback_rows(table, last, column, DAYS, state=state)
        position = 0
        while position < len(history):
            batch = history[position : position + steps[position % len(steps)]]
            position += len(batch)
            compacted = False
            for op, arg in batch:
                if op == "append":
                    days = arg if isinstance(arg, list) else []
                    table.append(rows(next_id, days))
                    next_id += len(days)
                elif op == "delete" and isinstance(arg, int) and next_id:
                    table.delete(In("id", {arg % next_id, (arg * 7) % next_id}))
                elif op == "overwrite" and isinstance(arg, int):
                    table.overwrite(
                        rows(next_id, [arg, arg]),
                        overwrite_filter=EqualTo("day", dt.date(2026, 1, 1) + dt.timedelta(days=arg)),
                    )
                    next_id += 2
                elif op == "compact" and table.scan().plan_files():
                    compact(table)
                    compacted = True
            now = current(table)
            changes = capture_changes(table, since=last) if now != last else None
            for column in ("day", "ts"):
                lookback.forget()
                reads = lookback.counters["manifest_reads"]
                estimate = lookback.lookback_rows(table, now, column, DAYS, changes, state)
                if not compacted:
                    assert lookback.counters["manifest_reads"] == reads
                assert estimate == by_hand(table, now, column)
                assert estimate == recomputed(table, now, column)
            last = now
