"""What a step can reach, end to end: refused at `calve validate` with file:line, and refused at run
time when validation is bypassed, with the target table and checkpoints unchanged."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from calve.errors import WorkflowError
from calve.project import Project
from calve.state import RunStatus
from calve.workflows.loader import load_workflow
from calve.workflows.model import StepKind, Workflow
from calve.workflows.runner import Runner
from tests.conftest import ProjectFactory
from tests.shop import Shop, create_shop

HINT = "declare the table as an input of the step"
COPY = """
    id: copy
    steps:
      - id: copy
        inputs:
          events: {table: shop.events, read: icdc}
        sql: SELECT event_id, amount FROM events
        output: {table: shop.copied, mode: append}
"""


def calve(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CALVE_HOME", "CALVE_PROJECT", "COLUMNS")}
    return subprocess.run(
        [sys.executable, "-m", "calve", "--project", str(project.root), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_names_each_construct_with_file_line_and_the_fix(
    project_with: ProjectFactory, tmp_path: Path
) -> None:
    stolen = tmp_path / "stolen.csv"
    project = project_with(
        attack=f"""
            id: attack
            steps:
              - id: leak
                inputs:
                  events: {{table: shop.events}}
                sql: |
                  SELECT * FROM events;
                  COPY (SELECT * FROM events) TO '{stolen}';
                  SELECT * FROM read_csv('/etc/passwd')
                output: {{table: shop.leak, mode: append}}
              - id: setup
                sql_file: setup.sql
                output: {{table: shop.setup, mode: append}}
        """,
    )
    (project.root / "workflows" / "setup.sql").write_text(
        "INSTALL httpfs;\nLOAD httpfs;\nATTACH 'x.db' AS x;\n"
        "SET enable_external_access = true;\nSELECT 1 AS a\n"
    )
    done = calve(project, "validate")
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "workflows/attack.yaml:9: steps[0].sql: COPY is not allowed in a step's SQL; a step's SQL" in text
    assert "workflows/attack.yaml:10: steps[0].sql: read_csv(...) reads outside the step's inputs" in text
    for line, construct in enumerate(("INSTALL", "LOAD", "ATTACH", "SET"), start=1):
        assert f"workflows/setup.sql:{line}: steps[1].sql_file: {construct} is not allowed" in text
    assert text.count(HINT) == 6
    assert not stolen.exists()


def test_sql_file_outside_the_project_is_refused_without_reading_it(
    project_with: ProjectFactory, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.sql"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")
    project = project_with(
        traversal="""
            id: traversal
            steps:
              - {id: a, sql_file: ../../../../../../../../etc/passwd, output: {table: shop.a, mode: append}}
              - {id: b, sql_file: ../../outside.sql, output: {table: shop.b, mode: append}}
              - {id: c, sql_file: linked.sql, output: {table: shop.c, mode: append}}
        """,
    )
    (project.root / "workflows" / "linked.sql").symlink_to(outside)
    done = calve(project, "validate")
    assert done.returncode != 0
    text = done.stdout + done.stderr
    for step, value in enumerate(("../../../../../../../../etc/passwd", "../../outside.sql", "linked.sql")):
        assert f"steps[{step}].sql_file: sql_file '{value}' is outside the project folder" in text
    assert "root:" not in text


def test_python_module_must_be_a_file_of_the_project(project_with: ProjectFactory, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.py"
    elsewhere.write_text("def run(ctx):\n    return None\n")
    project = project_with(
        modules="""
            id: modules
            steps:
              - {id: installed, python: json:loads}
              - {id: linked, python: linked_steps:run}
              - {id: ok, python: steps:run}
        """,
    )
    (project.root / "linked_steps.py").symlink_to(elsewhere)
    (project.root / "steps.py").write_text("def run(ctx):\n    return None\n")
    with pytest.raises(WorkflowError) as caught:
        project.workflow("modules")
    problems = caught.value.problems
    assert len(problems) == 2
    assert "steps[0].python: python module 'json' is not a file of the project (tried json.py" in problems[0]
    assert "steps[1].python: python module 'linked_steps' links outside the project folder" in problems[1]


def _bypassed(workflow: Workflow, **change: str | None) -> Workflow:
    """The workflow with its step changed after validation (as a caller of the library could)."""
    (step,) = workflow.steps
    return dataclasses.replace(workflow, steps=(dataclasses.replace(step, **change),))


@pytest.mark.parametrize("attack", ["copy", "read", "attach", "install", "unlock"])
def test_at_run_time_each_attack_fails_the_step_and_commits_nothing(
    project_with: ProjectFactory, tmp_path: Path, attack: str
) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    stolen = tmp_path / "stolen.csv"
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (event_id BIGINT, amount BIGINT)").connection.commit()
    sql = {
        "copy": f"COPY (SELECT * FROM events) TO '{stolen}';\nSELECT event_id, amount FROM events",
        "read": f"SELECT event_id, 0 AS amount FROM read_csv('{secret}')",
        "attach": f"ATTACH '{other}' AS other (TYPE sqlite);\nSELECT * FROM other.t",
        "install": "INSTALL httpfs;\nSELECT event_id, amount FROM events",
        "unlock": "SET enable_external_access = true;\nSELECT event_id, amount FROM events",
    }[attack]
    project = project_with(copy=COPY)
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    runner = Runner.for_project(project)
    first = runner.run(project.workflow("copy"))  # the target exists, with a checkpoint
    assert first is not None and first.status is RunStatus.SUCCEEDED
    events.append(Shop().round()[0])
    target = project.catalog.load_table("shop.copied")
    before = (target.current_snapshot(), dict(target.properties))

    result = runner.run(_bypassed(project.workflow("copy"), sql=sql))
    assert result is not None and result.status is RunStatus.FAILED
    assert HINT in (result.run.error or "") and "hunter2" not in (result.run.error or "")
    target.refresh()
    assert (target.current_snapshot(), dict(target.properties)) == before
    assert not stolen.exists()
    assert sqlite3.connect(other).execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_at_run_time_a_python_module_outside_the_project_is_not_imported(
    project_with: ProjectFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "imported"
    outside = tmp_path / "outside_pkg"
    outside.mkdir()
    (outside / "outside_steps.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\ndef run(ctx):\n    return None\n"
    )
    project = project_with(copy=COPY)
    (project.root / "steps.py").write_text("def run(ctx):\n    return None\n")
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    sys.path.insert(0, str(outside))  # importable, but not the project's
    try:
        workflow = _bypassed(project.workflow("copy"), python="outside_steps:run", sql=None)
        (step,) = workflow.steps
        workflow = dataclasses.replace(workflow, steps=(dataclasses.replace(step, kind=StepKind.PYTHON),))
        result = Runner.for_project(project).run(workflow)
    finally:
        sys.path.remove(str(outside))
    assert result is not None and result.status is RunStatus.FAILED
    assert "python module 'outside_steps' is not a file of the project" in (result.run.error or "")
    assert not marker.exists()
    assert "shop.copied" not in [".".join(t) for t in project.catalog.list_tables("shop")]


def test_the_playback_pipeline_loads_inside_its_folder(tmp_path: Path) -> None:
    from calve.playback.demo import PIPELINE

    for name in ("lookback.yaml", "incremental.yaml"):
        workflow = load_workflow(PIPELINE / "workflows" / name, PIPELINE)
        assert all(step.sql for step in workflow.steps)
    (tmp_path / "w.yaml").write_text(textwrap.dedent(COPY))
    assert load_workflow(tmp_path / "w.yaml").steps[0].sql
