"""A small shop for the workflow tests: events (with late and re-sent ones) and refunds, day by day.

Also the from-scratch recomputation of each example's target, in DuckDB over the full tables, which
the incremental results must equal exactly (amounts are integer cents, so sums are exact).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, LongType, NestedField, StringType, TimestampType

from calve.project import Project

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FIRST_DAY = dt.date(2026, 3, 1)

EVENTS = Schema(
    NestedField(1, "event_id", LongType(), required=False),
    NestedField(2, "account_id", LongType(), required=False),
    NestedField(3, "day", DateType(), required=False),
    NestedField(4, "item", StringType(), required=False),
    NestedField(5, "amount", LongType(), required=False),
    NestedField(6, "sent_at", TimestampType(), required=False),
)
REFUNDS = Schema(
    NestedField(1, "refund_id", LongType(), required=False),
    NestedField(2, "day", DateType(), required=False),
    NestedField(3, "amount", LongType(), required=False),
)
BY_DAY = {
    "events": PartitionSpec(PartitionField(3, 1000, IdentityTransform(), "day")),
    "refunds": PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "day")),
}


def example_project(name: str, tmp_path: Path) -> Project:
    root = tmp_path / name
    shutil.copytree(EXAMPLES / name, root, ignore=shutil.ignore_patterns(".calve"))
    return Project(root)


def create_shop(catalog: Catalog) -> tuple[Table, Table]:
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace("shop")
    events = catalog.create_table("shop.events", schema=EVENTS, partition_spec=BY_DAY["events"])
    refunds = catalog.create_table("shop.refunds", schema=REFUNDS, partition_spec=BY_DAY["refunds"])
    return events, refunds


class Shop:
    """Deterministic rounds of data: a new day, late events for past days, re-sent events, refunds."""

    def __init__(self, seed: int = 1, events_per_day: int = 120, accounts: int = 40) -> None:
        self.rng = random.Random(seed)
        self.events_per_day = events_per_day
        self.accounts = accounts
        self.next_event = 1
        self.next_refund = 1
        self.day_index = 0
        self.sent: list[dict[str, object]] = []

    def _event(self, day: dt.date, clock: dt.datetime) -> dict[str, object]:
        row = {
            "event_id": self.next_event,
            "account_id": self.rng.randrange(self.accounts),
            "day": day,
            "item": self.rng.choice([" Book", "pen ", "LAMP", "mug"]),
            "amount": self.rng.randrange(0, 5000),
            "sent_at": clock,
        }
        self.next_event += 1
        return row

    def round(self, late_fraction: float = 0.08, resend_fraction: float = 0.03) -> tuple[pa.Table, pa.Table]:
        day = FIRST_DAY + dt.timedelta(days=self.day_index)
        clock = dt.datetime.combine(day, dt.time(23)) + dt.timedelta(minutes=self.day_index)
        self.day_index += 1
        rows = [self._event(day, clock) for _ in range(self.events_per_day)]
        if self.day_index > 1:
            for _ in range(int(self.events_per_day * late_fraction)):
                back = self.rng.randrange(1, min(self.day_index, 20))
                rows.append(self._event(day - dt.timedelta(days=back), clock))
            for _ in range(int(self.events_per_day * resend_fraction)):
                again = dict(self.rng.choice(self.sent))
                again["amount"] = int(str(again["amount"])) + 1
                again["sent_at"] = clock + dt.timedelta(seconds=1)
                rows.append(again)
        self.sent.extend(rows)
        refunds = []
        for _ in range(3):
            back = self.rng.randrange(0, self.day_index)
            refunds.append(
                {
                    "refund_id": self.next_refund,
                    "day": day - dt.timedelta(days=back),
                    "amount": self.rng.randrange(100),
                }
            )
            self.next_refund += 1
        return (
            pa.Table.from_pylist(rows, schema=EVENTS.as_arrow()),
            pa.Table.from_pylist(refunds, schema=REFUNDS.as_arrow()),
        )


def rows(table: pa.Table, order: list[str]) -> list[dict[str, object]]:
    return sorted(table.to_pylist(), key=lambda r: tuple(r[c] for c in order))


def recompute(sql: str, **tables: pa.Table) -> pa.Table:
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    return con.sql(sql).to_arrow_table()


CLEAN_EVENTS = """
    SELECT event_id, account_id, day, lower(trim(item)) AS item, amount FROM events
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY sent_at DESC) = 1
"""
ACCOUNT_TOTALS = """
    SELECT account_id, count(*) AS orders, sum(amount) AS total_amount, min(day) AS first_day,
           max(day) AS last_day
    FROM events GROUP BY account_id
"""
DAILY_REVENUE = """
    WITH sales AS (SELECT day, sum(amount) AS gross, count(*) AS orders FROM events GROUP BY day),
         back AS (SELECT day, sum(amount) AS refunded FROM refunds GROUP BY day)
    SELECT s.day, s.orders, s.gross, coalesce(b.refunded, 0) AS refunded,
           s.gross - coalesce(b.refunded, 0) AS net
    FROM sales AS s LEFT JOIN back AS b USING (day)
"""
