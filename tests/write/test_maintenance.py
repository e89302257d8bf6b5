"""Maintenance: expiry keeps what consumers need, consumers resume exactly after compactions and
expiries, a killed compaction loses nothing, and the policy's timing."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from calve import Consumer, compute_changelog
from calve.cli.app import cli
from calve.cli.table_commands import maintain as maintain_command
from calve.errors import ProjectError
from calve.project import MaintenancePolicy, Project
from calve.read.planning import plan_files
from calve.write.maintenance import LAST_RUN_PROPERTY, Maintainer, consumer_checkpoints, maintain
from tests.conftest import EVENTS, events
from tests.iceberg_writers import delete_positions

WORKER = Path(__file__).with_name("compaction_worker.py")
FAR_FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
AGGRESSIVE = MaintenancePolicy(
    small_file_bytes=1 << 30, min_files=2, max_delete_files=0, expire_older_than_s=0
)


def rows(table: Table) -> Counter[tuple[int, str]]:
    data = table.scan().to_arrow()
    return Counter(zip(data.column("id").to_pylist(), data.column("name").to_pylist(), strict=True))


def run_consumer(consumer: Consumer, source: Table, target: Table) -> tuple[int, int]:
    """Apply the pending changelog to the target (a merge on id); returns (inserted, deleted)."""
    target.refresh()
    source.refresh()
    changes = consumer.pending(source, target)
    log = compute_changelog(source, changes)
    inserted_ids = set(log.inserted.column("id").to_pylist())
    gone = [i for i in log.deleted.column("id").to_pylist() if i not in inserted_ids]
    deletes = pa.table({"id": pa.array(gone, pa.int64())})
    consumer.commit(target, [changes], log.inserted, mode="merge", keys=["id"], deletes=deletes)
    target.refresh()
    return log.inserted.num_rows, log.deleted.num_rows


def test_expiry_keeps_the_checkpoint_and_every_later_snapshot(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.src", schema=EVENTS)
    target = catalog.create_table("db.dst", schema=EVENTS)
    for start in (0, 10):
        source.append(events(range(start, start + 10)))
    consumer = Consumer(catalog, "copier")
    run_consumer(consumer, source, target)
    checkpoint = source.current_snapshot().snapshot_id
    for start in (20, 30, 40):
        source.append(events(range(start, start + 10)))
    (found,) = consumer_checkpoints(catalog, source)
    assert (found.consumer, found.target_table, found.snapshot_id) == ("copier", "db.dst", checkpoint)

    result = maintain(catalog, "db.src", AGGRESSIVE, FAR_FUTURE, compact_files=False)

    source.refresh()
    assert result.error is None and len(result.expiry.expired) == 1
    assert len(source.metadata.snapshots) == 4
    reasons = [k.describe() for k in result.expiry.kept]
    assert reasons == [
        "kept 1 snapshot(s): the current snapshot",
        f"kept 3 snapshot(s): consumer copier's checkpoint (in db.dst) is at {checkpoint}",
    ]
    assert run_consumer(consumer, source, target) == (30, 0)
    assert rows(target) == rows(source)
    assert int(source.metadata.properties[LAST_RUN_PROPERTY]) == int(FAR_FUTURE.timestamp() * 1000)


def test_expiry_keeps_recent_snapshots_and_a_dry_run_commits_nothing(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.src", schema=EVENTS)
    for start in range(0, 50, 10):
        source.append(events(range(start, start + 10)))
    now = dt.datetime.now(dt.UTC)
    dry = maintain(catalog, "db.src", MaintenancePolicy(retain_last=2), now, dry_run=True)
    assert dry.expiry.expired == () and dry.compaction.snapshot_id is None
    assert any("less than 7d ago" in k.reason for k in dry.expiry.kept)
    dry = maintain(catalog, "db.src", AGGRESSIVE, FAR_FUTURE, dry_run=True, retain_last=2)
    assert len(dry.expiry.expired) == 3
    source.refresh()
    assert len(source.metadata.snapshots) == 5 and LAST_RUN_PROPERTY not in source.metadata.properties


def test_consumers_resume_exactly_after_compactions_and_expiries(catalog: SqlCatalog) -> None:
    """Random histories of appends, merge-on-read deletes (as Spark writes them), copy-on-write
    deletes, compactions and aggressive expiries; two consumers at different paces. Each run of a
    consumer processes exactly what is pending: its target always equals the source (a recompute)."""
    rng = random.Random(7)
    source = catalog.create_table("db.src", schema=EVENTS, properties={"format-version": "2"})
    fast = (Consumer(catalog, "fast"), catalog.create_table("db.fast", schema=EVENTS))
    slow = (Consumer(catalog, "slow"), catalog.create_table("db.slow", schema=EVENTS))
    next_id = 0
    source.append(events(range(0, 10)))
    next_id = 10
    for consumer, target in (fast, slow):
        run_consumer(consumer, source, target)
    compactions = expiries = 0
    for step in range(40):
        op = rng.choice(["append", "append", "mor_delete", "cow_delete", "maintain", "fast", "slow"])
        source.refresh()
        if op == "append":
            n = rng.randint(1, 8)
            source.append(events(range(next_id, next_id + n), day=rng.randint(1, 3)))
            next_id += n
        elif op == "mor_delete":
            tasks = plan_files(source)
            if tasks:
                task = rng.choice(tasks)
                count = task.file.record_count
                delete_positions(source, {task.file.file_path: rng.sample(range(count), k=min(2, count))})
        elif op == "cow_delete":
            live = source.scan().to_arrow().column("id").to_pylist()
            if live:
                source.delete(f"id = {rng.choice(live)}")
        elif op == "maintain":
            before = rows(source)
            result = maintain(catalog, "db.src", AGGRESSIVE, FAR_FUTURE)
            assert result.error is None
            source.refresh()
            assert rows(source) == before
            assert all(not t.delete_files for t in plan_files(source))
            compactions += bool(result.compaction.snapshot_id)
            expiries += bool(result.expiry.expired)
        else:
            consumer, target = fast if op == "fast" else slow
            run_consumer(consumer, source, target)
            assert rows(target) == rows(source), f"step {step}: {consumer.name} diverged"
    for consumer, target in (fast, slow):
        run_consumer(consumer, source, target)
        assert rows(target) == rows(source)
        assert run_consumer(consumer, source, target) == (0, 0)  # nothing left, nothing twice
    assert compactions >= 2 and expiries >= 2


def test_a_compaction_killed_during_its_commit_loses_nothing(catalog: SqlCatalog, home: Path) -> None:
    table = catalog.create_table("db.ev", schema=EVENTS, properties={"format-version": "2"})
    for start in range(0, 40, 10):
        table.append(events(range(start, start + 10)))
    delete_positions(table, {plan_files(table)[0].file.file_path: [0, 1]})
    expected = rows(table)
    before = table.current_snapshot().snapshot_id
    env = {**os.environ, "CALVE_HOME": str(home), "CALVE_CRASH_AT": "compaction.during_commit"}

    killed = subprocess.run([sys.executable, str(WORKER)], env=env, timeout=120)
    assert killed.returncode == -9
    table.refresh()
    assert table.current_snapshot().snapshot_id == before and rows(table) == expected

    env.pop("CALVE_CRASH_AT")
    assert subprocess.run([sys.executable, str(WORKER)], env=env, timeout=120).returncode == 0
    table.refresh()
    assert table.current_snapshot().summary.operation.value == "replace"
    assert rows(table) == expected and all(not t.delete_files for t in plan_files(table))


def _project(root: Path, maintenance: str) -> Project:
    (root / "calve.yaml").write_text(textwrap.dedent(maintenance), encoding="utf-8")
    return Project(root)


def test_the_policy_runs_once_per_window(catalog: SqlCatalog, tmp_path: Path) -> None:
    project = _project(tmp_path, 'maintenance:\n  tables: [db.t]\n  window: "02:00-04:00"\n')
    table = project.catalog.create_table("db.t", schema=EVENTS)
    table.append(events(range(3)))
    maintainer = Maintainer(project)
    day = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert maintainer.due(day.replace(hour=1)) == []
    assert maintainer.due(day.replace(hour=2, minute=30)) == ["db.t"]
    result = maintainer.run("db.t", day.replace(hour=2, minute=30))
    assert result.error is None
    assert maintainer.due(day.replace(hour=3)) == []
    assert Maintainer(project).due(day.replace(hour=3)) == []  # the time is in the table, not in memory
    assert maintainer.due(day.replace(hour=5)) == []
    assert maintainer.due((day + dt.timedelta(days=1)).replace(hour=2, minute=1)) == ["db.t"]


def test_the_policy_waits_for_an_idle_table(catalog: SqlCatalog, tmp_path: Path) -> None:
    project = _project(tmp_path, "maintenance:\n  tables: [db.t, db.missing]\n  idle: 10m\n")
    table = project.catalog.create_table("db.t", schema=EVENTS)
    table.append(events(range(3)))
    committed = dt.datetime.fromtimestamp(table.current_snapshot().timestamp_ms / 1000, dt.UTC)
    maintainer = Maintainer(project)
    assert maintainer.due(committed + dt.timedelta(minutes=5)) == []
    assert maintainer.due(committed + dt.timedelta(minutes=11)) == ["db.t"]
    maintainer.run("db.t", committed + dt.timedelta(minutes=11))
    assert maintainer.due(committed + dt.timedelta(hours=2)) == []  # `every` (1d) not yet passed
    assert maintainer.due(committed + dt.timedelta(days=1, minutes=12)) == ["db.t"]


def test_no_maintenance_section_means_the_scheduler_maintains_nothing(
    catalog: SqlCatalog, tmp_path: Path
) -> None:
    project = _project(tmp_path, "engine: duckdb\n")
    assert project.settings.maintenance is None
    assert Maintainer(project).due(FAR_FUTURE) == []


def test_bad_maintenance_settings_are_project_errors_with_lines(tmp_path: Path) -> None:
    text = """\
    engine: duckdb
    maintenance:
      window: "2am-4am"
      min_files: 1
      retain_last: 0
      compact: maybe
      expire_older: 7d
    """
    with pytest.raises(ProjectError) as caught:
        _project(tmp_path, text)
    problems = "\n".join(caught.value.problems)
    assert "calve.yaml:3: maintenance.window: '2am-4am' is not a time window" in problems
    assert "calve.yaml:4: maintenance.min_files: must be at least 2" in problems
    assert "calve.yaml:5: maintenance.retain_last" in problems
    assert "calve.yaml:6: maintenance.compact: must be true or false" in problems
    assert "expire_older_than" in problems  # did you mean


def test_calve_maintain_reports_what_it_kept_and_why(catalog: SqlCatalog) -> None:
    source = catalog.create_table("db.src", schema=EVENTS, properties={"format-version": "2"})
    target = catalog.create_table("db.dst", schema=EVENTS)
    for start in range(0, 40, 10):
        source.append(events(range(start, start + 10)))
    consumer = Consumer(catalog, "copier")
    run_consumer(consumer, source, target)
    source.append(events(range(40, 50)))
    cli.add_command(maintain_command)  # the command map (calve.cli.app.COMMANDS) is not this test's
    runner = CliRunner()

    dry = runner.invoke(cli, ["maintain", "db.src", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    payload = json.loads(dry.output)
    assert payload["dry_run"] and payload["compaction"]["partitions"] == 1
    assert payload["expiry"]["expired"] == 0  # all younger than 7 days
    assert payload["manifests"].startswith("skipped")

    text = runner.invoke(cli, ["maintain", "db.src", "--expire-older-than", "0s"])
    assert text.exit_code == 0, text.output
    checkpoint = consumer.checkpoint(target, source).snapshot_id
    assert f"consumer copier's checkpoint (in db.dst) is at {checkpoint}" in text.output
    assert "3 of 5 snapshot(s) expired" in text.output
    bad = runner.invoke(cli, ["maintain", "db.src", "--expire-older-than", "soon"])
    assert bad.exit_code == 2
    source.refresh()
    assert run_consumer(consumer, source, target) == (10, 0) and rows(target) == rows(source)
    assert pc.sum(source.scan().to_arrow().column("id")).as_py() == sum(range(50))


def test_the_commented_maintenance_section_of_a_new_calve_yaml_is_valid(tmp_path: Path) -> None:
    from calve.project import DEFAULT_SETTINGS

    lines = DEFAULT_SETTINGS.splitlines()
    start = lines.index("# maintenance:")
    end = lines.index("", start) if "" in lines[start:] else len(lines)  # up to a blank line or the end
    enabled = [line.removeprefix("# ") if start <= i < end else line for i, line in enumerate(lines)]
    policy = _project(tmp_path, "\n".join(enabled) + "\n").settings.maintenance
    assert policy is not None
    assert policy.window == (120, 240) and policy.idle_s == 600
    assert (policy.min_files, policy.max_delete_files, policy.retain_last) == (4, 0, 1)
    assert policy.expire_older_than_s == MaintenancePolicy().expire_older_than_s
    assert policy.small_file_bytes == MaintenancePolicy().small_file_bytes
