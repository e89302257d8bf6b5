"""`calve lateness` on tables built here with known late rows: bounds and --exact agree where the
bounds pin every row's lateness, and the rows each lookback would miss are exactly the late ones."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, LongType, NestedField, TimestampType

from calve.observe.lateness import lateness_report

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "event_day", DateType(), required=False),
    NestedField(3, "ingest_day", DateType(), required=False),
)
WINDOWS = [("3d", 3 * 86400), ("7d", 7 * 86400), ("14d", 14 * 86400), ("15d", 15 * 86400)]
DAY = 86400.0


def batch(ingest: int, rows_by_event_day: dict[int, int]) -> pa.Table:
    """Rows that arrive on 2026-01-`ingest`: `rows_by_event_day[d]` of them for event day 2026-01-d."""
    events = [dt.date(2026, 1, d) for d, n in rows_by_event_day.items() for _ in range(n)]
    return pa.table(
        {
            "id": pa.array(range(len(events)), pa.int64()),
            "event_day": pa.array(events, pa.date32()),
            "ingest_day": pa.array([dt.date(2026, 1, ingest)] * len(events), pa.date32()),
        }
    )


def late_table(catalog: SqlCatalog, name: str, partitioned: bool) -> Table:
    spec = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "event_day")) if partitioned else None
    table = catalog.create_table(name, schema=SCHEMA, **({"partition_spec": spec} if spec else {}))
    table.append(batch(1, {1: 10}))  # on time
    table.append(batch(5, {5: 8, 2: 3}))  # 3 rows 3 days late
    table.append(batch(20, {20: 5, 4: 2, 6: 4}))  # 2 rows 16 days late, 4 rows 14 days late
    return table


def test_bounds_and_exact_agree_and_the_missed_rows_are_exact(catalog: SqlCatalog) -> None:
    table = late_table(catalog, "db.late", partitioned=True)  # one event day per file: bounds are exact
    bounds = lateness_report(table, "event_day", arrival_column="ingest_day", windows=WINDOWS)
    exact = lateness_report(table, "event_day", arrival_column="ingest_day", windows=WINDOWS, exact=True)
    for report in (bounds, exact):
        assert report.rows == 32 and report.uncertain_rows == 0
        assert {k: v for k, v in report.distribution.items() if v} == {"0-1d": 23, "3-7d": 3, "14-30d": 6}
        assert [(w.name, w.rows_missed, w.rows_missed_max) for w in report.windows] == [
            ("3d", 9, 9),
            ("7d", 6, 6),
            ("14d", 6, 6),  # 14 days late is too late for a 14-day lookback
            ("15d", 2, 2),
        ]
        assert [(s.rows, s.lateness_min_s, s.lateness_max_s) for s in report.snapshots] == [
            (10, 0.0, 0.0),
            (11, 0.0, 3 * DAY),
            (11, 0.0, 16 * DAY),
        ]
    assert exact.percentiles["max_s"] == 16 * DAY and exact.percentiles["p50_s"] == 0.0
    assert exact.snapshots[2].p90_s is not None and exact.snapshots[2].p90_s >= 14 * DAY
    # --since a snapshot: only the later ones
    first = table.history()[0].snapshot_id
    since = lateness_report(table, "event_day", arrival_column="ingest_day", since_snapshot_id=first)
    assert since.rows == 22 and len(since.snapshots) == 2


def test_files_of_several_event_days_are_uncertain_from_bounds_and_counted_by_exact(
    catalog: SqlCatalog,
) -> None:
    table = late_table(catalog, "db.mixed", partitioned=False)  # one file per batch, several event days
    bounds = lateness_report(table, "event_day", arrival_column="ingest_day", windows=WINDOWS)
    exact = lateness_report(table, "event_day", arrival_column="ingest_day", windows=WINDOWS, exact=True)
    assert bounds.distribution["0-1d"] == 10 and bounds.uncertain_rows == 22  # batches 2 and 3 span buckets
    assert exact.uncertain_rows == 0
    assert {k: v for k, v in exact.distribution.items() if v} == {"0-1d": 23, "3-7d": 3, "14-30d": 6}
    for b, e in zip(bounds.windows, exact.windows, strict=True):
        assert b.rows_missed <= e.rows_missed == e.rows_missed_max <= b.rows_missed_max
    assert [(w.rows_missed, w.rows_missed_max) for w in bounds.windows] == [
        (0, 22),
        (0, 11),
        (0, 11),
        (0, 11),
    ]


def test_the_command_with_commit_time_as_arrival(catalog: SqlCatalog, home: Path) -> None:
    schema = Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(2, "ts", TimestampType(), required=False),
    )
    table = catalog.create_table("db.clicks", schema=schema)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    table.append(
        pa.table(
            {
                "id": pa.array(range(8), pa.int64()),
                "ts": pa.array(
                    [now - dt.timedelta(days=10)] * 3 + [now - dt.timedelta(hours=1)] * 5, pa.timestamp("us")
                ),
            }
        )
    )
    env = {**os.environ, "CALVE_HOME": str(home)}
    args = ["lateness", "db.clicks", "--event-time", "ts", "--lookback", "7d,14d"]
    for extra in ([], ["--exact"]):
        done = subprocess.run(
            [sys.executable, "-m", "calve", *args, *extra, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        payload = json.loads(done.stdout)
        assert payload["arrival"] == "commit" and payload["rows"] == 8
        windows = {w["window"]: (w["rows_missed"], w["rows_missed_max"]) for w in payload["windows"]}
        if extra:
            assert windows == {"7d": (3, 3), "14d": (0, 0)}
            assert set(payload["percentiles"]) == {"p50_s", "p90_s", "p99_s", "max_s"}
        else:  # one file holds both: its bounds say 1 hour to 10 days
            assert windows == {"7d": (0, 8), "14d": (0, 0)}
        assert [d["bucket"] for d in payload["distribution"]][:2] == ["early", "0-1d"]
    text = subprocess.run(
        [sys.executable, "-m", "calve", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert text.returncode == 0 and "a lookback of 14d would miss 0 rows" in text.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "calve", "lateness", "db.clicks", "--event-time", "tss"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert wrong.returncode == 1 and "did you mean 'ts'" in wrong.stderr
