"""Change sets on real tables: operations, files, net accounting, ancestry errors."""

from __future__ import annotations

import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo, LessThan

from calve import NotAncestorError, Operation, SnapshotNotFoundError, capture_changes
from tests.conftest import EVENTS, ICEBERG_EVENTS, events


def test_appends_are_captured_after_since_only(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(10)))
    first = table.current_snapshot().snapshot_id
    table.append(events(range(10, 15), day=2))
    table.append(events(range(15, 17), day=3))

    changes = capture_changes(table, since=first)

    assert [s.operation for s in changes.snapshots] == [Operation.APPEND, Operation.APPEND]
    assert changes.added_records == 7
    assert changes.removed_records == 0
    assert len(changes.added_files) == 2
    assert changes.is_append_only
    assert changes.to_snapshot_id_inclusive == table.current_snapshot().snapshot_id
    assert {f.partition == {} for f in changes.added_files} == {True}


def test_default_since_is_the_whole_history(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(3)))
    table.append(events(range(3, 5)))
    assert capture_changes(table).added_records == 5


def test_until_bounds_the_range_inclusive(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(3)))
    first = table.current_snapshot().snapshot_id
    table.append(events(range(3, 5)))
    second = table.current_snapshot().snapshot_id
    table.append(events(range(5, 9)))
    changes = capture_changes(table, since=first, until=second)
    assert [s.snapshot_id for s in changes.snapshots] == [second]
    assert changes.added_records == 2


def test_empty_range_and_empty_table(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    assert capture_changes(table).snapshots == ()
    table.append(events(range(3)))
    current = table.current_snapshot().snapshot_id
    assert capture_changes(table, since=current).is_empty


def test_copy_on_write_delete_is_a_row_level_change(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(10)))
    first = table.current_snapshot().snapshot_id
    table.delete(EqualTo("id", 3))  # rewrites the file: overwrite of 10 rows by 9

    changes = capture_changes(table, since=first)

    assert [s.operation for s in changes.snapshots] == [Operation.OVERWRITE]
    assert not changes.is_append_only
    assert changes.removed_records == 10
    assert changes.added_records == 9
    assert changes.appended_files == ()


def test_whole_file_delete_is_a_delete_snapshot(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(5)))
    first = table.current_snapshot().snapshot_id
    table.delete(LessThan("id", 100))
    changes = capture_changes(table, since=first)
    assert [s.operation for s in changes.snapshots] == [Operation.DELETE]
    assert changes.removed_records == 5
    assert changes.added_files == ()


def test_file_added_and_removed_inside_the_range_cancels_out(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(2)))
    first = table.current_snapshot().snapshot_id
    table.append(events(range(100, 105)))
    table.delete(EqualTo("id", 200))  # matches nothing: no snapshot
    table.delete(LessThan("id", 1000))  # removes both files
    changes = capture_changes(table, since=first)
    assert [f.record_count for f in changes.added_files] == []
    assert [f.record_count for f in changes.removed_files] == [2]


def test_since_that_is_not_an_ancestor_is_refused(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(2)))
    base = table.current_snapshot().snapshot_id
    table.append(events(range(2, 4)))
    abandoned = table.current_snapshot().snapshot_id
    table.manage_snapshots().rollback_to_snapshot(base).commit()
    table.append(events(range(4, 6)))

    with pytest.raises(NotAncestorError, match=f"newest common ancestor is {base}"):
        capture_changes(table, since=abandoned)


def test_unknown_snapshot_is_refused(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(2)))
    with pytest.raises(SnapshotNotFoundError, match="expired"):
        capture_changes(table, since=12345)
    with pytest.raises(SnapshotNotFoundError):
        capture_changes(table, until=12345)


def test_expired_since_is_refused(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(2)))
    old = table.current_snapshot().snapshot_id
    table.append(events(range(2, 4)))
    table.maintenance.expire_snapshots().by_id(old).commit()
    with pytest.raises(SnapshotNotFoundError):
        capture_changes(table, since=old)
    with pytest.raises(NotAncestorError, match="expired"):
        capture_changes(table)


def test_partition_values_are_human_readable(catalog: SqlCatalog) -> None:
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import DayTransform, IdentityTransform

    table = catalog.create_table(
        "db.ev",
        schema=ICEBERG_EVENTS,
        partition_spec=PartitionSpec(
            PartitionField(2, 1000, DayTransform(), "ts_day"),
            PartitionField(3, 1001, IdentityTransform(), "day"),
        ),
    )
    table.append(events(range(3), day=4))
    (file,) = capture_changes(table).added_files
    assert file.partition == {"ts_day": "2026-01-04", "day": "2026-01-04"}
