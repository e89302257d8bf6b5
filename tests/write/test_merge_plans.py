"""Merge plans: DuckDB and the Arrow fallback plan the same; merge-on-read chooses per file."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from calve.read import duckdb_scan
from calve.write import merge as merge_module
from calve.write.consumer import Consumer
from calve.write.merge import MergePlan, plan_merge
from calve.write.mor import MERGE_MODE_PROPERTY
from calve.write.tables import load_or_create

DAYS = [dt.date(2026, 1, 1) + dt.timedelta(days=d) for d in range(4)]
KEYS = ["account_id", "day"]


def rows(pairs: list[tuple[int, int]], value: int) -> pa.Table:
    return pa.table(
        {
            "account_id": pa.array([a for a, _ in pairs], pa.int64()),
            "day": pa.array([DAYS[d] for _, d in pairs], pa.date32()),
            "seconds": pa.array([value] * len(pairs), pa.int64()),
        }
    )


def target(catalog: SqlCatalog, name: str, **properties: str) -> Table:
    table = load_or_create(catalog, name, rows([], 0).schema, ("day",), properties or None)
    Consumer(catalog, "seed").commit(
        table, [], rows([(a, d) for a in range(30) for d in range(4)], 1), mode="merge", keys=KEYS
    )
    table.refresh()
    return table


def arrow_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merge_module, "matching_files", lambda *a: None)
    monkeypatch.setattr(duckdb_scan, "matched_positions", lambda *a: None)


def summary(plan: MergePlan) -> dict[str, Any]:
    assert plan.rows is not None
    return {
        "deleted": sorted(f.file_path for f in plan.deleted_files),
        "rows": plan.rows.sort_by([(k, "ascending") for k in [*KEYS, "seconds"]]).to_pylist(),
        "counts": (plan.files_read, plan.rows_read, plan.bytes_read, plan.rows_matched, plan.rows_upserted),
        "positions": {
            p: (None if v is None else np.asarray(v).tolist()) for p, (_, v) in sorted(plan.positions.items())
        },
    }


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.sets(st.tuples(st.integers(0, 40), st.integers(0, 3)), min_size=1, max_size=80),
    mor=st.booleans(),
)
def test_duckdb_and_arrow_plans_are_identical(
    catalog: SqlCatalog, monkeypatch: pytest.MonkeyPatch, pairs: set[tuple[int, int]], mor: bool
) -> None:
    name = "db.mor_plans" if mor else "db.cow_plans"
    try:
        table = catalog.load_table(name)
    except Exception:
        table = target(catalog, name, **({MERGE_MODE_PROPERTY: "merge-on-read"} if mor else {}))
    upserts = rows(sorted(pairs), 2)
    fast = summary(plan_merge(table, upserts, KEYS))
    with monkeypatch.context() as patched:
        arrow_only(patched)
        slow = summary(plan_merge(table, upserts, KEYS))
    assert fast == slow


def content(table: Table) -> list[dict[str, Any]]:
    table.refresh()
    return table.scan().to_arrow().sort_by([(k, "ascending") for k in KEYS]).to_pylist()


def test_merge_on_read_rewrites_mostly_changed_files_and_keeps_other_manifests(catalog: SqlCatalog) -> None:
    cow = target(catalog, "db.cow")
    mor = target(catalog, "db.mor", **{MERGE_MODE_PROPERTY: "merge-on-read"})
    consumer = Consumer(catalog, "merge_test")
    # day 0: 2 of 30 rows change (position deletes); day 1: 20 of 30 (rewritten); day 3: 1 new key
    changes = rows([(1, 0), (2, 0), *((a, 1) for a in range(20)), (99, 3)], 5)
    before = {m.manifest_path for m in mor.current_snapshot().manifests(mor.io)}  # type: ignore[union-attr]
    for table in (cow, mor):
        consumer.commit(table, [], changes, mode="merge", keys=KEYS)
    assert content(mor) == content(cow)
    snapshot = mor.current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    assert snapshot.summary["added-position-delete-files"] == "1"
    assert snapshot.summary["deleted-data-files"] == "1"  # day 1's file, rewritten
    after = {m.manifest_path for m in snapshot.manifests(mor.io)}
    assert len(before - after) == 1  # only the manifest that listed day 1's file was rewritten

    # a merge-on-read commit that rewrites no file keeps every manifest as it was
    again = rows([(3, 2)], 6)
    for table in (cow, mor):
        consumer.commit(table, [], again, mode="merge", keys=KEYS)
    assert content(mor) == content(cow)
    assert after <= {m.manifest_path for m in mor.current_snapshot().manifests(mor.io)}  # type: ignore[union-attr]

    # more changes to day 0 until its file is mostly deleted: then it is rewritten, deletes and all
    for start in (3, 10):
        batch = rows([(a, 0) for a in range(start, start + 7)], 7)
        for table in (cow, mor):
            consumer.commit(table, [], batch, mode="merge", keys=KEYS)
        assert content(mor) == content(cow)
    assert mor.current_snapshot().summary["deleted-data-files"] == "1"  # type: ignore[union-attr]
