"""The command line itself: what it imports before a command runs, its help, and whole log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from calve.cli.app import COMMANDS, cli
from calve.project import Project, init_project
from calve.state import RunRecord, RunStatus
from tests.shop import EVENTS, Shop, create_shop

HEAVY = (
    "pyiceberg",
    "pyarrow",
    "duckdb",
    "prometheus_client",
    "calve.workflows.runner",
    "calve.state.store",
    "rich.table",
    "starlette",  # the web UI's server libraries load only when `calve ui` serves
    "jinja2",
    "uvicorn",
    "psycopg",  # the PostgreSQL driver loads only when a postgresql:// store or catalog is opened
    "calve.state.backends",
)

# runs `calve ARGS` in a fresh interpreter and prints which heavy modules it had imported
PROBE = """
import json, sys
from calve.cli.app import cli
try:
    cli.main(sys.argv[1:], prog_name="calve")
except SystemExit:
    pass
sys.stderr.write("HEAVY=" + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)) + "\\n")
"""


def _imported_by(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True, timeout=60
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("HEAVY="))
    return list(json.loads(line.removeprefix("HEAVY=")))


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        ["run", "--help"],
        ["changes", "--help"],
        ["scheduler", "--help"],
        ["lateness", "--help"],
        ["ui", "--help"],
        ["backfill", "--help"],
    ],
)
def test_version_and_help_import_no_engine_catalog_or_workflow_layer(args: list[str]) -> None:
    assert _imported_by(*args) == []


def test_help_lists_every_command_with_its_short_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        line = next((x for x in result.output.splitlines() if x.strip().startswith(name + " ")), None)
        assert line is not None and len(line.split()) > 1, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: cli {name}" in result.output or f"Usage: calve {name}" in result.output


LONG_TABLE = "shop.events_" + "late" * 35  # a trigger key, and so a log line, longer than any terminal
WORKFLOW_ID = "w" * 60
LONG_LINES = f"""
    id: {WORKFLOW_ID}
    triggers:
      - incremental: {{sources: [{LONG_TABLE}]}}
    steps:
      - id: count
        inputs:
          events: {{table: {LONG_TABLE}, read: icdc}}
        sql: SELECT day, count(*) AS n FROM events GROUP BY day
        output: {{table: shop.late_counts, mode: append}}
"""


def _project(tmp_path: Path, text: str) -> Project:
    root = tmp_path / "project"
    init_project(root, example=False)
    (root / "workflows" / "w.yaml").write_text(textwrap.dedent(text))
    return Project(root)


def _calve(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CALVE_HOME", "CALVE_PROJECT", "COLUMNS")}
    return subprocess.run(
        [sys.executable, "-m", "calve", "--project", str(project.root), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_scheduler_log_lines_are_whole_when_piped(tmp_path: Path) -> None:
    project = _project(tmp_path, LONG_LINES)
    create_shop(project.catalog)
    project.catalog.create_table(LONG_TABLE, schema=EVENTS).append(Shop().round()[0])

    done = _calve(project, "scheduler", "--once")
    assert done.returncode == 0, done.stderr
    (run_id,) = [r.run_id for r in project.state.runs(WORKFLOW_ID)]
    fired = [line for line in done.stdout.splitlines() if run_id in line]
    assert len(fired) == 1 and len(fired[0]) > 200
    assert f"{WORKFLOW_ID} [incremental:any:{LONG_TABLE}]: run {run_id} succeeded" in fired[0]
    # the run's progress (stderr) too: one line with the run id, the workflow and the trigger
    started = [line for line in done.stderr.splitlines() if line.startswith(f"run {run_id} of")]
    assert started and f"{WORKFLOW_ID} (incremental:any:{LONG_TABLE}, logical date" in started[0]


def test_runs_lists_twenty_unless_limit(tmp_path: Path) -> None:
    project = _project(tmp_path, LONG_LINES)
    for n in range(22):
        project.state.create_run(_record(f"r{n:02d}", RunStatus.SUCCEEDED, pid=None, created_at=1000.0 + n))
    listed = json.loads(_calve(project, "runs", "--json").stdout)["runs"]
    assert [r["run_id"] for r in listed] == [f"r{n:02d}" for n in range(21, 1, -1)]
    assert len(json.loads(_calve(project, "runs", "--limit", "50", "--json").stdout)["runs"]) == 22


def _record(
    run_id: str, status: RunStatus, pid: int | None, created_at: float | None = None, host: str | None = None
) -> RunRecord:
    import socket

    return RunRecord(
        run_id=run_id,
        workflow=WORKFLOW_ID,
        workflow_version="v1",
        trigger="manual",
        logical_date="2026-03-02",
        params={},
        status=status,
        created_at=created_at or time.time(),
        host=host or socket.gethostname(),
        pid=pid,
    )


def test_a_dead_run_shows_failed_and_runs_cancel_ends_one_of_another_host(tmp_path: Path) -> None:
    project = _project(tmp_path, LONG_LINES)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    project.state.create_run(_record("killed", RunStatus.RUNNING, pid=int(gone.stdout)))
    project.state.create_run(_record("dead", RunStatus.RUNNING, pid=1, host="another-host"))
    project.state.create_run(_record("alive", RunStatus.RUNNING, pid=os.getpid()))

    listed = {r["run_id"]: r["status"] for r in json.loads(_calve(project, "runs", "--json").stdout)["runs"]}
    assert listed["killed"] == "failed"  # its process is gone: known the moment anyone looks
    assert listed["dead"] == "running"  # another host: calve cannot see its process, `cancel` ends it

    cancelled = _calve(project, "runs", "cancel", "dead", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    assert project.state.run("dead").status is RunStatus.CANCELLED  # type: ignore[union-attr]

    again = _calve(project, "runs", "cancel", "dead")
    assert again.returncode == 1 and "cancelled" in again.stderr
    live = _calve(project, "runs", "cancel", "alive")
    assert live.returncode == 1 and f"kill {os.getpid()}" in live.stderr
    assert project.state.run("alive").status is RunStatus.RUNNING  # type: ignore[union-attr]
    missing = _calve(project, "runs", "cancel", "nope", "--json")
    assert missing.returncode == 1 and "nope" in json.loads(missing.stdout)["error"]


def test_validate_reports_calve_yaml_problems_with_their_line(tmp_path: Path) -> None:
    project = _project(tmp_path, LONG_LINES)
    (project.root / "calve.yaml").write_text("engine: duckdb\nlock_stale_afer: 5m\n")
    done = _calve(project, "validate", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["valid"] is False
    (problem,) = report["problems"]
    assert problem.startswith("calve.yaml:2:") and "lock_stale_after" in problem  # did you mean
