"""The scheduler's Prometheus endpoint scraped over HTTP after real runs, and its JSON-lines log."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from calve.observe.prometheus import SchedulerMetrics
from calve.state import RunStatus
from calve.workflows.runner import Runner
from calve.workflows.scheduler import Scheduler
from tests.conftest import ProjectFactory
from tests.observe.test_metrics import COPY, create_source, rows_for

TRIGGERED = COPY.replace(
    "    steps:", "    triggers:\n      - incremental: {sources: [obs.events]}\n    steps:", 1
)
LOG_FIELDS = {"ts", "level", "event", "message"}
FIRING_FIELDS = {"workflow", "trigger", "slot", "note", "run_id", "status", "attempt", "transient", "error"}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_endpoint_after_a_run_and_a_scheduler_tick(project_with: ProjectFactory) -> None:
    project = project_with(copy=COPY)  # no trigger: the tick runs nothing, it measures what is pending
    source = create_source(project.catalog)
    source.append(rows_for({1: 5, 2: 3, 3: 2}, 1))
    result = Runner.for_project(project).run(project.workflow("copy"))
    assert result is not None and result.status is RunStatus.SUCCEEDED
    metrics = SchedulerMetrics(project.state)
    scheduler = Scheduler(project, Runner.for_project(project), metrics=metrics)
    host, port, stop = metrics.serve(0)
    try:
        assert host == "127.0.0.1"
        assert scheduler.tick() == []
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        copy = (("workflow", "copy"),)
        assert samples[("calve_runs_total", (("status", "succeeded"), ("workflow", "copy")))] == 1
        assert samples[("calve_rows_read_total", copy)] == result.run.metrics.rows_read == 15
        assert samples[("calve_rows_written_total", copy)] == 10
        assert samples[("calve_run_duration_seconds_count", copy)] == 1
        assert samples[("calve_run_duration_seconds_sum", copy)] > 0
        assert samples[("calve_run_cpu_seconds_total", copy)] > 0
        consumer = (("consumer", "copy-copy"), ("table", "obs.events"))
        assert samples[("calve_pending_snapshots", consumer)] == 0  # the run processed everything
        assert samples[("calve_consumer_lag_seconds", consumer)] == 0
        assert samples[("calve_freshness_seconds", (("target", "obs.copied"),))] >= 0
        assert samples[("calve_scheduler_ticks_total", ())] == 1

        source.append(rows_for({4: 2}, 100))
        source.append(rows_for({5: 2}, 200))
        oldest = min(s.timestamp_ms for s in source.snapshots()[-2:]) / 1000
        assert scheduler.tick() == []
        scraped_at = dt.datetime.now(dt.UTC).timestamp()
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        assert samples[("calve_pending_snapshots", consumer)] == 2
        assert 0 < samples[("calve_consumer_lag_seconds", consumer)] <= scraped_at - oldest
        assert samples[("calve_scheduler_ticks_total", ())] == 2
    finally:
        stop()


def test_scheduler_once_logs_json_lines_with_the_documented_fields(project_with: ProjectFactory) -> None:
    project = project_with(copy=TRIGGERED)
    create_source(project.catalog).append(rows_for({1: 5, 2: 3}, 1))
    env = {**os.environ, "CALVE_HOME": str(project.home)}
    args = [
        "--project",
        str(project.root),
        "scheduler",
        "--once",
        "--log-format",
        "json",
        "--metrics-port",
        "0",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "calve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines and all(set(line) >= LOG_FIELDS for line in lines)
    events = {line["event"] for line in lines}
    assert events == {"log", "progress", "firing"}
    served = next(line for line in lines if line["event"] == "log")
    assert served["message"].startswith("metrics on http://127.0.0.1:")
    (firing,) = [line for line in lines if line["event"] == "firing"]
    assert set(firing) >= FIRING_FIELDS
    assert (firing["workflow"], firing["status"], firing["level"]) == ("copy", "succeeded", "info")
    assert firing["rows_read"] == 8 + 5 and firing["rows_written"] == 8
    assert firing["duration_s"] >= 0 and firing["cpu_s"] > 0 and "freshness_s" in firing
    assert dt.datetime.fromisoformat(firing["ts"].replace("Z", "+00:00")).tzinfo is not None
    assert any("step copy" in line["message"] for line in lines if line["event"] == "progress")
    assert Path(project.root).is_dir()
