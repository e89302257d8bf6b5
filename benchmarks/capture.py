"""Change-capture benchmarks, measured side by side in one process run.

1. Planning follows the new snapshots, not the history: capture the last 10 snapshots of a table
   with 5,000 snapshots and of one with 50 (goal: time ratio at most 2).
2. Zero copy: create an ICDC table over ~1 GB of data files and over ~10 MB, same file count
   (goal: time ratio at most 1.5, 0 bytes of data written).

    python benchmarks/capture.py            # full sizes (a few minutes)
    python benchmarks/capture.py --quick    # small sizes, for a smoke run

Long histories are built the way a table with manifest merging looks (pyiceberg's own append is
O(history) per commit, far too slow for 5,000 commits): each snapshot adds one data file in its own
manifest; every 100 snapshots the earlier files are merged into one manifest of EXISTING entries, so
a manifest list holds at most ~101 manifests. All snapshots are committed in one catalog commit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import (
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    write_manifest,
    write_manifest_list,
)
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import Operation, Snapshot, Summary
from pyiceberg.table.update import AddSnapshotUpdate, AssertRefSnapshotId, SetSnapshotRefUpdate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from calve import capture_changes, create_icdc_table
from calve.catalog import embedded_catalog

MERGE_EVERY = 100


def build_history(catalog: SqlCatalog, name: str, snapshots: int) -> Table:
    """A table of `snapshots` append snapshots, one small data file each, with merged manifests."""
    table = catalog.create_table(name, schema=pa.schema([("id", pa.int64()), ("value", pa.float64())]))
    metadata = table.metadata
    io, spec, schema = table.io, metadata.spec(), metadata.schema()
    location = table.location()
    merged: list[ManifestFile] = []
    recent: list[ManifestFile] = []
    entries: list[ManifestEntry] = []  # every file so far, for the merged manifest
    updates: list[Any] = []
    parent: int | None = None
    for number in range(1, snapshots + 1):
        snapshot_id = number
        rows = pa.table({"id": pa.array([number], pa.int64()), "value": pa.array([float(number)])})
        (data_file,) = _dataframe_to_data_files(metadata, rows, io, uuid.uuid4())
        entry = ManifestEntry.from_args(
            status=ManifestEntryStatus.ADDED,
            snapshot_id=snapshot_id,
            sequence_number=number,
            file_sequence_number=number,
            data_file=data_file,
        )
        with write_manifest(
            2, spec, schema, io.new_output(f"{location}/metadata/m-{number}.avro"), snapshot_id, "null"
        ) as w:
            w.add_entry(entry)
        recent.append(w.to_manifest_file())
        entries.append(entry)
        if len(recent) > MERGE_EVERY:  # merge everything but this snapshot's manifest
            path = f"{location}/metadata/merged-{number}.avro"
            with write_manifest(2, spec, schema, io.new_output(path), snapshot_id, "null") as w:
                for old in entries[:-1]:
                    w.add_entry(
                        ManifestEntry.from_args(
                            status=ManifestEntryStatus.EXISTING,
                            snapshot_id=old.snapshot_id,
                            sequence_number=old.sequence_number,
                            file_sequence_number=old.file_sequence_number,
                            data_file=old.data_file,
                        )
                    )
            merged, recent = [w.to_manifest_file()], recent[-1:]
        manifest_list = f"{location}/metadata/snap-{number}.avro"
        with write_manifest_list(2, io.new_output(manifest_list), snapshot_id, parent, number, "null") as w:
            w.add_manifests([*recent[::-1], *merged])
        summary = Summary(
            Operation.APPEND,
            **{
                "added-data-files": "1",
                "added-records": "1",
                "total-records": str(number),
                "total-data-files": str(number),
            },
        )
        snapshot = Snapshot.model_validate(
            {
                "snapshot-id": snapshot_id,
                "parent-snapshot-id": parent,
                "sequence-number": number,
                "timestamp-ms": 1_700_000_000_000 + number,
                "manifest-list": manifest_list,
                "summary": summary,
                "schema-id": 0,
            }
        )
        updates.append(AddSnapshotUpdate(snapshot=snapshot))
        parent = snapshot_id
    updates.append(
        SetSnapshotRefUpdate(snapshot_id=parent, ref_name=MAIN_BRANCH, type=SnapshotRefType.BRANCH)
    )
    table._do_commit(tuple(updates), (AssertRefSnapshotId(snapshot_id=None, ref=MAIN_BRANCH),))
    return catalog.load_table(name)


def timed(func: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return times


def planning_benchmark(catalog: SqlCatalog, long: int, short: int, repeats: int) -> dict[str, Any]:
    print(f"building histories of {long} and {short} snapshots ...", file=sys.stderr)
    start = time.perf_counter()
    tables = {
        "long": build_history(catalog, "bench.long", long),
        "short": build_history(catalog, "bench.short", short),
    }
    print(f"  built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    results: dict[str, dict[str, list[float]]] = {k: {"capture": [], "load": []} for k in tables}
    for _ in range(repeats):  # alternate, so that machine noise hits both alike
        for key in ("long", "short"):
            table = tables[key]
            ids = [s.snapshot_id for s in table.metadata.snapshots]
            since = sorted(ids)[-11]
            results[key]["capture"] += timed(lambda t=table, s=since: capture_changes(t, since=s), 1)
            results[key]["load"] += timed(lambda n=f"bench.{key}": catalog.load_table(n), 1)
    changes = capture_changes(
        tables["long"], since=sorted(s.snapshot_id for s in tables["long"].metadata.snapshots)[-11]
    )
    assert len(changes.snapshots) == 10 and changes.added_records == 10
    capture = {k: statistics.median(v["capture"]) for k, v in results.items()}
    load = {k: statistics.median(v["load"]) for k, v in results.items()}
    return {
        "snapshots": {"long": long, "short": short},
        "capture_last_10_s": capture,
        "capture_ratio": capture["long"] / capture["short"],
        "load_table_s": load,
        "load_ratio": load["long"] / load["short"],
    }


def zero_copy_benchmark(
    catalog: SqlCatalog, home: Path, big_bytes: int, small_bytes: int, files: int, repeats: int
) -> dict[str, Any]:
    sources = {}
    for key, total in (("big", big_bytes), ("small", small_bytes)):
        print(f"writing {total / 1e6:.0f} MB of data files for {key} ...", file=sys.stderr)
        table = catalog.create_table(f"bench.{key}", schema=pa.schema([("value", pa.float64())]))
        per_file = total // files // 8  # random doubles do not compress
        for _ in range(files):
            table.append(pa.table({"value": pc.random(per_file)}))
        sources[key] = table
    data_bytes = {
        k: sum(t.file.file_size_in_bytes for t in v.scan().plan_files()) for k, v in sources.items()
    }

    def parquet_files() -> dict[str, int]:
        return {str(p): p.stat().st_size for p in home.rglob("*.parquet")}

    before = parquet_files()
    times: dict[str, list[float]] = {"big": [], "small": []}
    metadata_bytes = 0
    for _ in range(repeats):
        for key in ("big", "small"):
            table = sources[key]
            start = time.perf_counter()
            result = create_icdc_table(catalog, table, capture_changes(table), f"bench_icdc.{key}")
            times[key].append(time.perf_counter() - start)
            folder = Path(result.metadata_location.removeprefix("file://")).parent
            metadata_bytes = max(metadata_bytes, sum(p.stat().st_size for p in folder.iterdir()))
    after = parquet_files()
    written = sum(size for path, size in after.items() if before.get(path) != size)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "files": files,
        "data_bytes": data_bytes,
        "icdc_s": median,
        "time_ratio": median["big"] / median["small"],
        "data_bytes_written": written,
        "icdc_metadata_bytes": metadata_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()
    long, short, big, small = (
        (500, 50, 50_000_000, 5_000_000) if args.quick else (5000, 50, 1_000_000_000, 10_000_000)
    )
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        catalog = embedded_catalog(home)
        catalog.create_namespace("bench")
        results = {
            "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
            "planning": planning_benchmark(catalog, long, short, args.repeats),
            "zero_copy": zero_copy_benchmark(catalog, home, big, small, files=20, repeats=args.repeats),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    p, z = results["planning"], results["zero_copy"]
    ms = {k: v * 1000 for k, v in p["capture_last_10_s"].items()}
    load = {k: v * 1000 for k, v in p["load_table_s"].items()}
    icdc = {k: v * 1000 for k, v in z["icdc_s"].items()}
    print(f"machine: {results['machine']}")
    print(f"capture last 10 snapshots, {p['snapshots']['long']} vs {p['snapshots']['short']} snapshots:")
    print(f"  {ms['long']:.1f} ms vs {ms['short']:.1f} ms, ratio {p['capture_ratio']:.2f} (goal <= 2)")
    print(f"  load_table (parses the whole metadata file): {load['long']:.1f} ms vs {load['short']:.1f} ms")
    print(
        f"ICDC table over {z['data_bytes']['big'] / 1e9:.2f} GB vs {z['data_bytes']['small'] / 1e6:.1f} MB:"
    )
    print(f"  {icdc['big']:.1f} ms vs {icdc['small']:.1f} ms, ratio {z['time_ratio']:.2f} (goal <= 1.5)")
    print(f"  data bytes written: {z['data_bytes_written']} (goal 0)")
    print(f"  ICDC metadata written: {z['icdc_metadata_bytes']} bytes")


if __name__ == "__main__":
    main()
