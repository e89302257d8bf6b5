"""The web UI's pages, served by the real application (Starlette's TestClient), checked against the
state store and the catalog of a project with real runs; actions refused unless allowed."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from html import unescape

import pytest
from starlette.testclient import TestClient

from calve.state import RunStatus
from calve.ui.app import create_app
from tests.ui.conftest import HOSTILE, UiProject


@pytest.fixture(scope="module")
def client(ui_project: UiProject) -> Iterator[TestClient]:
    with TestClient(create_app(ui_project.project)) as test_client:
        yield test_client


def text(html: str) -> str:
    """The page's text, tags removed and entities decoded (what a reader sees, roughly)."""
    return unescape(re.sub(r"<[^>]+>", " ", html))


def test_workflows_page_lists_each_workflow_with_triggers_next_due_and_last_run(
    client: TestClient, ui_project: UiProject
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    state = ui_project.project.state
    for workflow in ("copy", "daily", "broken"):
        last = state.runs(workflow, limit=1)[0]
        row = re.search(rf'<tr data-workflow="{workflow}">(.*?)</tr>', page.text, re.S)
        assert row is not None, workflow
        assert last.run_id in row.group(1) and last.status.value in row.group(1)
    assert (
        "incremental:any:shop.events" in page.text
        and "when any of shop.events gets new snapshots" in page.text
    )
    assert "cron:0 6 * * *" in page.text and "interval:900s" in page.text
    # the description is the user's text, escaped: never markup
    assert "Copies the new events &lt;b&gt;as they are&lt;/b&gt;." in page.text


def test_run_list_shows_the_store_s_runs_and_filters_them(client: TestClient, ui_project: UiProject) -> None:
    state = ui_project.project.state
    page = client.get("/runs")
    shown = re.findall(r'<tr data-run="([^"]+)">', page.text)
    assert shown == [r.run_id for r in state.runs(limit=50)]
    failed = client.get("/runs", params={"status": "failed"})
    assert re.findall(r'<tr data-run="([^"]+)">', failed.text) == [ui_project.failed]
    copies = client.get("/runs", params={"workflow": "copy", "trigger": "manual"})
    assert re.findall(r'<tr data-run="([^"]+)">', copies.text) == [r.run_id for r in state.runs("copy")]
    none = client.get("/runs", params={"status": "cancelled"})
    assert "No runs match these filters" in none.text
    # a filter value is a bound parameter: quotes and SQL in it match nothing and break nothing
    hostile = client.get("/runs", params={"workflow": "copy' OR '1'='1"})
    assert hostile.status_code == 200 and "0 run(s)" in hostile.text


def test_failed_run_page_shows_the_error_with_the_workflow_file_and_line(
    client: TestClient, ui_project: UiProject
) -> None:
    run = ui_project.project.state.run(ui_project.failed)
    assert run is not None and run.error
    page = client.get(f"/runs/{ui_project.failed}")
    assert page.status_code == 200
    assert text(page.text).count("workflows/broken.yaml:9") >= 2  # the run's error and the step's
    assert '<code class="file-line">workflows/broken.yaml:9</code>' in page.text
    assert run.error.splitlines()[0].split(": SQL failed")[1][:40] in text(page.text)
    assert 'data-step="clean" data-status="failed"' in page.text


def test_run_page_shows_steps_snapshot_ranges_metrics_and_escaped_params(
    client: TestClient, ui_project: UiProject
) -> None:
    state = ui_project.project.state
    page = client.get(f"/runs/{ui_project.hostile}")
    (step,) = state.step_runs(ui_project.hostile)
    metrics = step.metrics
    assert f'data-step="{step.step_id}" data-status="{step.status.value}"' in page.text
    read = metrics.inputs["events"]
    assert f"{read.from_snapshot_id} → {read.to_snapshot_id}" in text(page.text)
    assert str(metrics.committed_snapshot_id) in page.text
    assert f'<span class="rows-read">{metrics.rows_read:,}</span>' in page.text
    assert metrics.icdc_tables["events"] in page.text
    # the change set, from the table's metadata: the snapshots after the checkpoint up to the pin
    events = ui_project.project.catalog.load_table("shop.events")
    assert read.to_snapshot_id is not None
    snapshot = events.snapshot_by_id(read.to_snapshot_id)
    assert snapshot is not None and snapshot.parent_snapshot_id == read.from_snapshot_id
    change_set = re.search(
        r'<details class="change-set" data-input="events" open>(.*?)</details>', page.text, re.S
    )
    assert change_set is not None and "change set of events: 1 snapshot(s)" in change_set.group(1)
    assert f'<td class="snapshot">{read.to_snapshot_id}</td>' in change_set.group(1)
    assert f"{int(snapshot.summary['added-records']):,}" in change_set.group(1)  # type: ignore[index]
    run = state.run(ui_project.hostile)
    assert run is not None
    for table, snapshot in run.pins.items():
        assert table in page.text and str(snapshot) in page.text
    assert HOSTILE not in page.text and "&lt;script&gt;" in page.text


def test_run_page_renders_metrics_from_newer_and_older_records_without_crashing(
    client: TestClient, ui_project: UiProject
) -> None:
    """Typed metrics of the observability work (timings, memory, skew, run metrics) show when present;
    a record with missing keys or malformed JSON still renders."""
    run_id = ui_project.succeeded[0]
    db = sqlite3.connect(ui_project.project.settings.state)
    try:
        (old,) = db.execute("SELECT metrics FROM step_runs WHERE run_id = ?", (run_id,)).fetchone()
        (old_run,) = db.execute("SELECT metrics FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        richer = {
            **json.loads(old),
            "timings": {"plan_s": 0.01, "read_s": 0.2, "compute_s": 0.3, "write_s": 0.1, "commit_s": 0.05},
            "peak_rss_bytes": 3 * 2**20,
            "skew": {"max_over_median": 2.5},
            "error_class": "SqlError",
            "inputs": {"events": {"table": "shop.events", "files": 4, "records": 60, "files_skipped": 2}},
            "something_new": 42,
        }
        run_metrics = {"cpu_s": 1.5, "lookback_rows_estimate": 9000, "rows_read": 60, "peak_rss_bytes": 2**30}
        with db:
            db.execute("UPDATE step_runs SET metrics = ? WHERE run_id = ?", (json.dumps(richer), run_id))
            db.execute("UPDATE runs SET metrics = ? WHERE run_id = ?", (json.dumps(run_metrics), run_id))
        page = text(client.get(f"/runs/{run_id}").text)
        for shown in ("plan_s 0.01s", "compute_s 0.30s", "3.0 MiB", "max_over_median", "SqlError"):
            assert shown in page
        assert "something_new" in page and "lookback_rows_estimate" in page and "1.0 GiB" in page
        workflow = client.get("/workflows/copy").text
        assert "No lookback estimate recorded" not in workflow  # the plot has its second series
        with db:
            db.execute("UPDATE step_runs SET metrics = ? WHERE run_id = ?", ("not json", run_id))
            db.execute("UPDATE runs SET metrics = ? WHERE run_id = ?", ('["a list"]', run_id))
        assert client.get(f"/runs/{run_id}").status_code == 200
        assert client.get("/workflows/copy").status_code == 200
    finally:
        with db:
            db.execute("UPDATE step_runs SET metrics = ? WHERE run_id = ?", (old, run_id))
            db.execute("UPDATE runs SET metrics = ? WHERE run_id = ?", (old_run, run_id))
        db.close()


def test_unknown_pages_say_what_is_missing_and_where_to_look(client: TestClient) -> None:
    missing = client.get("/runs/20990101T000000-000000")
    assert missing.status_code == 404 and "no run &#39;20990101T000000-000000&#39;" in missing.text
    assert "/runs" in missing.text
    assert client.get("/workflows/nope").status_code == 404
    table = client.get("/tables/shop.nope")
    assert table.status_code == 404 and "does not exist" in table.text
    assert client.get("/backfills/nope").status_code == 404


def test_table_page_shows_snapshots_consumers_lag_and_lateness(
    client: TestClient, ui_project: UiProject
) -> None:
    catalog = ui_project.project.catalog
    events = catalog.load_table("shop.events")
    page = client.get("/tables/shop.events")
    assert page.status_code == 200
    snapshot_ids = re.findall(r'<td class="snapshot">(\d+)</td>', page.text)
    assert [int(s) for s in snapshot_ids] == [s.snapshot_id for s in reversed(events.metadata.snapshots)]
    checkpoints = {
        c.consumer: c for c in ui_project.project.state.checkpoints() if c.source_table == "shop.events"
    }
    assert set(checkpoints) == {"copy-copy"}
    row = re.search(r'<tr data-consumer="copy-copy">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert str(checkpoints["copy-copy"].snapshot_id) in row.group(1) and "up to date" in row.group(1)
    assert '<svg class="chart"' in page.text and "lateness of day at commit" in page.text
    adding = [s for s in events.metadata.snapshots if s.summary and int(s.summary.get("added-data-files", 0))]
    assert len(re.findall(r'<circle class="dot', page.text)) == 2 * len(adding)  # oldest and newest row


def test_consumer_lag_counts_the_snapshots_after_its_checkpoint(
    client: TestClient, ui_project: UiProject
) -> None:
    from tests.shop import Shop

    events = ui_project.project.catalog.load_table("shop.events")
    batch = Shop(seed=9, events_per_day=7).round()[0]
    events.append(batch)
    try:
        page = client.get("/tables/shop.events")
        row = re.search(r'<tr data-consumer="copy-copy">(.*?)</tr>', page.text, re.S)
        assert row is not None and f"1 snapshot(s), {batch.num_rows} record(s)" in text(row.group(1))
    finally:  # leave the module's project as the other tests expect it
        from calve.workflows.runner import Runner

        project = ui_project.project
        result = Runner.for_project(project).run(project.workflow("copy"))
        assert result is not None and result.status is RunStatus.SUCCEEDED
        ui_project.succeeded.append(result.run.run_id)


def test_tables_lineage_and_backfills_pages(client: TestClient, ui_project: UiProject) -> None:
    tables = client.get("/tables").text
    for name in ("shop.events", "shop.copied", "shop.daily"):
        assert f'<tr data-table="{name}">' in tables
    assert "shop.clean" in tables and "does not exist yet" in tables  # the broken workflow never wrote
    lineage = client.get("/lineage").text
    for node in (
        "workflow:copy",
        "workflow:daily",
        "table:shop.events",
        "table:shop.copied",
        "table:shop.daily",
    ):
        assert f'data-node="{node}"' in lineage
    assert (
        lineage.count('class="edge"') == 6
    )  # events->copy, copy->copied, copied->daily, daily->daily table,
    # events->broken, broken->clean
    assert "No backfills recorded" in client.get("/backfills").text


def test_backfills_show_their_progress_from_the_store(client: TestClient, ui_project: UiProject) -> None:
    db = sqlite3.connect(ui_project.project.settings.state)
    now = time.time()
    try:
        with db:
            db.execute(
                """INSERT INTO backfills (backfill_id, workflow, workflow_version, steps, range_column,
                     range_from, range_to, chunk, status, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    "bf-1",
                    "daily",
                    "v",
                    '["per_day"]',
                    "day",
                    "2026-03-01",
                    "2026-03-03",
                    "1d",
                    "running",
                    now,
                ),
            )
            for chunk, status in enumerate(["succeeded", "succeeded", "running"]):
                db.execute(
                    """INSERT INTO backfill_chunks (backfill_id, chunk, range_lo, range_hi, status, metrics)
                       VALUES (?, ?, ?, ?, ?, ?)""",
                    (
                        "bf-1",
                        chunk,
                        f"2026-03-0{chunk + 1}",
                        f"2026-03-0{chunk + 2}",
                        status,
                        '{"rows_read": 5}',
                    ),
                )
        listed = text(client.get("/backfills").text)
        assert "bf-1" in listed and "2 of 3 chunk(s)" in listed
        detail = text(client.get("/backfills/bf-1").text)
        assert "2 of 3 chunk(s) done" in detail and "2026-03-03 .. 2026-03-04" in detail
        assert "bf-1" in client.get("/workflows/daily").text
    finally:
        with db:
            db.execute("DELETE FROM backfill_chunks WHERE backfill_id = 'bf-1'")
            db.execute("DELETE FROM backfills WHERE backfill_id = 'bf-1'")
        db.close()


def test_the_ui_never_writes_to_the_state_store(ui_project: UiProject) -> None:
    from calve.ui.queries import StateQueries

    queries = StateQueries(ui_project.project.settings.state)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        queries._db().execute("DELETE FROM runs")


def test_read_only_by_default_actions_are_refused_with_403(client: TestClient, ui_project: UiProject) -> None:
    before = len(ui_project.project.state.runs(limit=1000))
    token = client.app.state.ui.token  # type: ignore[attr-defined]
    for path in ("/workflows/copy/run", f"/runs/{ui_project.failed}/restart"):
        refused = client.post(path, data={"token": token})
        assert refused.status_code == 403
        assert "read-only" in refused.text and "--allow-actions" in refused.text
    assert "Run now" not in client.get("/workflows/copy").text
    assert 'id="restart"' not in client.get(f"/runs/{ui_project.failed}").text
    assert len(ui_project.project.state.runs(limit=1000)) == before


def test_actions_need_the_flag_the_token_and_the_same_origin(ui_project: UiProject) -> None:
    project = ui_project.project
    with TestClient(create_app(project, allow_actions=True), follow_redirects=False) as client:
        token = client.app.state.ui.token  # type: ignore[attr-defined]
        page = client.get("/workflows/copy").text
        assert 'id="run-now"' in page and f'value="{token}"' in page
        assert 'id="restart"' in client.get(f"/runs/{ui_project.failed}").text
        no_token = client.post("/workflows/copy/run", data={})
        assert no_token.status_code == 403 and "token" in no_token.text
        cross_site = client.post(
            "/workflows/copy/run", data={"token": token}, headers={"Origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403 and "another site" in cross_site.text
        before = {r.run_id for r in project.state.runs("copy", limit=1000)}
        started = client.post(
            "/workflows/copy/run", data={"token": token}, headers={"Origin": "http://testserver"}
        )
        assert started.status_code == 303 and started.headers["location"] == "/workflows/copy"
        deadline = time.time() + 60
        new: set[str] = set()
        while time.time() < deadline:
            new = {r.run_id for r in project.state.runs("copy", limit=1000)} - before
            if new and all(project.state.run(r).status.finished for r in new):  # type: ignore[union-attr]
                break
            time.sleep(0.2)
        (run_id,) = new
        assert project.state.run(run_id).status is RunStatus.SKIPPED  # type: ignore[union-attr]
        deadline = time.time() + 10  # the thread records the outcome just after the run ends
        while f"run {run_id} skipped" not in client.get("/workflows/copy").text and time.time() < deadline:
            time.sleep(0.1)
        assert f"run {run_id} skipped" in client.get("/workflows/copy").text
        ui_project.succeeded.append(run_id)
        not_restartable = client.post(f"/runs/{ui_project.succeeded[0]}/restart", data={"token": token})
        assert not_restartable.status_code == 409 and "only a failed or cancelled run" in not_restartable.text
