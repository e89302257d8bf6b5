"""calve's planner returns exactly what pyiceberg's does (data files with their delete files), and
key-tuple planning never drops a file that holds a key."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import AlwaysTrue, EqualTo, GreaterThanOrEqual
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.transforms import IdentityTransform

from calve.read.planning import plan_files, read_files
from calve.write.merge import plan_key_files, read_key_files
from tests.conftest import ICEBERG_EVENTS, events
from tests.iceberg_writers import delete_positions

BY_DAY = PartitionSpec(PartitionField(3, 1000, IdentityTransform(), "day"))


def _as_set(tasks: list) -> set[tuple[str, frozenset[str]]]:  # type: ignore[type-arg]
    return {(t.file.file_path, frozenset(d.file_path for d in t.delete_files)) for t in tasks}


def test_planner_matches_pyiceberg_with_filters_and_position_deletes(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=ICEBERG_EVENTS, partition_spec=BY_DAY)
    for day in (1, 2, 3):
        table.append(events(range(day * 100, day * 100 + 50), day=day))
    first = next(iter(table.scan(row_filter=EqualTo("day", "2026-01-02")).plan_files())).file.file_path
    delete_positions(table, {first: [0, 5, 7]})
    table.refresh()
    for row_filter in (AlwaysTrue(), EqualTo("day", "2026-01-02"), GreaterThanOrEqual("id", 300)):
        ours = plan_files(table, row_filter)  # type: ignore[arg-type]
        theirs = list(table.scan(row_filter=row_filter).plan_files())
        assert _as_set(ours) == _as_set(theirs)
        expected = table.scan(row_filter=row_filter).to_arrow()
        assert read_files(table, ours, row_filter).num_rows == expected.num_rows  # type: ignore[arg-type]
    snapshot_id = table.metadata.snapshots[0].snapshot_id
    assert _as_set(plan_files(table, snapshot_id=snapshot_id)) == _as_set(
        list(table.scan(snapshot_id=snapshot_id).plan_files())
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), picks=st.integers(1, 40))
def test_key_planning_keeps_every_file_that_holds_a_key(seed: int, picks: int) -> None:
    import tempfile
    from pathlib import Path

    from calve.catalog import embedded_catalog

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as home:
        catalog = embedded_catalog(Path(home))
        catalog.create_namespace("db")
        table = catalog.create_table("db.ev", schema=ICEBERG_EVENTS, partition_spec=BY_DAY)
        for _ in range(6):  # several files per day, with overlapping id ranges
            day = rng.randint(1, 4)
            start = rng.randint(0, 500)
            table.append(events(range(start, start + rng.randint(1, 60)), day=day))
        rows = table.scan().to_arrow()
        chosen = rng.sample(range(rows.num_rows), min(picks, rows.num_rows))
        keys = rows.take(chosen).select(["day", "id"])
        keys = pa.concat_tables([keys, pa.table({"day": [dt.date(2026, 1, 9)], "id": [7]}).cast(keys.schema)])
        tasks = plan_key_files(table, keys)
        holding = {
            t.file.file_path
            for t in table.scan().plan_files()
            if read_files(table, [t]).join(keys, keys=["day", "id"], join_type="inner").num_rows
        }
        assert holding <= {t.file.file_path for t in tasks}
        matched = read_key_files(table, tasks, keys, AlwaysTrue(), table.schema())
        exact = matched.join(
            keys.group_by(["day", "id"]).aggregate([]), keys=["day", "id"], join_type="inner"
        )
        expected = rows.join(
            keys.group_by(["day", "id"]).aggregate([]), keys=["day", "id"], join_type="inner"
        )
        assert exact.num_rows == expected.num_rows
        assert pc.sum(exact.column("id")).as_py() == pc.sum(expected.column("id")).as_py()
