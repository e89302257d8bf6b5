"""The web UI's parts on their own: the command's refusals, next due times, lateness from manifest
bounds, and SVG that escapes what it draws."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pyiceberg.catalog.sql import SqlCatalog

from calve.cli.app import cli
from calve.ui import svg
from calve.ui.lateness import event_time_columns, recent_ancestor
from calve.ui.schedule import next_due
from calve.workflows.model import TriggerKind, TriggerSpec
from tests.conftest import ICEBERG_EVENTS, ProjectFactory, events

UTC = dt.UTC


def test_ui_without_the_server_libraries_fails_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calve.project import init_project

    init_project(tmp_path / "p", example=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if `calve[ui]` was not installed
    result = CliRunner().invoke(cli, ["--project", str(tmp_path / "p"), "ui"])
    assert result.exit_code == 1
    assert "the web UI needs uvicorn, which is not installed: pip install 'calve[ui]'" in result.output


def test_ui_help_states_the_defaults_read_only_and_loopback() -> None:
    result = CliRunner().invoke(cli, ["ui", "--help"])
    assert result.exit_code == 0
    assert (
        "--allow-actions" in result.output and "127.0.0.1" in result.output and "read-only" in result.output
    )


NOW = dt.datetime(2026, 11, 29, 12, 7, 30, tzinfo=UTC)


def test_next_due_of_each_kind_of_trigger() -> None:
    cron = TriggerSpec(TriggerKind.CRON, cron="0 6 * * *")
    assert next_due(cron, None, NOW).next_at == dt.datetime(2026, 11, 29, 6, 0, tzinfo=UTC)  # not run yet
    ran = {"last_slot": "2026-11-29T06:00:00Z", "last_fired_at": NOW.timestamp() - 3600}
    assert next_due(cron, ran, NOW).next_at == dt.datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    interval = TriggerSpec(TriggerKind.INTERVAL, interval_s=900)
    current = {"last_slot": "2026-11-29T12:00:00Z", "last_fired_at": None}
    assert next_due(interval, current, NOW).next_at == dt.datetime(2026, 11, 29, 12, 15, tzinfo=UTC)
    incremental = TriggerSpec(
        TriggerKind.INCREMENTAL, sources=("db.a", "db.b"), when="all", min_interval_s=600
    )
    due = next_due(incremental, {"last_slot": None, "last_fired_at": NOW.timestamp() - 60}, NOW)
    assert due.note == "when all of db.a, db.b gets new snapshots, not before"
    assert due.next_at == NOW + dt.timedelta(seconds=540)
    assert next_due(incremental, None, NOW).next_at is None


def test_the_table_page_lateness_window_and_event_time_columns(catalog: SqlCatalog) -> None:
    table = catalog.create_table("db.events", schema=ICEBERG_EVENTS)
    assert recent_ancestor(table, 1) is None  # no history yet
    for day in (1, 2, 3):
        table.append(events(range(day * 10, day * 10 + 5), day=day))
    assert event_time_columns(table) == ["ts", "day"]
    first, second, _ = (s.snapshot_id for s in table.metadata.snapshots)
    assert recent_ancestor(table, 1) == second  # the report after it covers the newest snapshot
    assert recent_ancestor(table, 2) == first
    assert recent_ancestor(table, 3) is None  # the history is shorter: everything


def test_svg_escapes_every_text_it_draws() -> None:
    hostile = "<script>alert(1)</script>"
    chart = svg.chart([svg.Series(hostile, [(0.0, 1.0), (60.0, 2.0)])], title=hostile, y_label=hostile)
    assert "<script>" not in chart and "&lt;script&gt;" in chart
    graph = svg.Graph()
    graph.add(svg.Node("table:x", hostile, "table", '/tables/"><script>'))
    graph.add(svg.Node("workflow:w", "w", "workflow", "/workflows/w"))
    graph.edges.add(("table:x", "workflow:w"))
    drawn = svg.lineage(graph)
    assert "<script>" not in drawn and drawn.count('class="edge"') == 1
    assert svg.chart([], title="empty", y_label="y").count("no data yet") == 1


def test_lineage_layers_follow_the_edges_and_survive_a_cycle() -> None:
    graph = svg.Graph()
    for key in ("table:a", "workflow:w", "table:b", "workflow:v"):
        graph.add(svg.Node(key, key, key.split(":")[0], "/"))
    graph.edges |= {("table:a", "workflow:w"), ("workflow:w", "table:b"), ("table:b", "workflow:v")}
    assert graph.layers() == [["table:a"], ["workflow:w"], ["table:b"], ["workflow:v"]]
    graph.edges.add(("workflow:v", "table:a"))  # a cycle of tables
    assert sorted(k for layer in graph.layers() for k in layer) == sorted(graph.nodes)
    assert "<svg" in svg.lineage(graph)


def test_pages_of_a_project_with_an_invalid_workflow_file_list_its_problems(
    project_with: ProjectFactory,
) -> None:
    from starlette.testclient import TestClient

    from calve.ui.app import create_app

    project = project_with(bad="id: bad\nsteps:\n  - id: one\n    sql: SELEC 1\n")
    with TestClient(create_app(project)) as client:
        for path in ("/", "/tables", "/lineage"):
            page = client.get(path)
            assert page.status_code == 200
            assert "workflow files have problems" in page.text and "workflows/bad.yaml:4" in page.text
        assert "No runs" in client.get("/runs").text
