"""Change ranges of merge-on-read deletes: the bounds of the data files the deletes reference."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.transforms import IdentityTransform
from pyiceberg.typedef import Record

from calve import capture_changes, change_ranges
from tests.conftest import EVENTS, ICEBERG_EVENTS, events
from tests.iceberg_writers import delete_positions


def _files_by_day(table) -> dict[int, str]:  # type: ignore[no-untyped-def]
    return {t.file.partition[0]: t.file.file_path for t in table.scan().plan_files()}


def test_position_deletes_take_the_bounds_of_the_files_they_reference(catalog: SqlCatalog) -> None:
    spec = PartitionSpec(PartitionField(3, 1000, IdentityTransform(), "day"))
    table = catalog.create_table(
        "db.ev", schema=ICEBERG_EVENTS, partition_spec=spec, properties={"format-version": "2"}
    )
    table.append(events(range(0, 10), day=1))
    table.append(events(range(100, 110), day=5))
    table.append(events(range(200, 210), day=9))
    before = table.current_snapshot().snapshot_id
    files = _files_by_day(table)
    day5 = (dt.date(2026, 1, 5) - dt.date(1970, 1, 1)).days
    delete_positions(table, {files[day5]: [0, 3]})

    changes = capture_changes(table, since=before)
    assert len(changes.added_delete_files) == 1 and not changes.added_files
    blind = change_ranges(changes, table.schema(), ["id"])
    assert not blind["id"].complete  # without the table: a delete file has no data bounds

    ranges = change_ranges(changes, table.schema(), ["id", "day"], table=table)
    assert ranges["id"].complete and ranges["day"].complete
    assert (ranges["id"].min, ranges["id"].max) == (100, 109)  # the referenced file, not the table
    assert ranges["day"].min == ranges["day"].max == dt.date(2026, 1, 5)
    assert ranges["id"].files == 1


def test_deletes_of_several_files_and_data_files_in_one_range(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=ICEBERG_EVENTS, properties={"format-version": "2"})
    table.append(events(range(0, 10), day=1))
    table.append(events(range(50, 60), day=2))
    table.append(events(range(500, 510), day=3))
    before = table.current_snapshot().snapshot_id
    paths = {
        t.file.lower_bounds[1]: t.file.file_path for t in table.scan().plan_files()
    }  # keyed by the raw lower bound of id
    by_min = dict(sorted(paths.items()))
    first, second, _third = by_min.values()
    delete_positions(table, {first: [1], second: [2]})
    table.append(events(range(1000, 1002), day=4))

    changes = capture_changes(table, since=before)
    ranges = change_ranges(changes, table.schema(), ["id"], table=table)
    assert ranges["id"].complete
    assert (ranges["id"].min, ranges["id"].max) == (0, 1001)
    assert ranges["id"].files == 3  # two referenced files and the appended one


def test_a_delete_whose_data_file_is_gone_from_the_metadata_stays_incomplete(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS, properties={"format-version": "2"})
    table.append(events(range(5)))
    before = table.current_snapshot().snapshot_id
    (path,) = [t.file.file_path for t in table.scan().plan_files()]
    delete_positions(table, {path: [0]})
    changes = capture_changes(table, since=before)
    (delete,) = changes.added_delete_files
    # a delete that names a file in no manifest (e.g. written by a buggy writer)
    nowhere = {2147483546: b"file:///nowhere.parquet"}
    orphan = DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=delete.path,
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=1,
        file_size_in_bytes=1,
        lower_bounds=nowhere,
        upper_bounds=nowhere,
    )
    orphan.spec_id = 0
    ranges = change_ranges(changes, table.schema(), ["id"], [replace(delete, data_file=orphan)], table=table)
    assert not ranges["id"].complete and ranges["id"].files_without_bounds == 1
