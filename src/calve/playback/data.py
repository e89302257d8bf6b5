"""Playback events with sparse late arrivals, deterministic for a seed.

Every event day has `events_per_day` plays. Most are ingested on their own day; a `late_fraction`
of them is ingested `lag` days later, with lag = 1 + an exponential of mean `mean_lag_days - 1`
(capped at `max_lag_days`): most late events are a day or two late, and a tail lands weeks
later, beyond a 14-day lookback window. Ingestion assigns increasing event ids (as an ingestion
pipeline's sequence would), so the ids of a batch are newer than those already stored.

    generator = PlaybackGenerator(PlaybackConfig(events_per_day=20_000, seed=7))
    batch = generator.ingest(day_index)       # what lands on that day: a pyarrow.Table
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, IntegerType, LongType, NestedField, StringType, TimestampType

FIRST_DAY = dt.date(2026, 1, 1)
DEVICES = ("tv", "phone", "tablet", "web", "console")

EVENTS_SCHEMA = Schema(
    NestedField(1, "event_id", LongType(), required=False),
    NestedField(2, "account_id", LongType(), required=False),
    NestedField(3, "title_id", LongType(), required=False),
    NestedField(4, "device", StringType(), required=False),
    NestedField(5, "event_time", TimestampType(), required=False),
    NestedField(6, "event_day", DateType(), required=False),
    NestedField(7, "view_seconds", IntegerType(), required=False),
    NestedField(8, "ingest_day", DateType(), required=False),
)
EVENTS_SPEC = PartitionSpec(PartitionField(6, 1000, IdentityTransform(), "event_day"))


@dataclass(frozen=True)
class PlaybackConfig:
    days: int = 30
    events_per_day: int = 20_000
    late_fraction: float = 0.03
    mean_lag_days: float = 3.0
    max_lag_days: int = 45
    accounts: int | None = None  # default: events_per_day / 8 (about 8 plays per account and day)
    titles: int = 2_000
    seed: int = 7

    @property
    def account_count(self) -> int:
        return self.accounts or max(10, self.events_per_day // 8)


@dataclass
class PlaybackGenerator:
    config: PlaybackConfig
    _pending: dict[int, list[pa.Table]] = field(default_factory=dict)  # ingest day -> late rows
    _next_id: int = 1

    def day(self, index: int) -> dt.date:
        return FIRST_DAY + dt.timedelta(days=index)

    def ingest(self, index: int) -> pa.Table:
        """The events ingested on day `index` (0-based): that day's on-time plays and the late ones
        whose lag ends that day. Call with 0, 1, 2, ... in order."""
        config = self.config
        rng = np.random.default_rng([config.seed, index])
        n = config.events_per_day
        day = self.day(index)
        seconds_of_day = rng.integers(0, 86_400, n)
        late = rng.random(n) < config.late_fraction
        lags = np.minimum(
            1 + np.floor(rng.exponential(max(config.mean_lag_days - 1, 0.01), n)).astype(np.int64),
            config.max_lag_days,
        )
        start = np.datetime64(day.isoformat(), "us")
        plays = pa.table(
            {
                "account_id": pa.array(rng.integers(0, config.account_count, n), pa.int64()),
                "title_id": pa.array(rng.integers(0, config.titles, n), pa.int64()),
                "device": pa.array(np.array(DEVICES)[rng.integers(0, len(DEVICES), n)], pa.string()),
                "event_time": pa.array(start + seconds_of_day.astype("timedelta64[s]"), pa.timestamp("us")),
                "event_day": pa.array([day] * n, pa.date32()),
                "view_seconds": pa.array(rng.integers(1, 7_200, n), pa.int32()),
            }
        )
        for lag in np.unique(lags[late]):
            rows = plays.filter(pa.array(late & (lags == lag)))
            self._pending.setdefault(index + int(lag), []).append(rows)
        batch = pa.concat_tables([plays.filter(pa.array(~late)), *self._pending.pop(index, [])])
        ids = pa.array(range(self._next_id, self._next_id + batch.num_rows), pa.int64())
        self._next_id += batch.num_rows
        batch = batch.add_column(0, "event_id", ids)
        batch = batch.append_column("ingest_day", pa.array([day] * batch.num_rows, pa.date32()))
        return batch.cast(EVENTS_SCHEMA.as_arrow())
