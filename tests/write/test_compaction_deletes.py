"""Compaction folds position deletes: live rows rewritten, old data files and delete files removed
in one `replace` that change capture and changelogs see as no change."""

from __future__ import annotations

from collections import Counter

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.manifest import ManifestContent
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.transforms import IdentityTransform

from calve import Consumer, capture_changes, compute_changelog
from calve.read.planning import plan_files
from calve.write.compaction import compact
from tests.conftest import EVENTS, ICEBERG_EVENTS, events
from tests.iceberg_writers import delete_positions


def ids(table) -> Counter[int]:  # type: ignore[no-untyped-def]
    return Counter(table.scan().to_arrow().column("id").to_pylist())


def live_delete_files(table) -> int:  # type: ignore[no-untyped-def]
    snapshot = table.current_snapshot()
    return sum(
        1
        for m in snapshot.manifests(table.io)
        if m.content == ManifestContent.DELETES
        for _ in m.fetch_manifest_entry(table.io, discard_deleted=True)
    )


def test_compaction_applies_and_removes_position_deletes(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS, properties={"format-version": "2"})
    for start in range(0, 40, 10):
        table.append(events(range(start, start + 10)))
    files = [t.file.file_path for t in table.scan().plan_files()]
    delete_positions(table, {files[0]: [0, 1]})
    delete_positions(table, {files[1]: [5]})
    expected = ids(table)
    before = table.current_snapshot().snapshot_id
    consumer_target = catalog.create_table("db.copy", schema=EVENTS)
    consumer = Consumer(catalog, "copier")
    pending = consumer.pending(table, consumer_target)
    consumer.commit(consumer_target, [pending], compute_changelog(table, pending).inserted)
    assert live_delete_files(table) == 2

    result = compact(table, small_file_bytes=1 << 30, min_files=2, max_delete_files=0)

    table.refresh()
    assert result.files_removed == 4 and result.files_written == 1 and result.delete_files_removed == 2
    assert result.rows == sum(expected.values())
    assert ids(table) == expected
    assert live_delete_files(table) == 0
    assert all(not t.delete_files for t in plan_files(table))
    summary = table.current_snapshot().summary
    assert summary.operation.value == "replace"
    assert summary["removed-position-delete-files"] == "2"
    changes = capture_changes(table, since=before)
    assert [s.operation.value for s in changes.snapshots] == ["replace"]
    assert changes.is_empty and not changes.logical_snapshots
    log = compute_changelog(table, changes)
    assert log.inserted.num_rows == 0 and log.deleted.num_rows == 0
    consumer_target.refresh()
    pending = consumer.pending(table, consumer_target)
    assert compute_changelog(table, pending).inserted.num_rows == 0


def test_one_large_file_with_deletes_is_rewritten_past_max_delete_files(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS, properties={"format-version": "2"})
    table.append(events(range(20)))
    (path,) = [t.file.file_path for t in table.scan().plan_files()]
    delete_positions(table, {path: [3]})
    delete_positions(table, {path: [4]})

    assert compact(table, small_file_bytes=1, min_files=4).partitions == 0  # one file: below min_files
    dry = compact(table, small_file_bytes=1, min_files=4, max_delete_files=1, dry_run=True)
    assert dry.partitions == 1 and dry.snapshot_id is None and dry.delete_files_removed == 2
    table.refresh()
    assert live_delete_files(table) == 2  # a dry run commits nothing

    result = compact(table, small_file_bytes=1, min_files=4, max_delete_files=1)
    table.refresh()
    assert result.snapshot_id == table.current_snapshot().snapshot_id
    assert ids(table) == Counter(set(range(20)) - {3, 4})
    assert live_delete_files(table) == 0


def test_deletes_of_partitions_left_alone_stay_and_dangling_ones_go(catalog: SqlCatalog) -> None:
    spec = PartitionSpec(PartitionField(3, 1000, IdentityTransform(), "day"))
    table = catalog.create_table(
        "db.ev", schema=ICEBERG_EVENTS, partition_spec=spec, properties={"format-version": "2"}
    )
    for start in (0, 10, 20):
        table.append(events(range(start, start + 10), day=1))
    table.append(events(range(100, 110), day=2))
    by_id = {t.file.lower_bounds[1]: t.file.file_path for t in table.scan().plan_files()}
    first_of_day1 = by_id[min(by_id)]
    day2 = by_id[max(by_id)]
    delete_positions(table, {first_of_day1: [0], day2: [1]})
    table.delete("id = 5")  # copy-on-write: rewrites day 1's first file, its delete file dangles
    expected = ids(table)
    assert live_delete_files(table) == 2

    result = compact(table, small_file_bytes=1 << 30, min_files=3)

    table.refresh()
    assert ids(table) == expected
    assert result.partitions == 1  # day 2 has one file (with a delete): below min_files
    assert result.delete_files_removed == 1 and live_delete_files(table) == 1
    (kept,) = [t for t in plan_files(table) if t.delete_files]
    assert kept.file.file_path == day2
