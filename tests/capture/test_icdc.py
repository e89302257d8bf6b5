"""ICDC tables: zero copy, correct after schema and partition evolution, never owning files."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo
from pyiceberg.table import StaticTable
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import StringType

from calve import (
    Consumer,
    NotAnIcdcTableError,
    RowLevelChangesError,
    capture_changes,
    cleanup_icdc_tables,
    create_icdc_table,
    drop_icdc_table,
)
from tests.conftest import EVENTS, ICEBERG_EVENTS, events


def files_under(path: Path) -> set[Path]:
    return {Path(root) / name for root, _, names in os.walk(path) for name in names}


def test_icdc_table_references_exactly_the_appended_files_without_copying(
    catalog: SqlCatalog, home: Path
) -> None:
    source = catalog.create_table("db.ev", schema=EVENTS)
    source.append(events(range(5)))
    first = source.current_snapshot().snapshot_id
    source.append(events(range(5, 8), day=2))
    source.append(events(range(8, 9), day=3))
    data_before = files_under(home / "warehouse" / "db" / "ev" / "data")
    parquet_before = {p for p in files_under(home) if p.suffix == ".parquet"}

    result = create_icdc_table(catalog, source, capture_changes(source, since=first), "scratch.ev_changes")

    assert files_under(home / "warehouse" / "db" / "ev" / "data") == data_before
    assert {p for p in files_under(home) if p.suffix == ".parquet"} == parquet_before  # no data file written
    icdc = catalog.load_table("scratch.ev_changes")
    planned = {t.file.file_path for t in icdc.scan().plan_files()}
    changes = capture_changes(source, since=first)
    assert planned == {f.path for f in changes.added_files}
    assert Counter(icdc.scan().to_arrow().column("id").to_pylist()) == Counter(range(5, 9))
    assert (result.files, result.records) == (2, 4)
    assert icdc.properties["calve.capture.icdc"] == "true"
    assert icdc.properties["gc.enabled"] == "false"
    # any Iceberg reader can open it from the metadata file alone
    static = StaticTable.from_metadata(result.metadata_location)
    assert static.scan().to_arrow().num_rows == 4


def test_icdc_after_schema_evolution_keeps_field_ids(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.ev", schema=EVENTS)
    source.append(events(range(3)))
    first = source.current_snapshot().snapshot_id
    source.append(events(range(3, 5)))  # written before the schema changes
    with source.update_schema() as update:
        update.rename_column("name", "label")
        update.add_column("device", StringType())
        update.delete_column("ts")
    source.append(
        pa.table(
            {"id": pa.array([9], pa.int64()), "day": events([9])["day"], "label": ["x"], "device": ["tv"]}
        )
    )

    create_icdc_table(catalog, source, capture_changes(source, since=first), "scratch.ev_changes")

    rows = sorted(
        catalog.load_table("scratch.ev_changes").scan().to_arrow().to_pylist(), key=lambda r: r["id"]
    )
    assert [r["label"] for r in rows] == ["n3", "n4", "x"]
    assert [r["device"] for r in rows] == [None, None, "tv"]
    assert "ts" not in rows[0]


def test_icdc_after_partition_evolution_keeps_each_files_spec(catalog: SqlCatalog) -> None:
    from pyiceberg.partitioning import PartitionField, PartitionSpec

    source = catalog.create_table(
        "db.ev",
        schema=ICEBERG_EVENTS,
        partition_spec=PartitionSpec(PartitionField(3, 1000, IdentityTransform(), "day")),
    )
    source.append(events(range(3), day=1))
    first = source.current_snapshot().snapshot_id
    source.append(events(range(3, 5), day=2))
    with source.update_spec() as update:
        update.remove_field("day")
        update.add_field("ts", DayTransform(), "ts_day")
    source.append(events(range(5, 8), day=3))

    changes = capture_changes(source, since=first)
    assert {f.spec_id for f in changes.added_files} == {0, 1}
    create_icdc_table(catalog, source, changes, "scratch.ev_changes")

    icdc = catalog.load_table("scratch.ev_changes")
    assert {t.file.spec_id for t in icdc.scan().plan_files()} == {0, 1}
    assert Counter(icdc.scan().to_arrow().column("id").to_pylist()) == Counter(range(3, 8))
    assert icdc.scan(row_filter=EqualTo("day", "2026-01-03")).to_arrow().num_rows == 3


def test_row_level_ranges_are_refused_unless_appends_only(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.ev", schema=EVENTS)
    source.append(events(range(5)))
    first = source.current_snapshot().snapshot_id
    source.append(events(range(5, 7)))
    source.delete(EqualTo("id", 1))
    changes = capture_changes(source, since=first)

    with pytest.raises(RowLevelChangesError, match="--changelog"):
        create_icdc_table(catalog, source, changes, "scratch.x")
    result = create_icdc_table(catalog, source, changes, "scratch.x", appends_only=True)
    assert not result.complete
    assert result.records == 2


def test_dropping_an_icdc_table_never_touches_the_source_data(catalog: SqlCatalog, home: Path) -> None:
    source = catalog.create_table("db.ev", schema=EVENTS)
    source.append(events(range(5)))
    result = create_icdc_table(catalog, source, capture_changes(source), "scratch.ev_changes")
    data = files_under(home / "warehouse" / "db" / "ev" / "data")
    icdc_folder = Path(result.metadata_location.removeprefix("file://")).parent

    drop_icdc_table(catalog, "scratch.ev_changes")

    assert files_under(home / "warehouse" / "db" / "ev" / "data") == data
    assert source.scan().to_arrow().num_rows == 5
    assert not files_under(icdc_folder)  # its own metadata, manifests and manifest list are gone
    assert not catalog.table_exists("scratch.ev_changes")


def test_a_regular_table_is_never_replaced_or_dropped(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.ev", schema=EVENTS)
    source.append(events(range(2)))
    catalog.create_table("db.precious", schema=EVENTS)
    with pytest.raises(NotAnIcdcTableError, match="will not replace or drop"):
        create_icdc_table(catalog, source, capture_changes(source), "db.precious")
    with pytest.raises(NotAnIcdcTableError):
        drop_icdc_table(catalog, "db.precious")
    assert catalog.table_exists("db.precious")


def test_consumer_icdc_tables_are_replaced_and_cleaned_up(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.ev", schema=EVENTS)
    target = catalog.create_table("db.out", schema=EVENTS)
    source.append(events(range(2)))
    consumer = Consumer(catalog, "daily")
    first = consumer.icdc(source, consumer.pending(source, target))
    source.append(events(range(2, 5)))
    second = consumer.icdc(source, consumer.pending(source, target))
    assert first.identifier == second.identifier == "calve_icdc.daily__db__ev"
    assert not Path(first.metadata_location.removeprefix("file://")).exists()  # the old version's metadata
    assert catalog.load_table(second.identifier).scan().to_arrow().num_rows == 5

    assert cleanup_icdc_tables(catalog, "daily") == ["calve_icdc.daily__db__ev"]
    assert not catalog.table_exists(second.identifier)
    assert source.scan().to_arrow().num_rows == 5
