"""`engine:` in a workflow file: loaded with calve.yaml's syntax, used by the runner for that workflow's
steps, by `calve validate` for the Daft-dialect check, and one Daft runner per project.

The tests not marked `daft` run without daft installed (nothing here imports it but the marked test,
which scripts/test.sh runs in .venv-ray)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from calve.cli.app import cli
from calve.engines import EngineSpec
from calve.errors import WorkflowError
from calve.project import Project
from calve.state import RunStatus
from calve.workflows.loader import load_workflow
from calve.workflows.model import Workflow
from calve.workflows.runner import Runner
from tests.conftest import EVENTS, ProjectFactory, events, require_extra
from tests.shop import EXAMPLES, Shop, create_shop, rows


def load(tmp_path: Path, text: str) -> Workflow:
    path = tmp_path / "w.yaml"
    path.write_text(textwrap.dedent(text))
    return load_workflow(path, tmp_path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(WorkflowError) as caught:
        load(tmp_path, text)
    return caught.value.problems


STEPS = """\
steps:
  - {id: s, sql: SELECT 1 AS x, output: {table: db.out, mode: append}}
"""


@pytest.mark.parametrize(
    ("engine", "spec"),
    [
        ("daft", EngineSpec("daft")),
        ("duckdb", EngineSpec("duckdb")),
        ("{name: ray, address: '127.0.0.1:6379'}", EngineSpec("ray", "127.0.0.1:6379")),
        ("{name: duckdb, threads: 2}", EngineSpec("duckdb", threads=2)),
        ("{name: daft, threads: 3}", EngineSpec("daft", threads=3)),
    ],
)
def test_engine_takes_calve_yaml_syntax_and_its_line_is_kept(
    tmp_path: Path, engine: str, spec: EngineSpec
) -> None:
    workflow = load(tmp_path, f"id: w\ndescription: d\nengine: {engine}\n{STEPS}")
    assert workflow.engine == spec
    assert workflow.engine_line == 3


@pytest.mark.parametrize("engine", ["", "engine:\n", "engine: null\n"])
def test_no_engine_is_the_projects(tmp_path: Path, engine: str) -> None:
    workflow = load(tmp_path, f"id: w\n{engine}{STEPS}")
    assert workflow.engine is None and workflow.engine_line is None


@pytest.mark.parametrize(
    ("engine", "line", "message"),
    [
        ("3", 2, "engine: must be an engine name or a mapping, not int; as in engine: duckdb"),
        ("[daft]", 2, "engine: must be an engine name or a mapping, not list"),
        ("{name: daft, adress: x}", 2, "engine: unknown key(s) adress; an engine has name, address, threads"),
        ("{address: x}", 2, "engine: needs name: duckdb, daft or ray"),
        (
            "{name: daft, address: x}",
            2,
            "engine: address is the Ray cluster's HOST:PORT, a string, for name: ray",
        ),
        ("{name: duckdb, threads: 0}", 2, "engine: threads must be a whole number of at least 1, not 0"),
        ("{name: ray, threads: 2}", 2, "engine: threads is for duckdb and daft"),
        (
            "dukdb",
            2,
            "engine: no engine named 'dukdb' (did you mean 'duckdb'?); available: duckdb, daft, ray",
        ),
        ("\n  name: rai\n  threads: 2", 3, "engine.name: no engine named 'rai' (did you mean 'ray'?)"),
    ],
)
def test_a_bad_engine_fails_loading_at_its_line_with_the_fix(
    tmp_path: Path, engine: str, line: int, message: str
) -> None:
    found = problems(tmp_path, f"id: w\nengine: {engine}\n{STEPS}")
    assert len(found) == 1, found
    assert found[0].startswith(f"w.yaml:{line}: {message}"), found
    if "no engine named" not in message:  # the parser's problems also say what no engine: means
        assert found[0].endswith("(or leave engine: out: the workflow then runs on calve.yaml's engine)")


def test_a_bad_engine_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    found = problems(tmp_path, "engine: 3\nsteps:\n  - {id: s, sql: SELEC 1}\n")
    assert [p.split(":")[1] for p in found] == ["1", "3"], found  # file order


# ---- validate: the Daft-dialect check on the workflow's engine ------------------------------------


def any_step(workflow_id: str, engine: str | None) -> str:
    """A workflow whose SQL DuckDB runs and Daft does not (`= ANY (...)`), at line 7 (+1 with engine:)."""
    chosen = f"engine: {engine}\n" if engine is not None else ""
    return f"""\
id: {workflow_id}
{chosen}steps:
  - id: pick
    inputs:
      events: {{table: db.events}}
    sql: |
      SELECT id FROM events
      WHERE id = ANY([1, 2])
    output: {{table: db.{workflow_id}_out, mode: append}}
"""


def test_validate_checks_daft_sql_only_in_the_workflow_on_daft(project_with: ProjectFactory) -> None:
    project = project_with(
        settings="engine: duckdb\n", on_duck=any_step("on_duck", None), on_daft=any_step("on_daft", "daft")
    )
    with pytest.raises(WorkflowError) as caught:
        project.workflows()
    assert len(caught.value.problems) == 1, caught.value.problems
    assert caught.value.problems[0].startswith(
        "workflows/on_daft.yaml:9: step 'pick': ANY / ALL is not supported by Daft"
    )
    result = CliRunner().invoke(cli, ["--project", str(project.root), "validate"])
    assert result.exit_code == 1
    assert "workflows/on_daft.yaml:9: step 'pick': ANY / ALL" in result.output, result.output
    assert "on_duck.yaml" not in result.output

    # the other way round: the project on Daft, the workflow on DuckDB is not checked for Daft
    (project.root / "calve.yaml").write_text("engine: daft\n")
    (project.root / "workflows" / "on_daft.yaml").write_text(any_step("on_daft", "duckdb"))
    with pytest.raises(WorkflowError) as caught:
        Project(project.root).workflows()
    assert [p.split(": step")[0] for p in caught.value.problems] == ["workflows/on_duck.yaml:8"]

    # and all on DuckDB: valid, each workflow's engine said
    (project.root / "calve.yaml").write_text("engine: {name: duckdb, threads: 2}\n")
    result = CliRunner().invoke(cli, ["--project", str(project.root), "validate", "--json"])
    assert result.exit_code == 0, result.output
    engines = {w: v["engine"] for w, v in json.loads(result.output)["workflows"].items()}
    assert engines == {
        "on_daft": {"name": "duckdb", "address": None, "threads": None, "from": "workflow"},
        "on_duck": {"name": "duckdb", "address": None, "threads": 2, "from": "calve.yaml"},
    }


# ---- one Daft runner per project -------------------------------------------------------------------


def plain(workflow_id: str, engine: str | None) -> str:
    chosen = f"engine: {engine}\n" if engine is not None else ""
    return f"id: {workflow_id}\n{chosen}" + STEPS.replace("db.out", f"db.{workflow_id}")


def test_daft_and_ray_in_one_project_are_refused_naming_the_files(project_with: ProjectFactory) -> None:
    project = project_with(
        settings="catalog: embedded\nengine: duckdb\n",
        a=plain("a", "daft"),
        b=plain("b", "{name: ray, address: '127.0.0.1:6379'}"),
        c=plain("c", None),  # DuckDB beside them is fine
    )
    with pytest.raises(WorkflowError) as caught:
        project.workflows()
    assert caught.value.problems == [
        "the workflows need 2 Daft runners (daft (local): workflows/a.yaml:2; ray at 127.0.0.1:6379: "
        "workflows/b.yaml:2); Daft sets one runner per process and the scheduler runs every workflow of a "
        "project in one process: choose one (the same engine:, with the same address or threads, in these "
        "workflow files), or put the workflows in separate projects, each run in its own process"
    ]
    result = CliRunner().invoke(cli, ["--project", str(project.root), "validate"])
    assert result.exit_code == 1
    assert "2 Daft runners" in result.output and "workflows/b.yaml:2" in result.output, result.output


def test_the_projects_engine_counts_for_the_workflows_without_their_own(project_with: ProjectFactory) -> None:
    project = project_with(
        settings="catalog: embedded\nengine: {name: ray, address: '127.0.0.1:1'}\n",
        a=plain("a", "daft"),
        b=plain("b", None),
    )
    with pytest.raises(WorkflowError) as caught:
        project.workflows()
    (problem,) = caught.value.problems
    assert "daft (local): workflows/a.yaml:2" in problem
    assert "ray at 127.0.0.1:1: workflows/b.yaml (calve.yaml:2, the project's engine)" in problem


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("{name: ray, address: '127.0.0.1:1'}", "{name: ray, address: '127.0.0.1:2'}"),  # two clusters
        ("daft", "{name: daft, threads: 2}"),  # Daft keeps the first runner's threads
    ],
)
def test_two_settings_of_one_daft_runner_are_refused(project_with: ProjectFactory, a: str, b: str) -> None:
    project = project_with(a=plain("a", a), b=plain("b", b))
    with pytest.raises(
        WorkflowError, match=r"need 2 Daft runners .*workflows/a\.yaml:2.*workflows/b\.yaml:2"
    ):
        project.workflows()


def test_one_daft_runner_shared_is_fine(project_with: ProjectFactory) -> None:
    # the project's daft unused by any workflow does not count; DuckDB beside daft is fine
    project = project_with(
        settings="engine: {name: ray, address: '127.0.0.1:1'}\n",
        a=plain("a", "daft"),
        b=plain("b", "{name: duckdb, threads: 1}"),
        c=plain("c", "daft"),
    )
    assert set(project.workflows()) == {"a", "b", "c"}


# ---- the runner ------------------------------------------------------------------------------------


COPY = """\
id: {id}
{engine}steps:
  - id: copy
    inputs:
      events: {{table: db.events, read: icdc}}
    sql: SELECT id, name, day FROM events WHERE id % 2 = 0
    output: {{table: db.{id}, mode: merge, keys: [id]}}
"""


def test_the_runner_runs_each_workflow_on_its_engine_made_once(project_with: ProjectFactory) -> None:
    project = project_with(
        own=COPY.format(id="own", engine="engine: {name: duckdb, threads: 1}\n"),
        same=COPY.format(id="same", engine="engine:\n  name: duckdb\n  threads: 1\n"),
        default=COPY.format(id="default", engine=""),
    )
    project.catalog.create_namespace("db")
    source = project.catalog.create_table("db.events", schema=EVENTS)
    runner = Runner.for_project(project)
    workflows = project.workflows()
    own, same, default = workflows["own"], workflows["same"], workflows["default"]
    assert runner.engine_for(default) is runner.engine
    assert runner.engine_for(own) is runner.engine_for(same)  # one engine per setting, kept
    assert runner.engine_for(own) is not runner.engine
    assert runner.engine_for(own).threads == 1  # type: ignore[attr-defined]
    for day in (1, 2):
        source.append(events(range(day * 10, day * 10 + 7), day=day))
        for workflow in workflows.values():
            result = runner.run(workflow)
            assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    tables = {w: rows(project.catalog.load_table(f"db.{w}").scan().to_arrow(), ["id"]) for w in workflows}
    assert tables["own"] == tables["same"] == tables["default"]
    assert [r["id"] for r in tables["own"]] == [10, 12, 14, 16, 20, 22, 24, 26]
    explained = CliRunner().invoke(cli, ["--project", str(project.root), "explain", "own"])
    assert explained.output.startswith("engine: duckdb (the workflow's engine:)"), explained.output
    explained = CliRunner().invoke(cli, ["--project", str(project.root), "explain", "default", "--json"])
    assert json.loads(explained.output)["engine"] == "duckdb"


# ---- Daft beside DuckDB ----------------------------------------------------------------------------


def shop_project(root: Path, daft_workflow: str | None) -> Project:
    """The append_merge and filter_join examples in one project on DuckDB; `daft_workflow` on Daft."""
    root.mkdir(parents=True)
    (root / "calve.yaml").write_text("catalog: embedded\nengine: duckdb\n")
    (root / "workflows").mkdir()
    for example, name in (("append_merge", "clean_events"), ("filter_join", "account_totals")):
        target = root / "workflows" / f"{name}.yaml"
        shutil.copy(EXAMPLES / example / "workflows" / f"{name}.yaml", target)
        if name == daft_workflow:
            text = target.read_text()
            target.write_text(text.replace("\nsteps:\n", "\nengine: daft\nsteps:\n", 1))
    return Project(root)


@pytest.mark.daft
def test_a_workflow_on_daft_beside_duckdb_gives_the_all_duckdb_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_extra("daft")
    monkeypatch.delenv("CALVE_HOME", raising=False)  # each project keeps its tables in its .calve
    from daft.runners import get_or_infer_runner_type

    from calve.engines.daft import DaftEngine, _current_runner

    if _current_runner() is not None and get_or_infer_runner_type() != "native":
        pytest.skip("this process runs Daft on Ray: run `pytest -m daft` in a process of its own")
    targets = {
        "clean_events": ("shop.events_clean", ["event_id"]),
        "account_totals": ("shop.account_totals", ["account_id"]),
    }
    projects: dict[str, Project] = {}
    runners: dict[str, Runner] = {}
    sources = {}
    for name, on_daft in (("duckdb", None), ("mixed", "clean_events")):
        projects[name] = shop_project(tmp_path / name, on_daft)
        runners[name] = Runner.for_project(projects[name])
        sources[name] = create_shop(projects[name].catalog)
    mixed = projects["mixed"].workflows()
    assert mixed["clean_events"].engine == EngineSpec("daft")
    assert isinstance(runners["mixed"].engine_for(mixed["clean_events"]), DaftEngine)
    assert type(runners["mixed"].engine_for(mixed["account_totals"])).__name__ == "DuckDBEngine"
    shops = {name: Shop(seed=7) for name in projects}
    for round_number in range(3):
        for name, project in projects.items():
            events_table, refunds = sources[name]
            new_events, new_refunds = shops[name].round()
            events_table.append(new_events)
            refunds.append(new_refunds)
            for workflow in project.workflows().values():
                result = runners[name].run(workflow)
                assert result is not None and result.status is RunStatus.SUCCEEDED, (
                    name,
                    workflow.id,
                    result and result.run.error,
                )
        for table, order in targets.values():
            on_duckdb = projects["duckdb"].catalog.load_table(table)
            on_mixed = projects["mixed"].catalog.load_table(table)
            assert on_mixed.schema().as_struct() == on_duckdb.schema().as_struct(), table
            assert rows(on_mixed.scan().to_arrow(), order) == rows(on_duckdb.scan().to_arrow(), order), (
                table,
                round_number,
            )
    assert _current_runner() is not None and get_or_infer_runner_type() == "native"  # Daft really ran
