"""Fixtures: a real embedded catalog (SQLite + file:// warehouse) in each test's tmp_path."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Callable
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
