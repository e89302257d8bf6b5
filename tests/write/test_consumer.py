"""Consumers: checkpoints in the target's commits, exactly once through crashes and races."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from calve import CalveError, CheckpointConflictError, Consumer, compute_changelog
from calve.state import StateStore
from tests.conftest import EVENTS, events

WORKER = Path(__file__).with_name("consumer_worker.py")


def test_commit_advances_checkpoint_with_output(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.src", schema=EVENTS)
    target = catalog.create_table("db.dst", schema=EVENTS)
    source.append(events(range(5)))
    consumer = Consumer(catalog, "copier", StateStore())

    pending = consumer.pending(source, target)
    consumer.commit(target, [pending], compute_changelog(source, pending).inserted)

    target.refresh()
    assert consumer.checkpoint(target, source).snapshot_id == source.current_snapshot().snapshot_id
    assert consumer.pending(source, target).snapshots == ()
    summary = target.current_snapshot().summary
    assert summary["calve.write.consumer"] == "copier"
    assert str(source.current_snapshot().snapshot_id) in summary["calve.checkpoint"]
    (record,) = StateStore().checkpoints("copier")
    assert record.snapshot_id == source.current_snapshot().snapshot_id
    assert record.target_table == "db.dst"

    source.append(events(range(5, 7)))
    assert consumer.pending(source, target).added_records == 2


def test_two_consumers_keep_separate_checkpoints_in_one_target(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.src", schema=EVENTS)
    target = catalog.create_table("db.dst", schema=EVENTS)
    source.append(events(range(3)))
    a, b = Consumer(catalog, "a"), Consumer(catalog, "b")
    changes = a.pending(source, target)
    a.commit(target, [changes], compute_changelog(source, changes).inserted)
    target.refresh()
    assert b.pending(source, target).added_records == 3
    assert a.pending(source, target).added_records == 0


def test_a_concurrent_run_of_the_same_consumer_cannot_commit_twice(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.src", schema=EVENTS)
    target = catalog.create_table("db.dst", schema=EVENTS)
    source.append(events(range(4)))
    first = Consumer(catalog, "copier")
    second = Consumer(catalog, "copier")
    target_for_second = catalog.load_table("db.dst")
    changes_first = first.pending(source, target)
    changes_second = second.pending(source, target_for_second)

    first.commit(target, [changes_first], compute_changelog(source, changes_first).inserted)
    with pytest.raises(CheckpointConflictError, match="another run of this consumer committed first"):
        second.commit(target_for_second, [changes_second], compute_changelog(source, changes_second).inserted)

    target.refresh()
    assert Counter(target.scan().to_arrow().column("id").to_pylist()) == Counter(range(4))


def test_a_commit_through_a_rest_catalog_is_refused_before_anything_is_written(catalog: SqlCatalog) -> None:
    """A REST server cannot check the checkpoint requirement (docs/deployment.md): refuse, clearly."""
    from pyiceberg.catalog.rest import RestCatalog
    from pyiceberg.table import Table

    from calve.errors import ConfigError

    source = catalog.create_table("db.src", schema=EVENTS)
    real = catalog.create_table("db.dst", schema=EVENTS)
    source.append(events(range(3)))
    rest = RestCatalog.__new__(RestCatalog)  # no server: the refusal comes before any request
    rest.name = "lakehouse"
    target = Table(real._identifier, real.metadata, real.metadata_location, real.io, catalog=rest)
    consumer = Consumer(catalog, "copier")
    pending = consumer.pending(source, real)
    with pytest.raises(ConfigError, match=r"REST catalog 'lakehouse'.*not implemented yet"):
        consumer.commit(target, [pending], compute_changelog(source, pending).inserted)
    real.refresh()
    assert real.current_snapshot() is None  # nothing was written


def test_recreated_source_table_is_detected(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.src", schema=EVENTS)
    target = catalog.create_table("db.dst", schema=EVENTS)
    source.append(events(range(2)))
    consumer = Consumer(catalog, "copier")
    changes = consumer.pending(source, target)
    consumer.commit(target, [changes], compute_changelog(source, changes).inserted)
    catalog.drop_table("db.src")
    source = catalog.create_table("db.src", schema=EVENTS)
    source.append(events(range(2)))
    target.refresh()
    with pytest.raises(CalveError, match="dropped and recreated"):
        consumer.pending(source, target)
    consumer.reset(target, source)
    target.refresh()
    assert consumer.pending(source, target).added_records == 2


def test_invalid_consumer_name_is_refused(catalog: SqlCatalog) -> None:
    with pytest.raises(CalveError, match="not valid"):
        Consumer(catalog, "drop table; --")


def _run_worker(home: Path, crash_at: str | None = None) -> int:
    env = {**os.environ, "CALVE_HOME": str(home)}
    env.pop("CALVE_CRASH_AT", None)
    if crash_at:
        env["CALVE_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, str(WORKER)], env=env, timeout=120).returncode


def _assert_exactly_once(catalog: SqlCatalog) -> None:
    source, target = catalog.load_table("db.src"), catalog.load_table("db.dst")
    expected = Counter(source.scan().to_arrow().column("id").to_pylist())
    assert Counter(target.scan().to_arrow().column("id").to_pylist()) == expected


@pytest.mark.slow
@pytest.mark.parametrize(
    "crash_at", ["consumer.before_commit", "consumer.during_commit", "consumer.after_commit"]
)
def test_sigkill_at_each_commit_point_then_rerun_is_exactly_once(
    catalog: SqlCatalog, home: Path, crash_at: str
) -> None:
    source = catalog.create_table("db.src", schema=EVENTS)
    catalog.create_table("db.dst", schema=EVENTS)
    for batch in range(3):
        source.append(events(range(batch * 10, batch * 10 + 10)))

    assert _run_worker(home, crash_at) == -signal.SIGKILL
    _assert_partial_or_nothing_then_rerun(catalog, home)


def _assert_partial_or_nothing_then_rerun(catalog: SqlCatalog, home: Path) -> None:
    target = catalog.load_table("db.dst")
    seen = (
        Counter(target.scan().to_arrow().column("id").to_pylist()) if target.current_snapshot() else Counter()
    )
    assert all(count == 1 for count in seen.values())  # whatever landed, landed once
    assert _run_worker(home) == 0
    _assert_exactly_once(catalog)


@pytest.mark.slow
def test_sigkills_at_seeded_points_while_the_source_grows_then_rerun_is_exactly_once(
    catalog: SqlCatalog, home: Path
) -> None:
    source = catalog.create_table("db.src", schema=EVENTS)
    catalog.create_table("db.dst", schema=EVENTS)
    rng = random.Random(11)
    points = ["consumer.before_commit", "consumer.during_commit", "consumer.after_commit"]
    next_id = 0
    for _ in range(4):  # each round: more data, then a worker killed at its n-th pass of a point
        for _ in range(8):
            source.append(events(range(next_id, next_id + 5)))
            next_id += 5
        point = f"{rng.choice(points)}@{rng.randint(1, 8)}"
        assert _run_worker(home, point) == -signal.SIGKILL, point  # 8 snapshots pending: it gets there
        target = catalog.load_table("db.dst")
        landed = (
            Counter(target.scan().to_arrow().column("id").to_pylist()) if target.current_snapshot() else {}
        )
        assert all(count == 1 for count in landed.values()), point  # whatever landed, landed once
    assert _run_worker(home) == 0
    _assert_exactly_once(catalog)
