"""The Daft dialect of a step's SQL, checked on its text (no Daft needed): rewrites, bound values,
refused constructs with their lines, and `calve validate` naming them with file:line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlglot

from calve.engines import EngineSpec, get_engine
from calve.engines.daft_sql import incompatibilities, literal, translate
from calve.errors import ConfigError, ProjectError, SqlError, WorkflowError
from calve.project import Project
from tests.conftest import ProjectFactory

HOSTILE = "it's'; DROP TABLE events; -- \\' \" $x {x} \n"


def test_values_are_bound_as_literals_built_by_sqlglot_even_hostile_ones() -> None:
    query = translate(
        "SELECT * FROM events WHERE item = $v AND day >= $d",
        {"v": HOSTILE, "d": dt.date(2024, 1, 2)},
        {"events"},
    )
    (statement,) = query.statements
    tree = sqlglot.parse_one(statement.sql, read="duckdb")
    (equal,) = list(tree.find_all(sqlglot.exp.EQ))
    assert equal.expression.this == HOSTILE  # one string literal holding the whole value, nothing else
    assert "CAST('2024-01-02' AS DATE)" in statement.sql
    assert len(list(tree.find_all(sqlglot.exp.Table))) == 1  # no statement or table slipped in


def test_timezone_aware_values_become_utc_timestamps_and_odd_values_are_refused() -> None:
    value = dt.datetime(2024, 1, 2, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert literal(value).sql("duckdb") == "CAST('2024-01-02 01:00:00' AS TIMESTAMP)"
    with pytest.raises(SqlError, match="cannot be bound"):
        translate("SELECT $v AS v", {"v": object()}, set())
    with pytest.raises(SqlError, match=r"no value for parameter\(s\): \$missing"):
        translate("SELECT $missing AS v", {}, set())


def test_duckdb_constructs_are_rewritten_to_what_daft_runs() -> None:
    sql = """
        SELECT event_id, lower(trim(item)) AS item, count(*) FILTER (WHERE amount > 1) AS big,
               CASE WHEN amount > 2 THEN 'x' END AS label
        FROM events
        QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY sent_at DESC) = 1
    """
    (statement,) = translate(sql, {}, {"events"}).statements
    text = statement.sql.upper()
    assert "QUALIFY" not in text and "FILTER" not in text and "TRIM" not in text
    assert "STRIP(" in text and "ELSE NULL" in text and "CASE WHEN AMOUNT > 1 THEN 1 ELSE NULL END" in text


@pytest.mark.parametrize(
    ("sql", "construct", "line"),
    [
        ("SELECT *\nFROM read_parquet('/etc/x.parquet')", "read_parquet(...)", 2),
        ("SELECT *\nFROM read_csv('/etc/passwd')", "read_csv(...)", 2),
        ("SELECT * FROM events\nUNION ALL SELECT * FROM '/data/x.parquet'", "/data/x.parquet", 2),
        ("SELECT url_download(item) AS body FROM events", "url_download(...)", 1),
        ("SELECT file_size(item) AS f FROM events", "file_size(...)", 1),
        ("SELECT 1 AS a;\nSELECT file(item) AS f FROM events", "SQL", 2),  # sqlglot cannot read it
        ("SELECT *\nFROM hidden", "hidden", 2),
        ("SELECT * FROM other_db.events", "other_db.events", 1),
        ("COPY events TO '/tmp/x.csv'", "COPY", 1),
        ("SELECT * FROM events\nWHERE amount = ANY([1, 2])", "ANY / ALL", 2),
        ("SELECT day, sum(amount) AS s FROM events\nGROUP BY CUBE (day)", "CUBE", 2),
        ("SELECT CAST(day AS TIMESTAMPTZ) AS t FROM events", "TIMESTAMPTZ", 1),
    ],
)
def test_refused_constructs_are_named_with_their_line(sql: str, construct: str, line: int) -> None:
    found = incompatibilities(sql, {"events"})
    assert [(p.construct, p.line) for p in found] == [(construct, line)], found
    with pytest.raises(SqlError) as error:
        translate(sql, {}, {"events"})
    assert error.value.line == line


def test_ctes_and_earlier_tables_of_the_step_are_its_own() -> None:
    sql = (
        "CREATE TEMP TABLE big AS SELECT * FROM events WHERE amount > 1;\n"
        "WITH b AS (SELECT * FROM big) SELECT * FROM b"
    )
    query = translate(sql, {}, {"events"})
    assert [s.creates for s in query.statements] == ["big", None]
    with pytest.raises(SqlError, match="last statement must be a query"):
        translate("CREATE TABLE t AS SELECT 1 AS a", {}, set())


def test_engine_setting_takes_a_name_or_a_mapping() -> None:
    assert EngineSpec.parse("duckdb") == EngineSpec("duckdb")
    assert EngineSpec.parse({"name": "ray", "address": "127.0.0.1:6379"}) == EngineSpec(
        "ray", "127.0.0.1:6379"
    )
    assert EngineSpec.parse({"name": "daft", "threads": 2}).threads == 2
    for bad, message in [
        ({"name": "duckdb", "address": "x"}, "for name: ray only"),
        ({"name": "ray", "threads": 2}, "threads is for duckdb and daft"),
        ({"address": "x"}, "needs name"),
        ({"name": "ray", "adress": "x"}, "unknown key"),
        (3, "must be an engine name or a mapping"),
    ]:
        with pytest.raises(ValueError, match=message):
            EngineSpec.parse(bad)
    with pytest.raises(ConfigError, match="available: duckdb, daft, ray"):
        get_engine("spark")


def test_project_reads_the_mapping_form_and_reports_a_bad_one(project_with: ProjectFactory) -> None:
    project = project_with(settings="engine: {name: ray, address: '127.0.0.1:6379'}\n")
    assert project.settings.engine == EngineSpec("ray", "127.0.0.1:6379")
    settings = project.root / "calve.yaml"
    settings.write_text("engine: duckdb\n")
    assert Project(project.root).settings.engine == EngineSpec("duckdb")
    settings.write_text("engine: {name: ray, port: 1}\n")
    with pytest.raises(ProjectError, match=r"calve.yaml:1: engine: unknown key\(s\) port"):
        Project(project.root)


WORKFLOW = """\
id: w
steps:
  - id: clean
    inputs:
      events: {table: db.events}
    sql: |
      SELECT id, name
      FROM events
      WHERE id = ANY([1, 2])
    output: {table: db.clean, mode: append}
  - id: files
    inputs:
      clean: {table: db.clean}
    sql_file: files.sql
    output: {table: db.files, mode: append}
"""


@pytest.mark.parametrize("engine", ["daft", "{name: ray, address: '127.0.0.1:1'}"])
def test_validate_names_daft_incompatibilities_with_file_and_line(
    project_with: ProjectFactory, engine: str
) -> None:
    project = project_with(settings=f"engine: {engine}\n", w=WORKFLOW)
    (project.root / "workflows" / "files.sql").write_text(
        "-- totals and a grand total\nSELECT id, count(*) AS n FROM clean\nGROUP BY CUBE (id)\n"
    )
    with pytest.raises(WorkflowError) as error:
        project.workflows()
    problems = error.value.problems
    assert any(
        p.startswith("workflows/w.yaml:9: step 'clean': ANY / ALL is not supported by Daft") for p in problems
    ), problems
    assert any(
        p.startswith("workflows/files.sql:3: step 'files': CUBE is not supported") for p in problems
    ), problems
    assert len(problems) == 2
    # the same files are fine for DuckDB
    (project.root / "calve.yaml").write_text("engine: duckdb\n")
    assert set(Project(project.root).workflows()) == {"w"}


@pytest.mark.parametrize("example", ["append_merge", "filter_join", "range_overwrite", "playback"])
def test_the_examples_need_no_change_for_daft(example: str) -> None:
    root = Path(__file__).parents[2] / "examples" / example
    project = Project(root)
    for workflow in project.workflows().values():
        for step in workflow.steps:
            if step.sql:
                inputs = {i.alias for i in step.inputs}
                assert incompatibilities(step.sql, inputs) == (), (example, step.id)
                params = {name: 1 for name in ("min_amount", "range_day_min", "range_day_max")}
                params |= {"before_window": dt.date(2024, 1, 1), "logical_date": dt.date(2024, 1, 2)}
                translate(step.sql, params, inputs)


def test_validate_checks_the_checks_sql_too(project_with: ProjectFactory) -> None:
    workflow = WORKFLOW.replace(
        "    output: {table: db.files, mode: append}\n",
        "    output: {table: db.files, mode: append}\n"
        "    checks:\n"
        "      - {name: no_pivot, sql: 'SELECT * FROM output, LATERAL (SELECT 1 AS x)'}\n",
    ).replace("WHERE id = ANY([1, 2])", "WHERE id IN (1, 2)")
    project = project_with(settings="engine: daft\n", w=workflow)
    (project.root / "workflows" / "files.sql").write_text("SELECT * FROM clean\n")
    with pytest.raises(WorkflowError) as error:
        project.workflows()
    assert error.value.problems == [
        "workflows/w.yaml: step 'files', check 'no_pivot': LATERAL is not supported by Daft; write it as "
        "a join; Daft's SQL (engine: daft / ray) differs here from DuckDB's; see 'SQL differences' in "
        "docs/engines.md"
    ]


def test_a_missing_extra_is_shown_with_its_install_line_by_calve_run(project_with: ProjectFactory) -> None:
    import importlib.util

    from click.testing import CliRunner

    from calve.cli.app import cli

    if importlib.util.find_spec("daft") is not None:
        pytest.skip("daft is installed here")
    step = """\
        id: w
        steps:
          - id: s
            inputs:
              events: {table: db.events}
            sql: SELECT id FROM events
            output: {table: db.out, mode: append}
        """
    project = project_with(settings="engine: daft\n", w=step)
    import pyarrow as pa

    project.catalog.create_namespace("db")
    project.catalog.create_table("db.events", schema=pa.schema([("id", pa.int64())])).append(
        pa.table({"id": [1]})
    )
    result = CliRunner().invoke(cli, ["--project", str(project.root), "run", "w"])
    assert "pip install 'calve[ray]'" in result.output, result.output
