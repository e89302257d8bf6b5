"""Whole calve runs on each engine: the playback pipeline's stage-1 merge and stage-2 filter-join,
with their reads, file writes and commits (benchmarks/engines.py times the SQL alone).

    .venv-ray/bin/python benchmarks/engine_runs.py --rows 1000000 10000000

For each size, each engine runs in a process of its own (Daft sets one runner per process), on a
fresh embedded warehouse: `--days` days of playback events (3% arrive late, up to weeks), all but the
last day ingested, then

- the **initial** run: `playback_calve` over everything (stage 1 merges every event into an empty
  table, stage 2 aggregates every day);
- the last day ingested (its late events touch earlier days), then the **incremental** run: stage 1
  merges one day's events, rewriting only the files of the days they touch; stage 2 re-aggregates
  only the changed (day, account) groups.

Reported per run: wall time, CPU of the driver, of the Daft worker processes and of the rest of the
Ray cluster (raylets with the object store, spill workers, GCS, Daft's scheduler), and peak memory of
the driver and of each Daft worker; with each step's `read_by`/`written_by` (workers or driver). Every
engine must end with the same tables (rows and a checksum, checked here). Results:
benchmarks/results/engine_runs.json, summed up in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))

from benchmarks.engines import (
    GIB,
    RAY_SETUPS,
    _cpu_used,
    _process_stats,
    run_guarded,
    start_cluster,
    stop_cluster,
)

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _reset_peak() -> None:
    """Start the driver's peak-memory count afresh (Linux), so each run's peak is its own."""
    from calve.observe.memory import reset_peak_rss

    reset_peak_rss()


def _peak_rss() -> int:
    from calve.observe.memory import peak_rss_bytes

    return peak_rss_bytes(since_reset=True) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(
    engine_name: str, address: str | None, rows: int, days: int, cluster_pid: int | None
) -> dict[str, Any]:
    import duckdb
    import pyarrow as pa

    from calve.catalog import embedded_catalog
    from calve.engines import EngineSpec, get_engine
    from calve.playback.data import PlaybackConfig, PlaybackGenerator
    from calve.playback.demo import SOURCE, TABLES, playback_workflows, reset_tables
    from calve.state import RunStatus, StateStore
    from calve.workflows.runner import Runner

    engine = get_engine(EngineSpec(engine_name, address))
    home = Path(tempfile.mkdtemp(prefix=f"calve-bench-{engine_name}-"))
    catalog = embedded_catalog(home)
    reset_tables(catalog)
    workflow = playback_workflows()["calve"]
    runner = Runner(catalog, StateStore(home / "state.db"), engine)
    generator = PlaybackGenerator(PlaybackConfig(days=days, events_per_day=rows // days, late_fraction=0.03))
    source = catalog.load_table(SOURCE)
    for index in range(days - 1):
        source.append(generator.ingest(index))
    if engine_name != "duckdb":  # warm-up: the workers up before the first timed run
        engine.run("SELECT count(*) AS n FROM t", {"t": pa.table({"a": [1]})}, {})
    runs: dict[str, Any] = {}
    for label in ("initial", "incremental"):
        if label == "incremental":
            source.append(generator.ingest(days - 1))
        _reset_peak()
        before = _process_stats(cluster_pid)
        cpu, wall = time.process_time(), time.perf_counter()
        result = runner.run(workflow, {}, logical_date=generator.day(days - 1), trigger="bench")
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        after = _process_stats(cluster_pid)
        if result is None or result.status is RunStatus.FAILED:
            raise SystemExit(f"{engine_name} {label}: {result.run.error if result else 'no run'}")
        runs[label] = {
            "wall_s": round(wall, 3),
            "driver_cpu_s": round(cpu, 3),
            "workers_cpu_s": round(_cpu_used(before, after, daft=True), 3),
            "rest_of_ray_cpu_s": round(_cpu_used(before, after, daft=False), 3),
            "peak_driver_mib": _peak_rss() >> 20,
            "steps": {
                step.step_id: {
                    "rows_read": step.metrics.rows_read if step.metrics else None,
                    "rows_written": step.metrics.rows_written if step.metrics else None,
                    "files_removed": step.metrics.files_removed if step.metrics else None,
                    "read_by": (step.metrics.read_by if step.metrics else None) or "driver",
                    "written_by": (step.metrics.written_by if step.metrics else None) or "driver",
                    "wall_s": round((step.finished_at or 0) - (step.started_at or 0), 3),
                }
                for step in result.steps
            },
        }
    checks = {}
    for stage, identifier in TABLES["calve"].items():
        con = duckdb.connect()
        con.register("t", catalog.load_table(identifier).scan().to_arrow())
        count, checksum = con.sql("SELECT count(*), sum(hash(t)) % 1000000007 FROM t").fetchall()[0]
        checks[stage] = [count, int(checksum or 0)]
        con.close()
    workers = {pid: peak for pid, (_, peak, daft) in _process_stats(cluster_pid).items() if daft}
    shutil.rmtree(home, ignore_errors=True)  # the warehouse: a few GiB at 50M rows
    return {
        "engine": engine_name,
        "rows": rows,
        "runs": runs,
        "tables": checks,
        "peak_worker_mib": [peak >> 20 for peak in workers.values()],
    }


def run_one(
    engine: str, address: str | None, rows: int, days: int, cluster_pid: int | None
) -> dict[str, Any]:
    """One engine's measure in a child process, guarded as benchmarks/engines.py guards it: killed
    and reported as failed past 18 GiB of memory (driver and Ray), under 1 GiB left on the machine,
    under 20 GiB of free disk where Ray spills, or after an hour."""
    args = [sys.executable, __file__, "--one", engine, "--rows", str(rows), "--days", str(days)]
    if address:
        args += ["--address", address, "--cluster-pid", str(cluster_pid)]
    guarded = run_guarded(args, cluster_pid, cap=18 * GIB, timeout=3600, disk_floor=20 * GIB)
    return guarded.result({"engine": engine, "rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--days", type=int, default=10, help="days of events (the last is the increment)")
    parser.add_argument("--engines", nargs="*", default=["duckdb", "daft", "ray1", "ray2"])
    parser.add_argument("--one")
    parser.add_argument("--address")
    parser.add_argument("--cluster-pid", type=int)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.address, args.rows[0], args.days, args.cluster_pid)))
        return
    results = []
    for rows in args.rows:
        for engine in args.engines:
            if engine.startswith("ray"):
                cluster, address = start_cluster(*RAY_SETUPS[engine])
                try:
                    result = run_one("ray", address, rows, args.days, cluster.pid)
                finally:
                    stop_cluster(cluster)
                result["engine"] = engine
            else:
                result = run_one(engine, None, rows, args.days, None)
            results.append(result)
            print(json.dumps(result), flush=True)
    for rows in args.rows:
        tables = {json.dumps(r["tables"]) for r in results if r["rows"] == rows and "tables" in r}
        if len(tables) > 1:
            raise SystemExit(f"{rows} rows: the engines' tables differ: {tables}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "engine_runs.json"  # one entry per engine and size: earlier sizes are kept
    earlier = json.loads(path.read_text()) if path.exists() else []
    fresh = {(r["engine"], r["rows"]) for r in results}
    kept = [r for r in earlier if (r.get("engine"), r.get("rows")) not in fresh]
    path.write_text(json.dumps([*kept, *results], indent=2) + "\n")


if __name__ == "__main__":
    main()
