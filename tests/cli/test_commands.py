"""The `calve` command line, run as a user runs it: a real process on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo

from tests.conftest import EVENTS, events


def calve(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CALVE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "calve", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def history(catalog: SqlCatalog) -> dict[str, int]:
    table = catalog.create_table("db.ev", schema=EVENTS)
    table.append(events(range(5), day=1))
    first = table.current_snapshot().snapshot_id
    table.append(events(range(5, 8), day=3))
    appended = table.current_snapshot().snapshot_id
    table.delete(EqualTo("id", 6))
    return {"first": first, "appended": appended, "last": table.current_snapshot().snapshot_id}


def test_changes_json_has_the_documented_keys(home: Path, history: dict[str, int]) -> None:
    result = calve(
        home,
        "changes",
        "db.ev",
        "--since",
        str(history["first"]),
        "--ranges",
        "day,ts",
        "--changelog",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["table"] == "db.ev"
    assert payload["from_snapshot_id_exclusive"] == history["first"]
    assert payload["to_snapshot_id_inclusive"] == history["last"]
    assert [s["operation"] for s in payload["snapshots"]] == ["append", "overwrite"]
    for key in ("snapshot_id", "added_files", "removed_files", "added_records", "removed_records"):
        assert key in payload["snapshots"][0]
    for f in payload["added_files"] + payload["removed_files"]:
        assert {"path", "record_count", "file_size_in_bytes"} <= f.keys()
    assert payload["ranges"]["day"]["min"] == "2026-01-03"
    assert payload["ranges"]["day"]["max"] == "2026-01-03"
    assert payload["ranges"]["ts"]["min"].startswith("2026-01-03T")
    assert (payload["changelog"]["inserted"], payload["changelog"]["deleted"]) == (2, 0)
    # the appended file was rewritten inside the range: only its rewrite is read
    assert payload["changelog"]["files_read"] == 1


def test_changelog_out_writes_parquet_with_change_type(
    home: Path, history: dict[str, int], tmp_path: Path
) -> None:
    out = tmp_path / "changes.parquet"
    result = calve(home, "changes", "db.ev", "--since", str(history["appended"]), "--changelog-out", str(out))
    assert result.returncode == 0, result.stderr
    rows = pq.read_table(out).to_pylist()
    assert [(r["id"], r["_change_type"]) for r in rows] == [(6, "delete")]
    assert "1 deleted" in result.stdout


def test_icdc_command_and_its_refusal_of_row_level_ranges(home: Path, history: dict[str, int]) -> None:
    ok = calve(
        home, "icdc", "db.ev", "--since", str(history["first"]), "--until", str(history["appended"]), "--json"
    )
    assert ok.returncode == 0, ok.stderr
    payload = json.loads(ok.stdout)
    assert payload["icdc_table"] == "calve_icdc.db__ev"
    assert (payload["files"], payload["records"]) == (1, 3)
    assert payload["metadata_location"].endswith(".metadata.json")

    refused = calve(home, "icdc", "db.ev", "--since", str(history["first"]))
    assert refused.returncode == 1
    assert "--appends-only" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_errors_name_the_problem_and_the_fix(home: Path, history: dict[str, int]) -> None:
    missing = calve(home, "changes", "db.nope")
    assert missing.returncode == 1
    assert "db.nope" in missing.stderr and "does not exist" in missing.stderr
    bad_id = calve(home, "changes", "db.ev", "--since", "abc")
    assert bad_id.returncode == 2
    assert "not a snapshot id" in bad_id.stderr
    unknown = calve(home, "changes", "db.ev", "--since", "42", "--json")
    assert unknown.returncode == 1
    assert "expired" in json.loads(unknown.stdout)["error"]


def test_snapshots_and_help(home: Path, history: dict[str, int]) -> None:
    listed = json.loads(calve(home, "snapshots", "db.ev", "--json").stdout)
    assert [s["snapshot_id"] for s in listed["snapshots"]] == [
        history["last"],
        history["appended"],
        history["first"],
    ]
    assert "Examples" in calve(home, "changes", "--help").stdout


def test_demo_compares_both_pipelines_and_prints_the_figures_scripts_use(home: Path) -> None:
    options = ["--days", "6", "--events-per-day", "400", "--late-fraction", "0.1", "--lookback-days", "2"]
    result = calve(home, "demo", *options, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("calve_cpu_s", "lookback_cpu_s", "cpu_ratio", "bytes_read_ratio"):
        assert report[key] > 0, key
    assert report["calve_mismatched_rows"] == 0
    assert report["events_later_than_lookback"] > 0
    assert report["accuracy"]["lookback"]["daily"] == report["events_later_than_lookback"]
    # the incremental pipeline's consumers are up to date, as `calve changes` confirms
    pending = json.loads(
        calve(home, "changes", "playback.events", "--consumer", "playback_calve-daily", "--json").stdout
    )
    assert pending["snapshots"] == []
    text = calve(home, "demo", "--days", "2", "--events-per-day", "100")
    assert text.returncode == 0 and "rows differ from a from-scratch recomputation" in text.stdout
    bad = calve(home, "demo", "--days", "0")
    assert bad.returncode == 2 and "--days" in bad.stderr


def test_compact_folds_small_files_and_changes_nothing_for_consumers(home: Path) -> None:
    from calve.capture.changes import capture_changes
    from calve.catalog import embedded_catalog

    catalog = embedded_catalog(home)
    catalog.create_namespace("db")
    table = catalog.create_table("db.small", schema=EVENTS)
    for start in range(0, 50, 10):
        table.append(events(range(start, start + 10)))
    before = table.current_snapshot()
    assert before is not None
    result = calve(home, "compact", "db.small", "--small-file-size", "1MiB", "--min-files", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["files_removed"] == 5 and report["files_written"] == 1 and report["rows"] == 50
    table.refresh()
    assert len(list(table.scan().plan_files())) == 1
    assert capture_changes(table, before.snapshot_id).is_empty  # a replace is no change
    again = calve(home, "compact", "db.small", "--small-file-size", "1MiB", "--min-files", "3")
    assert again.returncode == 0 and "nothing to compact" in again.stdout
    bad = calve(home, "compact", "db.small", "--small-file-size", "lots")
    assert bad.returncode == 2 and "--small-file-size" in bad.stderr
