"""calve.yaml: its defaults (defined once), merge keys, and problems reported as ProjectError."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from calve.errors import ProjectError, WorkflowError
from calve.project import (
    DEFAULT_LOCK_STALE_AFTER_S,
    DEFAULT_SETTINGS,
    PROJECT_FILE,
    Project,
)


def project_with(tmp_path: Path, settings: str) -> Path:
    (tmp_path / PROJECT_FILE).write_text(textwrap.dedent(settings))
    return tmp_path


def test_the_written_defaults_are_the_defaults(tmp_path: Path) -> None:
    written = Project(project_with(tmp_path, DEFAULT_SETTINGS)).settings
    (tmp_path / PROJECT_FILE).write_text("")
    empty = Project(tmp_path).settings
    assert written == empty
    assert empty.lock_stale_after_s == DEFAULT_LOCK_STALE_AFTER_S == 600
    assert empty.catalog is None and empty.engine.name == "duckdb"
    assert empty.state == (tmp_path / ".calve" / "state.db").resolve()
    assert empty.workflows == (tmp_path / "workflows").resolve()


def test_every_problem_of_calve_yaml_is_a_project_error_with_its_line(tmp_path: Path) -> None:
    root = project_with(
        tmp_path,
        """\
        catalog: embedded
        engnie: duckdb
        state: 3
        lock_stale_after: soon
        """,
    )
    with pytest.raises(ProjectError) as caught:
        Project(root)
    assert not isinstance(caught.value, WorkflowError)
    assert caught.value.problems == [
        "calve.yaml:2: engnie: unknown key 'engnie' (did you mean 'engine'?); "
        "allowed here: catalog, warehouse, engine, state, workflows, lock_stale_after, maintenance, observe",
        "calve.yaml:3: state: must be a string, not int; leave it out for the default",
        "calve.yaml:4: lock_stale_after: 'soon' is not a duration: use a number and a unit, as in 90s, 15m, "
        "2h, 1d",
    ]


def test_yaml_that_does_not_parse_is_a_project_error(tmp_path: Path) -> None:
    root = project_with(tmp_path, "engine: duckdb\nstate: [unclosed\n")
    with pytest.raises(ProjectError) as caught:
        Project(root)
    (problem,) = caught.value.problems
    assert problem.startswith("calve.yaml:3: not valid YAML")


def test_a_top_level_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=r"calve.yaml:1: \(top level\): must be a mapping"):
        Project(project_with(tmp_path, "- engine\n"))


def test_merge_keys_work_in_calve_yaml(tmp_path: Path) -> None:
    root = project_with(
        tmp_path,
        """\
        <<: {engine: duckdb, lock_stale_after: 5m, workflows: flows}
        lock_stale_after: 2m
        """,
    )
    settings = Project(root).settings
    assert settings.lock_stale_after_s == 120  # own keys win over merged ones
    assert settings.workflows == (tmp_path / "flows").resolve()


def test_an_unknown_key_brought_by_a_merge_is_reported_at_the_merge(tmp_path: Path) -> None:
    root = project_with(tmp_path, "engine: duckdb\n<<: {enigne: duckdb}\n")
    with pytest.raises(ProjectError) as caught:
        Project(root)
    (problem,) = caught.value.problems
    assert problem.startswith("calve.yaml:2: enigne: unknown key 'enigne' (did you mean 'engine'?)")


def test_a_key_without_a_value_takes_the_default(tmp_path: Path) -> None:
    settings = Project(project_with(tmp_path, "engine:\nlock_stale_after:\ncatalog:\n")).settings
    assert settings.engine.name == "duckdb" and settings.lock_stale_after_s == DEFAULT_LOCK_STALE_AFTER_S
    assert settings.catalog is None
