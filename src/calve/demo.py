"""`calve demo`: change capture end to end on tables it creates (the playback demo comes later).

Round after round, a day of events lands in `calve_demo.events` with a few late events for earlier
days. The consumer `demo_daily` processes only the snapshots past its checkpoint: it publishes them
as a zero-copy ICDC table, reads the changed days from it, recomputes those days from the source
and overwrites them in `calve_demo.daily_views`, committing output and checkpoint together.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import In
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, LongType, NestedField

from calve.consumer import Consumer
from calve.icdc import default_icdc_identifier, drop_icdc_table
from calve.ranges import change_ranges
from calve.state import StateStore

NAMESPACE = "calve_demo"
SOURCE = f"{NAMESPACE}.events"
TARGET = f"{NAMESPACE}.daily_views"
CONSUMER = "demo_daily"
FIRST_DAY = dt.date(2026, 1, 1)

EVENTS_SCHEMA = Schema(
    NestedField(1, "event_id", LongType(), required=False),
    NestedField(2, "account_id", LongType(), required=False),
    NestedField(3, "event_day", DateType(), required=False),
    NestedField(4, "view_seconds", LongType(), required=False),
)
DAILY_SCHEMA = Schema(
    NestedField(1, "event_day", DateType(), required=False),
    NestedField(2, "events", LongType(), required=False),
    NestedField(3, "view_seconds", LongType(), required=False),
)


def run_demo(
    catalog: Catalog,
    rounds: int = 3,
    events_per_round: int = 2000,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    rng = random.Random(seed)
    source, target = _fresh_tables(catalog)
    consumer = Consumer(catalog, CONSUMER, StateStore())
    report_rounds = []
    next_id = 0
    for round_number in range(rounds):
        batch = _events(rng, round_number, events_per_round, next_id)
        next_id += batch.num_rows
        source.append(batch)
        day = FIRST_DAY + dt.timedelta(round_number)
        progress(f"round {round_number + 1}: appended {batch.num_rows} events for {day}")

        target.refresh()
        changes = consumer.pending(source, target)
        day_range = change_ranges(changes, source.schema(), ["event_day"])["event_day"]
        icdc = consumer.icdc(source, changes)
        changed = catalog.load_table(icdc.identifier).scan(selected_fields=("event_day",)).to_arrow()
        days = sorted(set(changed.column("event_day").to_pylist()))
        changed_days = In("event_day", set(days))  # type: ignore[call-arg,arg-type]
        recomputed = _daily_views(source.scan(row_filter=changed_days).to_arrow())
        consumer.commit(target, [changes], recomputed, mode="overwrite", overwrite_filter=changed_days)
        progress(f"round {round_number + 1}: rewrote {len(days)} day(s) from {icdc.records} changed rows")
        report_rounds.append(
            {
                "round": round_number + 1,
                "snapshots": len(changes.snapshots),
                "files": len(changes.added_files),
                "records": changes.added_records,
                "range_min": day_range.min,
                "range_max": day_range.max,
                "icdc_table": icdc.identifier,
                "icdc_records": icdc.records,
                "days_rewritten": len(days),
            }
        )

    target.refresh()
    expected = _daily_views(source.scan().to_arrow()).sort_by("event_day")
    actual = target.scan().to_arrow().select(expected.column_names).sort_by("event_day")
    return {
        "rounds": report_rounds,
        "days": expected.num_rows,
        "matches_recomputation": actual.cast(expected.schema).equals(expected),
    }


def _fresh_tables(catalog: Catalog) -> tuple[Table, Table]:
    catalog.create_namespace_if_not_exists(NAMESPACE)
    for name in (SOURCE, TARGET):
        with contextlib.suppress(NoSuchTableError):
            catalog.drop_table(name)  # demo tables only; never purged
    drop_icdc_table(catalog, default_icdc_identifier(SOURCE, CONSUMER))
    spec = PartitionSpec(PartitionField(3, 1000, IdentityTransform(), "event_day"))
    source = catalog.create_table(SOURCE, EVENTS_SCHEMA, partition_spec=spec)
    target = catalog.create_table(
        TARGET,
        DAILY_SCHEMA,
        partition_spec=PartitionSpec(PartitionField(1, 1000, IdentityTransform(), "event_day")),
    )
    return source, target


def _events(rng: random.Random, day_index: int, count: int, first_id: int) -> pa.Table:
    """A day of events; about 5% of them are late events for earlier days."""
    days = []
    for _ in range(count):
        late = day_index > 0 and rng.random() < 0.05
        days.append(FIRST_DAY + dt.timedelta(rng.randrange(day_index) if late else day_index))
    return pa.table(
        {
            "event_id": pa.array(range(first_id, first_id + count), pa.int64()),
            "account_id": pa.array([rng.randrange(500) for _ in range(count)], pa.int64()),
            "event_day": pa.array(days, pa.date32()),
            "view_seconds": pa.array([rng.randrange(1, 3600) for _ in range(count)], pa.int64()),
        }
    )


def _daily_views(events: pa.Table) -> pa.Table:
    grouped = events.group_by("event_day").aggregate([("event_id", "count"), ("view_seconds", "sum")])
    return pa.table(
        {
            "event_day": grouped.column("event_day"),
            "events": pc.cast(grouped.column("event_id_count"), pa.int64()),
            "view_seconds": grouped.column("view_seconds_sum"),
        }
    )
