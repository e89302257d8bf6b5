"""The web UI in a real headless chromium, against `calve ui` running as a subprocess on a project with
real runs: click through its pages and compare what they show with the state store and the catalog.

Chromium is Debian's (/usr/bin/chromium, driven by Playwright; nothing is downloaded). Locally the
tests skip without it; in CI (CI=true) they fail instead. One server and one browser per module.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from typing import Any

import pytest

from calve.state import RunStatus
from tests.ui.conftest import Server, UiProject, start_server

pytestmark = pytest.mark.browser


def test_click_from_the_workflows_list_to_a_run_and_its_steps(
    page: Any, server: Server, ui_project: UiProject
) -> None:
    state = ui_project.project.state
    page.goto(server.url + "/")
    page.get_by_role("link", name="daily", exact=True).click()
    assert page.locator("#workflow-id").inner_text() == "daily"
    runs = state.runs("daily")
    assert page.locator("table.runs tbody tr").count() == len(runs)
    page.get_by_role("link", name=runs[0].run_id).click()

    assert page.locator("#run-id").inner_text() == runs[0].run_id
    steps = state.step_runs(runs[0].run_id)
    sections = page.locator("section.step")
    assert sections.count() == len(steps)
    for step in steps:
        section = page.locator(f'section.step[data-step="{step.step_id}"]')
        assert section.get_attribute("data-status") == step.status.value
        assert section.locator(".rows-read").inner_text() == f"{step.metrics.rows_read:,}"
        assert section.locator(".committed-snapshot").inner_text() == str(step.metrics.committed_snapshot_id)
        changed = step.metrics.inputs["changed"]
        shown = section.locator('tr[data-input="changed"] .snapshot-range').inner_text()
        assert shown == f"{changed.from_snapshot_id} → {changed.to_snapshot_id}"
        pinned = step.metrics.inputs["rows"]
        assert (
            section.locator('tr[data-input="rows"] .snapshot-range').inner_text()
            == f"pinned at {pinned.snapshot_id}"
        )
    pins = {
        row.locator("td").nth(0).inner_text(): row.locator("td").nth(1).inner_text()
        for row in page.locator("#pins tbody tr").all()
    }
    assert pins == {table: str(snapshot) for table, snapshot in (runs[0].pins or {}).items()}


def test_filter_the_runs_to_the_failed_one_and_read_its_error_with_file_and_line(
    page: Any, server: Server, ui_project: UiProject
) -> None:
    state = ui_project.project.state
    page.goto(server.url + "/runs")
    assert page.locator("#runs tbody tr").count() == len(state.runs(limit=50))
    page.select_option("#filter-status", "failed")
    page.click("#filter-apply")
    page.wait_for_url("**/runs?*status=failed*")
    failed = state.runs(status=RunStatus.FAILED)
    rows = page.locator("#runs tbody tr")
    assert rows.count() == len(failed) == 1
    assert page.locator("#run-count").inner_text().startswith("1 run(s)")
    rows.first.locator("a.run-link").click()

    run = state.run(ui_project.failed)
    assert run is not None and run.error
    assert page.locator("#run-id").inner_text() == run.run_id
    error = page.locator("#run-error pre").inner_text()
    assert error.strip() == run.error.strip()
    assert page.locator("#run-error code.file-line").first.inner_text() == "workflows/broken.yaml:9"
    (step,) = state.step_runs(run.run_id)
    assert page.locator('section.step[data-step="clean"]').get_attribute("data-status") == "failed"
    assert (
        page.locator('section.step[data-step="clean"] .step-error').inner_text().strip()
        == (step.error or "").strip()
    )


def test_from_a_run_to_its_source_table_snapshots_and_consumer(
    page: Any, server: Server, ui_project: UiProject
) -> None:
    page.goto(f"{server.url}/runs/{ui_project.hostile}")
    page.locator("#pins").get_by_role("link", name="shop.events").click()
    assert page.locator("#table-name").inner_text() == "shop.events"
    events = ui_project.project.catalog.load_table("shop.events")
    shown = [int(cell) for cell in page.locator("#snapshots td.snapshot").all_inner_texts()]
    assert shown == [s.snapshot_id for s in reversed(events.metadata.snapshots)]
    (checkpoint,) = [c for c in ui_project.project.state.checkpoints() if c.source_table == "shop.events"]
    row = page.locator(f'#consumers tr[data-consumer="{checkpoint.consumer}"]')
    assert row.locator(".checkpoint").inner_text() == str(checkpoint.snapshot_id)
    assert row.locator(".lag").inner_text() == "up to date"
    assert page.locator("svg.chart circle.dot").count() > 0  # the lateness plot


def test_read_only_server_shows_no_actions_and_refuses_a_post(page: Any, server: Server) -> None:
    page.goto(server.url + "/workflows/copy")
    assert page.locator("#run-now").count() == 0
    answer = page.request.post(server.url + "/workflows/copy/run", form={"token": "x"})
    assert answer.status == 403 and "read-only" in answer.text()
    # a DNS name re-pointed at 127.0.0.1 (rebinding) gets no page, so no form token either
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/workflows/copy", headers={"Host": f"evil.example:{port}"})
    assert connection.getresponse().status == 400
    connection.close()
    page.goto(server.url + "/lineage")
    page.locator('[data-node="workflow:daily"]').click()
    assert page.locator("#workflow-id").inner_text() == "daily"


@pytest.fixture(scope="module")
def actions_server(ui_project: UiProject, server: Server) -> Iterator[Server]:
    running = start_server(ui_project.root, "--allow-actions")
    yield running
    running.stop()


def test_run_now_with_allow_actions_records_a_new_run(
    page: Any, actions_server: Server, ui_project: UiProject
) -> None:
    state = ui_project.project.state
    before = {r.run_id for r in state.runs("daily", limit=1000)}
    page.goto(actions_server.url + "/workflows/daily")
    page.click("#run-now")
    page.wait_for_url("**/workflows/daily")
    deadline = time.monotonic() + 60
    new: set[str] = set()
    while time.monotonic() < deadline:
        new = {r.run_id for r in state.runs("daily", limit=1000)} - before
        if new and all(state.run(r).status.finished for r in new):  # type: ignore[union-attr]
            break
        time.sleep(0.2)
    (run_id,) = new
    page.goto(actions_server.url + "/runs?workflow=daily")
    assert page.locator(f'tr[data-run="{run_id}"]').count() == 1
    ui_project.succeeded.append(run_id)
