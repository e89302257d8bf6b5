"""Orphan files: a run SIGKILLed after its data files were written and before its commit leaves them;
`calve orphans` finds exactly those (no file a snapshot lists, of the table or of its ICDC tables),
keeps the young ones, deletes the old ones, and the table still reads whole afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calve.errors import CalveError
from calve.write.orphans import find_orphan_files, remove_orphan_files
from tests.shop import CLEAN_EVENTS, Shop, create_shop, example_project, recompute, rows

ROOT = Path(__file__).parents[2]
WORKER = ROOT / "tests" / "workflow_worker.py"


def _run(root: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CALVE_CRASH_AT", "CALVE_HOME")}
    env["PYTHONPATH"] = str(ROOT)
    if crash_at:
        env["CALVE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, str(WORKER), str(root), "clean_events"], env=env, capture_output=True, text=True
    )


def _listed_files_exist(table: object) -> bool:
    for snapshot in table.snapshots():  # type: ignore[attr-defined]
        for manifest in snapshot.manifests(table.io):  # type: ignore[attr-defined]
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):  # type: ignore[attr-defined]
                if not Path(entry.data_file.file_path.removeprefix("file://")).exists():
                    return False
    return True


def test_a_killed_commit_leaves_orphans_that_are_found_and_deleted(tmp_path: Path) -> None:
    project = example_project("append_merge", tmp_path)
    events, _ = create_shop(project.catalog)
    shop = Shop()
    events.append(shop.round()[0])
    assert _run(project.root).returncode == 0
    target = project.catalog.load_table("shop.events_clean")
    assert find_orphan_files(project.catalog, "shop.events_clean", older_than_s=0).files == ()

    events.append(shop.round()[0])
    killed = _run(project.root, crash_at="consumer.during_commit")  # files written, commit not made
    assert killed.returncode == -9, killed.stderr[-2000:]
    young = find_orphan_files(project.catalog, "shop.events_clean")  # default: older than 3 days
    assert young.files == () and young.young > 0
    found = find_orphan_files(project.catalog, "shop.events_clean", older_than_s=0)
    assert len(found.files) == young.young and found.bytes > 0
    # the source's files are listed by its snapshots and by the ICDC table: none is an orphan
    assert find_orphan_files(project.catalog, "shop.events", older_than_s=0).files == ()

    later = time.time() + 4 * 86400  # as if run four days later: the files are old enough
    removed = remove_orphan_files(project.catalog, "shop.events_clean", now=later)
    assert removed.deleted and removed.files == found.files
    assert not any(Path(path).exists() for path in found.files)
    target = project.catalog.load_table("shop.events_clean")
    assert _listed_files_exist(target)

    assert _run(project.root).returncode == 0  # the rerun commits the changes exactly once
    target = project.catalog.load_table("shop.events_clean").scan().to_arrow()
    assert rows(target, ["event_id"]) == rows(
        recompute(CLEAN_EVENTS, events=events.scan().to_arrow()), ["event_id"]
    )
    assert find_orphan_files(project.catalog, "shop.events_clean", older_than_s=0).files == ()


def test_calve_orphans_lists_then_deletes(tmp_path: Path) -> None:
    project = example_project("append_merge", tmp_path)
    events, _ = create_shop(project.catalog)
    shop = Shop()
    events.append(shop.round()[0])
    assert _run(project.root).returncode == 0
    events.append(shop.round()[0])
    assert _run(project.root, crash_at="consumer.during_commit").returncode == -9
    env = {k: v for k, v in os.environ.items() if k not in ("CALVE_HOME", "CALVE_PROJECT")}
    calve = [sys.executable, "-m", "calve", "--project", str(project.root), "orphans", "shop.events_clean"]

    listed = subprocess.run([*calve, "--older-than", "0s", "--json"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["files"] and report["deleted"] is False
    assert all(Path(path).exists() for path in report["files"])

    kept = subprocess.run([*calve, "--delete", "--json"], env=env, capture_output=True, text=True)
    assert json.loads(kept.stdout)["files"] == []  # younger than the default 3d: kept
    assert all(Path(path).exists() for path in report["files"])

    refused = subprocess.run(
        [*calve, "--older-than", "0s", "--delete"], env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "--force" in refused.stderr + refused.stdout
    assert all(Path(path).exists() for path in report["files"])
    deleted = subprocess.run(
        [*calve, "--older-than", "0s", "--delete", "--force"], env=env, capture_output=True, text=True
    )
    assert deleted.returncode == 0, deleted.stderr
    assert f"{len(report['files'])} orphan file(s) deleted" in deleted.stdout
    assert not any(Path(path).exists() for path in report["files"])


def test_object_store_tables_are_refused_with_the_way_out(tmp_path: Path) -> None:
    project = example_project("append_merge", tmp_path)
    events, _ = create_shop(project.catalog)
    with events.transaction() as tx:
        tx.set_properties({"write.data.path": "s3://bucket/events/data"})
    with pytest.raises(CalveError, match="local file systems only"):
        find_orphan_files(project.catalog, "shop.events")


def test_metadata_in_the_data_folder_is_never_an_orphan(tmp_path: Path) -> None:
    """A table whose `write.data.path` is its own location: its metadata JSON, manifest lists and
    manifests share the folder with the data, and none of them is ever a candidate."""
    project = example_project("append_merge", tmp_path)
    events, _ = create_shop(project.catalog)
    with events.transaction() as tx:
        tx.set_properties({"write.data.path": events.location()})
    events = project.catalog.load_table("shop.events")
    events.append(Shop().round()[0])
    later = time.time() + 4 * 86400
    found = remove_orphan_files(project.catalog, "shop.events", now=later)
    assert found.files == () and found.referenced > 0
    assert project.catalog.load_table("shop.events").scan().to_arrow().num_rows > 0


def test_a_listing_that_misses_a_live_file_deletes_nothing(tmp_path: Path) -> None:
    """The fail-safe: a file the current snapshot lists but the folder's listing does not find
    (here: deleted behind calve's back) stops the command before it deletes anything."""
    project = example_project("append_merge", tmp_path)
    events, _ = create_shop(project.catalog)
    events.append(Shop().round()[0])
    live = next(iter(events.scan().plan_files())).file.file_path.removeprefix("file://")
    orphan = Path(live).with_name("not-committed.parquet")
    orphan.write_bytes(Path(live).read_bytes())
    Path(live).unlink()
    with pytest.raises(CalveError, match="nothing is deleted"):
        remove_orphan_files(project.catalog, "shop.events", now=time.time() + 4 * 86400)
    assert orphan.exists()
