"""Merge on real key sets: composite keys, 100k+ changed rows, only the affected files rewritten."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from calve.errors import CalveError
from calve.write.consumer import Consumer
from calve.write.tables import load_or_create

DAYS = [dt.date(2026, 1, 1) + dt.timedelta(days=d) for d in range(10)]


def daily(accounts: range, days: list[dt.date], value: int) -> pa.Table:
    n = len(accounts)
    return pa.table(
        {
            "account_id": pa.array([a for _ in days for a in accounts], pa.int64()),
            "day": pa.array([d for d in days for _ in range(n)], pa.date32()),
            "seconds": pa.array([value] * (n * len(days)), pa.int64()),
        }
    )


def test_merge_of_150k_composite_keys_rewrites_only_the_touched_partitions(catalog: SqlCatalog) -> None:
    table = load_or_create(catalog, "db.daily", daily(range(1), DAYS[:1], 0).schema, ("day",))
    consumer = Consumer(catalog, "merge_test")
    consumer.commit(table, [], daily(range(20_000), DAYS, 1), mode="merge", keys=["account_id", "day"])
    untouched_files = {t.file.file_path for t in table.scan(row_filter="day < '2026-01-08'").plan_files()}

    # the last 3 days: 60k updated keys (20k accounts) and 90k new keys (30k new accounts)
    changed = pa.concat_tables([daily(range(20_000), DAYS[7:], 2), daily(range(20_000, 50_000), DAYS[7:], 3)])
    assert changed.num_rows == 150_000
    result = consumer.commit(table, [], changed, mode="merge", keys=["account_id", "day"])
    assert result.merge is not None
    assert result.merge.rows_matched == 60_000
    assert len(result.merge.deleted_files) == 3  # one file per touched day

    table.refresh()
    now = table.scan().to_arrow()
    assert now.num_rows == 200_000 + 90_000
    assert {
        t.file.file_path for t in table.scan(row_filter="day < '2026-01-08'").plan_files()
    } == untouched_files
    by_value = now.group_by("seconds").aggregate([([], "count_all")]).to_pydict()
    assert dict(zip(by_value["seconds"], by_value["count_all"], strict=True)) == {
        1: 140_000,
        2: 60_000,
        3: 90_000,
    }
    keys = now.group_by(["account_id", "day"]).aggregate([([], "count_all")])
    assert pc.max(keys.column("count_all")).as_py() == 1  # still one row per key


def test_merge_deletes_and_refuses_duplicate_or_null_keys(catalog: SqlCatalog) -> None:
    table = load_or_create(catalog, "db.daily", daily(range(1), DAYS[:1], 0).schema, ("day",))
    consumer = Consumer(catalog, "merge_test")
    consumer.commit(table, [], daily(range(10), DAYS[:2], 1), mode="merge", keys=["account_id", "day"])
    deletes = pa.table(
        {"account_id": pa.array([3, 4], pa.int64()), "day": pa.array([DAYS[0]] * 2, pa.date32())}
    )
    result = consumer.commit(
        table, [], daily(range(1), DAYS[:1], 9), mode="merge", keys=["account_id", "day"], deletes=deletes
    )
    assert result.rows_deleted == 10 and result.files_removed == 1  # day 1's file, rewritten
    table.refresh()
    rows = {(r["account_id"], r["day"]): r["seconds"] for r in table.scan().to_arrow().to_pylist()}
    assert len(rows) == 18 and rows[(0, DAYS[0])] == 9 and (3, DAYS[0]) not in rows

    before = table.current_snapshot()
    twice = pa.concat_tables([daily(range(2), DAYS[:1], 5), daily(range(1), DAYS[:1], 6)])
    with pytest.raises(CalveError, match=r"key\(s\) more than once"):
        consumer.commit(table, [], twice, mode="merge", keys=["account_id", "day"])
    nulls = daily(range(1), DAYS[:1], 5).set_column(0, "account_id", pa.array([None], pa.int64()))
    with pytest.raises(CalveError, match="merge key 'account_id' is null"):
        consumer.commit(table, [], nulls, mode="merge", keys=["account_id", "day"])
    table.refresh()
    assert table.current_snapshot() == before  # refused before anything was written


def test_merge_on_read_gives_the_same_table_as_copy_on_write_and_writes_only_deletes(
    catalog: SqlCatalog,
) -> None:
    from calve.capture.changelog import compute_changelog
    from calve.capture.changes import capture_changes

    schema = daily(range(1), DAYS[:1], 0).schema
    cow = load_or_create(catalog, "db.cow", schema, ("day",))
    mor = load_or_create(catalog, "db.mor", schema, ("day",), {"write.merge.mode": "merge-on-read"})
    rounds = [
        (daily(range(1000), DAYS[:3], 1), None),
        (daily(range(0, 1000, 7), DAYS[1:2], 2), None),  # updates in one day's file
        (
            daily(range(0, 1000, 5), DAYS[1:3], 3),
            daily(range(1, 1000, 11), DAYS[:1], 0).select(["account_id", "day"]),
        ),
        (daily(range(990, 1010), DAYS[1:2], 4), None),  # the same file again: its earlier deletes stay
    ]
    for table in (cow, mor):
        consumer = Consumer(catalog, "merge_test")
        for upserts, deletes in rounds:
            consumer.commit(table, [], upserts, mode="merge", keys=["account_id", "day"], deletes=deletes)
        table.refresh()

    def content(table):  # type: ignore[no-untyped-def]
        return sorted(tuple(r.values()) for r in table.scan().to_arrow().to_pylist())

    assert content(mor) == content(cow)
    summary = mor.current_snapshot().summary  # type: ignore[union-attr]
    assert summary.operation.value == "overwrite"
    # accounts 990..999 of day 2 live in 3 files by now (round 1, and rounds 2-3 for multiples of 7, 5)
    assert int(summary["added-delete-files"]) == 3 and int(summary["added-position-deletes"]) == 10
    assert int(summary["total-records"]) - int(summary["total-position-deletes"]) == len(content(cow))
    # every data file written once: merge-on-read rewrote nothing
    data_files = {t.file.file_path for t in mor.scan().plan_files()}
    assert len(data_files) == 3 + 1 + 2 + 1
    # change capture reads the deletes as row-level changes
    first = mor.metadata.snapshots[0].snapshot_id
    log = compute_changelog(mor, capture_changes(mor, first))
    assert log.deleted.num_rows > 0 and log.inserted.num_rows > 0


def test_merge_on_read_with_string_keys_over_files_with_deletes(catalog: SqlCatalog) -> None:
    """A file that already has position deletes is planned with ArrowScan, whose strings are not
    Iceberg's large strings: the keys are cast to the reader's types before the join."""
    schema = pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64())])
    target = load_or_create(catalog, "db.strings", schema, (), {"write.merge.mode": "merge-on-read"})
    consumer = Consumer(catalog, "strings")
    expected: dict[str, int] = {}
    for i in range(4):
        batch = pa.table({"k": ["a", f"b{i}"], "v": [i, i]}, schema=schema)
        consumer.commit(target, [], batch, mode="merge", keys=["k"])
        expected.update({"a": i, f"b{i}": i})
        assert dict(sorted((r["k"], r["v"]) for r in target.scan().to_arrow().to_pylist())) == expected
