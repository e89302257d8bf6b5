"""Fixtures: a real embedded catalog (SQLite + file:// warehouse) in each test's tmp_path."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import DateType, LongType, NestedField, StringType, TimestampType

from calve.catalog import embedded_catalog
from calve.project import Project, init_project

# make(settings=None, **workflows): a project in the test's tmp_path with these workflow files
ProjectFactory = Callable[..., Project]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated CALVE_HOME: catalog, warehouse and state store of this test only."""
    path = tmp_path / ".calve"
    monkeypatch.setenv("CALVE_HOME", str(path))
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def project_with(tmp_path: Path) -> ProjectFactory:
    """A factory of projects in tmp_path/project: `project_with(name=YAML, ..., settings=CALVE_YAML)`."""

    def make(settings: str | None = None, **workflows: str) -> Project:
        return make_project(tmp_path / "project", settings, **workflows)

    return make


def make_project(root: Path, settings: str | None = None, **workflows: str) -> Project:
    """A project in `root` with these workflow files (what `project_with` builds; for wider scopes)."""
    init_project(root, example=False)
    if settings is not None:
        (root / "calve.yaml").write_text(textwrap.dedent(settings))
    for name, text in workflows.items():
        (root / "workflows" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return Project(root)


@pytest.fixture
def catalog(home: Path) -> SqlCatalog:
    cat = embedded_catalog(home)
    cat.create_namespace("db")
    return cat


ICEBERG_EVENTS = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "ts", TimestampType(), required=False),
    NestedField(3, "day", DateType(), required=False),
    NestedField(4, "name", StringType(), required=False),
)

EVENTS = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("ts", pa.timestamp("us")),
        pa.field("day", pa.date32()),
        pa.field("name", pa.string()),
    ]
)


def events(ids: range | list[int], day: int = 1, name: str = "n") -> pa.Table:
    """Rows with the EVENTS schema; `day` is the day of January 2026 of every row."""
    ids = list(ids)
    date = dt.date(2026, 1, day)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "ts": pa.array([dt.datetime(2026, 1, day, i % 24) for i in ids], pa.timestamp("us")),
            "day": pa.array([date] * len(ids), pa.date32()),
            "name": pa.array([f"{name}{i}" for i in ids], pa.string()),
        },
        schema=EVENTS,
    )


from tests.postgres import postgres_server, postgres_url  # noqa: E402,F401  (fixtures, marked postgresql)


def require_extra(*modules: str) -> None:
    """Skip the test when an optional package is missing, with the install line; fail in CI (CI=true),
    where scripts/test.sh installs the extra and runs these tests in a venv of their own."""
    import importlib.util
    import os

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    message = (
        f"needs {', '.join(missing)}: pip install -e '.[dev,ray]' in a venv of its own "
        "(scripts/test.sh makes .venv-ray and runs `pytest -m daft` and `pytest -m ray` there)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray cluster (head + one worker node on 127.0.0.1) for the session: its address."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    require_extra("daft", "ray")
    log = tmp_path_factory.mktemp("ray") / "cluster.log"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    script = Path(__file__).parent / "ray_cluster.py"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            env=env,
            start_new_session=True,  # a process group of its own: stopped whole at the end
        )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and not line.startswith("ADDRESS"):
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                pytest.fail(f"the Ray cluster did not start:\n{log.read_text()[-3000:]}")
        address = line.split()[1]
        os.environ.update(
            {
                "RAY_AUTH_MODE": "disabled",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "CALVE_TEST_RAY_CLUSTER_PID": str(process.pid),  # tests/ray_kill_worker.py
            }
        )
        yield address
    finally:
        process.terminate()  # the cluster shuts its nodes down on SIGTERM
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):  # a node process left behind in its group
            os.killpg(process.pid, signal.SIGKILL)
