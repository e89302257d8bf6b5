"""The playback pipeline end to end at small scale: after days of late data, calve's tables equal a
from-scratch recomputation exactly, and the lookback's differ by exactly the events that arrived
later than its window."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from calve.playback.data import PlaybackConfig, PlaybackGenerator
from calve.playback.demo import KEYS, TABLES, differing_rows, playback_workflows, recompute, run_playback
from calve.state import StateStore


def test_generator_is_deterministic_and_late_data_lands_later() -> None:
    config = PlaybackConfig(days=10, events_per_day=500, late_fraction=0.2, seed=3)
    first = [PlaybackGenerator(config).ingest(i) for i in range(1)]
    a, b = PlaybackGenerator(config), PlaybackGenerator(config)
    batches = [a.ingest(i) for i in range(10)]
    assert all(x.equals(y) for x, y in zip(batches, [b.ingest(i) for i in range(10)], strict=True))
    assert first[0].equals(batches[0])
    events = pa.concat_tables(batches)
    ids = events.column("event_id").to_pylist()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # ingestion order, unique
    lags = duckdb.sql("SELECT ingest_day - event_day AS lag FROM events").fetchall()
    assert min(lag for (lag,) in lags) == 0 and max(lag for (lag,) in lags) >= 3
    late = sum(1 for (lag,) in lags if lag > 0)
    assert 0.1 < late / len(lags) < 0.25


@pytest.mark.slow
@pytest.mark.parametrize(("mean_lag_days", "late_fraction"), [(1.5, 0.05), (3.0, 0.15), (6.0, 0.3)])
def test_calve_equals_recomputation_and_lookback_misses_exactly_the_late_events(
    catalog: SqlCatalog, home: Path, mean_lag_days: float, late_fraction: float
) -> None:
    x = 3
    config = PlaybackConfig(
        days=12, events_per_day=600, late_fraction=late_fraction, mean_lag_days=mean_lag_days, seed=11
    )
    report = run_playback(catalog, StateStore(home / "state.db"), config, lookback_days=x)
    events = catalog.load_table("playback.events").scan().to_arrow()
    assert report["events_ingested"] == events.num_rows
    assert report["calve_mismatched_rows"] == 0

    # the lookback equals a recomputation without the events that arrived X or more days late
    lost = duckdb.sql(f"SELECT * FROM events WHERE ingest_day - event_day >= {x}").arrow().read_all()
    assert lost.num_rows == report["events_later_than_lookback"] > 0
    kept = duckdb.sql(f"SELECT * FROM events WHERE ingest_day - event_day < {x}").arrow().read_all()
    expected = dict(zip(("daily", "agg"), recompute(kept), strict=True))
    for stage in ("daily", "agg"):
        actual = catalog.load_table(TABLES["lookback"][stage]).scan().to_arrow()
        assert differing_rows(expected[stage], actual, KEYS[stage]) == 0, stage
    assert report["accuracy"]["lookback"]["daily"] == lost.num_rows
    affected_keys = duckdb.sql("SELECT DISTINCT event_day, account_id FROM lost").fetchall()
    assert report["accuracy"]["lookback"]["agg"] == len(affected_keys)

    # calve read far fewer rows in stage 1, and its consumers are exactly at the source's end
    assert report["stages"]["daily"]["rows_read_ratio"] < 0.5
    workflows = playback_workflows()
    assert {s.id for s in workflows["calve"].steps} == {"daily", "agg"}


def test_demo_never_replaces_a_table_it_did_not_create(catalog: SqlCatalog, home: Path) -> None:
    from calve.errors import CalveError
    from calve.playback.data import EVENTS_SCHEMA

    catalog.create_namespace("playback")
    mine = catalog.create_table("playback.daily_calve", schema=EVENTS_SCHEMA)
    with pytest.raises(CalveError, match=r"playback.daily_calve exists and was not created by `calve demo`"):
        run_playback(catalog, StateStore(home / "state.db"), PlaybackConfig(days=1, events_per_day=10))
    assert catalog.load_table("playback.daily_calve").metadata.table_uuid == mine.metadata.table_uuid
    catalog.drop_table("playback.daily_calve")
    # its own tables are replaced run after run
    for _ in range(2):
        report = run_playback(
            catalog, StateStore(home / "state.db"), PlaybackConfig(days=2, events_per_day=50)
        )
        assert report["calve_mismatched_rows"] == 0
    assert catalog.load_table("playback.agg_calve").properties["calve.demo"] == "playback"
