"""A project with real runs for the web UI's tests: three workflows on the shop's tables, run for real.

`copy` appends the new events of shop.events to shop.copied (twice, then once with nothing new),
`daily` re-aggregates the days that changed into shop.daily, and `broken` fails on a column that does
not exist (its error names workflows/broken.yaml and the line). Built once per test module.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from calve.project import Project
from calve.state import RunStatus
from calve.workflows.runner import Runner
from tests.conftest import make_project
from tests.shop import Shop, create_shop

HOSTILE = "<script>alert('x')</script>"

COPY = """
    id: copy
    description: Copies the new events <b>as they are</b>.
    params:
      label: {type: string, default: plain}
    triggers:
      - incremental: {sources: [shop.events], min_interval: 1m}
      - cron: "0 6 * * *"
    steps:
      - id: copy
        inputs:
          events: {table: shop.events, read: icdc}
        sql: |
          SELECT event_id, account_id, day, amount, $label AS label
          FROM events
        output: {table: shop.copied, mode: append}
"""

DAILY = """
    id: daily
    triggers:
      - interval: 15m
    steps:
      - id: per_day
        inputs:
          changed: {table: shop.copied, read: ranges, ranges: [day]}
          rows:
            table: shop.copied
            filter: {day: {between: [$range_day_min, $range_day_max]}}
        sql: SELECT day, count(*) AS events, sum(amount) AS amount FROM rows GROUP BY day
        output:
          table: shop.daily
          mode: overwrite
          filter: {day: {between: [$range_day_min, $range_day_max]}}
"""

BROKEN = """
    id: broken
    steps:
      - id: clean
        inputs:
          events: {table: shop.events, read: icdc}
        sql: |
          SELECT event_id,
                 no_such_column
          FROM events
        output: {table: shop.clean, mode: append}
"""


@dataclass(frozen=True)
class UiProject:
    project: Project
    succeeded: list[str]  # run ids, oldest first
    failed: str
    hostile: str  # a succeeded run whose param value is HOSTILE

    @property
    def root(self) -> Path:
        return self.project.root


def build_ui_project(root: Path) -> UiProject:
    project = make_project(root, copy=COPY, daily=DAILY, broken=BROKEN)
    events, _ = create_shop(project.catalog)
    shop = Shop(events_per_day=60)
    runner = Runner.for_project(project)
    workflows = project.workflows()
    succeeded = []

    def run(workflow: str, **params: str) -> str:
        result = runner.run(workflows[workflow], params)
        assert result is not None
        if result.status is not RunStatus.FAILED:
            succeeded.append(result.run.run_id)
        return result.run.run_id

    events.append(shop.round()[0])
    run("copy")
    run("daily")
    events.append(shop.round()[0])
    hostile = run("copy", label=HOSTILE)
    run("daily")
    run("copy")  # nothing new: skipped
    failed = run("broken")
    state = project.state
    assert state.run(failed) is not None and state.run(failed).status is RunStatus.FAILED  # type: ignore[union-attr]
    return UiProject(project, succeeded, failed, hostile)


@pytest.fixture(scope="module")
def ui_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiProject]:
    yield build_ui_project(tmp_path_factory.mktemp("ui") / "project")


# ---- a real `calve ui` server and a real headless chromium ----------------------------------------

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; never `playwright install` (no downloads)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_browser() -> None:
    """Skip (locally) or fail (in CI, where .ci/run installs chromium) without chromium and playwright."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    elif importlib.util.find_spec("playwright") is None:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"browser tests must run in CI (CI=true), but {problem}")
    pytest.skip(f"browser test skipped: {problem}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """`calve ui` running as a subprocess on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(root: Path, *extra: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CALVE_HOME", "CALVE_PROJECT")}
    process = subprocess.Popen(
        [sys.executable, "-m", "calve", "--project", str(root), "ui", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"calve ui exited with {process.returncode}: {process.stderr.read().decode()}"
            )  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return Server(process, url)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"calve ui did not answer on {url} within 60s")


@pytest.fixture(scope="module")
def server(ui_project: UiProject) -> Iterator[Server]:
    require_browser()
    running = start_server(ui_project.root)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()
