"""Changelog rows: net inserts and deletes, for copy-on-write, merge-on-read deletes and compaction."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo, In
from pyiceberg.types import StringType

from calve import Operation, capture_changes, change_ranges, compute_changelog
from tests.conftest import EVENTS, events
from tests.iceberg_writers import compact, delete_positions


def ids(table: pa.Table) -> Counter[int]:
    return Counter(table.column("id").to_pylist())


def test_append_only_changelog_is_the_appended_rows(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(5)))
    first = table.current_snapshot().snapshot_id
    table.append(events(range(5, 8)))
    log = compute_changelog(table, capture_changes(table, since=first))
    assert ids(log.inserted) == Counter([5, 6, 7])
    assert log.deleted.num_rows == 0
    assert log.files_read == 1


def test_copy_on_write_carry_over_rows_are_not_changes(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(100)))
    first = table.current_snapshot().snapshot_id
    table.delete(In("id", {3, 50}))  # rewrites 98 rows into a new file
    table.append(events([200]))

    log = compute_changelog(table, capture_changes(table, since=first))

    assert ids(log.deleted) == Counter([3, 50])
    assert ids(log.inserted) == Counter([200])
    as_arrow = log.to_arrow()
    assert Counter(as_arrow.column("_change_type").to_pylist()) == {"delete": 2, "insert": 1}


def test_duplicate_rows_are_counted_not_collapsed(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events([1, 1, 2]))
    first = table.current_snapshot().snapshot_id
    table.append(events([1]))
    table.delete(EqualTo("id", 2))
    log = compute_changelog(table, capture_changes(table, since=first))
    assert ids(log.inserted) == Counter([1])
    assert ids(log.deleted) == Counter([2])


def test_merge_on_read_position_deletes_are_deleted_rows(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS, properties={"format-version": "2"})
    table.append(events(range(10)))
    (data_file,) = [t.file.file_path for t in table.scan().plan_files()]
    before = table.current_snapshot().snapshot_id

    delete_positions(table, {data_file: [0, 7]})  # Spark's DELETE WHERE id IN (0, 7), merge-on-read

    changes = capture_changes(table, since=before)
    assert [s.operation for s in changes.snapshots] == [Operation.DELETE]
    assert len(changes.added_delete_files) == 1
    assert changes.added_files == ()
    log = compute_changelog(table, changes)
    assert ids(log.deleted) == Counter([0, 7])
    assert log.inserted.num_rows == 0
    assert ids(table.scan().to_arrow()) == Counter(range(1, 10)) - Counter([7])
    ranges = change_ranges(changes, table.schema(), ["id"])
    assert not ranges["id"].complete  # a delete file carries no bounds for the data columns


def test_compaction_contributes_nothing(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS, properties={"format-version": "2"})
    table.append(events(range(5)))
    table.append(events(range(5, 10)))
    (first_file, _) = sorted(t.file.file_path for t in table.scan().plan_files())
    delete_positions(table, {first_file: [1]})
    before = table.current_snapshot().snapshot_id

    compact(table)  # applies the delete, rewrites into one file: a replace snapshot

    changes = capture_changes(table, since=before)
    assert [s.operation for s in changes.snapshots] == [Operation.REPLACE]
    assert changes.is_empty
    assert changes.added_records == 0
    log = compute_changelog(table, changes)
    assert log.inserted.num_rows == 0
    assert log.deleted.num_rows == 0


def test_changelog_across_schema_evolution_uses_one_schema(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(4)))
    first = table.current_snapshot().snapshot_id
    with table.update_schema() as update:
        update.add_column("device", StringType())
        update.rename_column("name", "label")
    rows = events([10]).rename_columns(["id", "ts", "day", "label"])
    table.append(rows.append_column("device", pa.array(["tv"])))
    table.delete(EqualTo("id", 2))

    log = compute_changelog(table, capture_changes(table, since=first))

    assert log.inserted.column_names == ["id", "ts", "day", "label", "device"]
    assert log.inserted.to_pylist()[0]["label"] == "n10"
    assert log.inserted.to_pylist()[0]["device"] == "tv"
    assert log.deleted.to_pylist() == [
        {
            "id": 2,
            "ts": events([2]).to_pylist()[0]["ts"],
            "day": events([2]).to_pylist()[0]["day"],
            "label": "n2",
            "device": None,
        }
    ]
