"""YAML with lines: merge keys, aliases, and errors that are `file:line` messages, never tracebacks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from calve.errors import ConfigError, WorkflowError
from calve.workflows.loader import load_workflow
from calve.workflows.yamlfile import parse_yaml

ROOT = Path("/project")
FILE = ROOT / "workflows" / "w.yaml"


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_yaml(textwrap.dedent(text), FILE, ROOT)


def test_merge_keys_own_keys_win_and_the_first_merged_mapping_wins() -> None:
    doc = parse(
        """\
        base: &base
          mode: merge
          keys: [id]
        other: &other
          mode: append
          table: db.other
        out:
          <<: [*base, *other]
          table: db.out
        """
    )
    assert doc.value["out"] == {"mode": "merge", "keys": ["id"], "table": "db.out"}


def test_a_merged_key_is_at_the_line_of_its_merge_and_its_text_where_it_is_written() -> None:
    doc = parse(
        """\
        first: &base
          mode: merge
          sql: |
            SELECT 1
        second:
          <<: *base
          id: two
        """
    )
    assert doc.value["second"] == {"mode": "merge", "sql": "SELECT 1\n", "id": "two"}
    assert doc.line(("second", "mode")) == 6  # the `<<:` line, where `second` takes it
    assert doc.line(("second", "id")) == 7
    assert doc.text_lines[("second", "sql")] == 4  # SQL error lines count from the real text


def test_nested_merges_and_aliases() -> None:
    doc = parse(
        """\
        a: &a {x: 1, y: 1}
        b: &b {<<: *a, y: 2}
        c: {<<: *b, z: 3}
        d: *b
        """
    )
    assert doc.value["c"] == {"x": 1, "y": 2, "z": 3}
    assert doc.value["d"] == {"x": 1, "y": 2}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: !!python/object:os.system x\n", "w.yaml:1: could not determine a constructor"),
        ("a: 1\nb: !!int abc\n", "w.yaml:2: 'abc' cannot be read as int"),
        ("a: 1\nday: 2026-02-30\n", "w.yaml:2: '2026-02-30' cannot be read as timestamp"),
        ("a: &a [*a]\n", "w.yaml:1: an alias refers to a node that contains it"),
        ("a: 1\nb: {<<: 3}\n", "w.yaml:2: a merge key (<<) takes a mapping"),
        ("a: &x {b: 1}\nc:\n  <<: [*x, [1]]\n", "w.yaml:3: a merge key (<<) takes a mapping"),
        ("a: [1,\n", "w.yaml:2: not valid YAML"),
        ("a: *nowhere\n", "w.yaml:1: not valid YAML: found undefined alias"),
    ],
)
def test_construction_errors_are_file_line_errors(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, FILE, ROOT)
    assert str(caught.value).startswith(f"workflows/{expected}")


def test_merge_keys_in_a_workflow_file(tmp_path: Path) -> None:
    path = tmp_path / "merged.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            id: merged
            steps:
              - id: one
                inputs:
                  events: &events {table: db.events, read: table, columns: [id, day]}
                sql: SELECT * FROM events
                output: &out {table: db.one, mode: overwrite, partition_by: [day]}
              - id: two
                inputs:
                  events: {<<: *events, columns: [id]}
                sql: SELECT * FROM events
                output:
                  <<: *out
                  table: db.two
                  mode: append
            """
        )
    )
    workflow = load_workflow(path)
    two = workflow.step("two")
    assert two.inputs[0].table == "db.events" and two.inputs[0].columns == ("id",)
    assert two.output is not None and two.output.table == "db.two" and two.output.partition_by == ("day",)
    assert two.output.mode.value == "append"


def test_a_problem_in_a_merged_key_points_at_the_merge(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            id: bad
            steps:
              - id: one
                sql: SELECT 1 AS x
                output: &out {table: db.one, mode: append, keys: [x]}
              - id: two
                sql: SELECT 1 AS x
                output: {<<: *out, table: db.two}
            """
        )
    )
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path)
    problems = caught.value.problems
    assert any(p.startswith("bad.yaml:5: steps[0].output: keys and delete_column") for p in problems)
    assert any(p.startswith("bad.yaml:8: steps[1].output: keys and delete_column") for p in problems)


def test_yaml_errors_in_a_workflow_file_are_workflow_problems(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: broken\nsteps:\n  - id: one\n    sql: !!binary nope\n")
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path)
    (problem,) = caught.value.problems
    assert problem.startswith("broken.yaml:4: ")
