"""DuckDB in process vs Daft local vs Daft on Ray (1 and 2 worker nodes): the playback pipeline's SQL.

    .venv-ray/bin/python benchmarks/engines.py --rows 1000000 10000000

For each size, the playback events are generated once (benchmarks/results/events_<rows>.parquet);
then each engine runs in a process of its own (Daft sets one runner per process) and times the
pipeline's stage-1 SQL (clean and enrich every event: the rows a merge writes) and stage-2 SQL (the
aggregate per account and day) on them, each after one warm-up query: wall time, CPU time of the
driver and of the Ray workers, and the peak memory of each process (driver and each Daft worker).
What it leaves out, the same for every engine: pyiceberg's planning and the commit, which run on the
driver whatever the engine (docs/engines.md). Results: benchmarks/results/engines.json, summed up
in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SQL = ROOT / "src" / "calve" / "playback" / "pipeline" / "workflows"
CLUSTER = ROOT / "tests" / "ray_cluster.py"
EVENTS_PER_DAY = 1_000_000


def events_file(rows: int) -> Path:
    """The playback events of `rows` rows (about: whole days), generated once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from calve.playback.data import PlaybackConfig, PlaybackGenerator

    path = RESULTS / f"events_{rows}.parquet"
    if path.exists():
        return path
    RESULTS.mkdir(parents=True, exist_ok=True)
    per_day = min(rows, EVENTS_PER_DAY)
    days = max(1, rows // per_day)
    generator = PlaybackGenerator(PlaybackConfig(days=days, events_per_day=per_day, late_fraction=0.03))
    with pq.ParquetWriter(path, generator.ingest(0).schema) as writer:
        for day in range(days):
            writer.write_table(generator.ingest(day))
    del pa
    return path


def _worker_stats(cluster_pid: int | None) -> dict[int, tuple[float, int]]:
    """CPU seconds and peak RSS (bytes) of the Daft worker processes of the cluster."""
    if cluster_pid is None:
        return {}
    from tests.ray_kill_worker import daft_workers

    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for pid in daft_workers(cluster_pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / ticks
            peak = next(
                int(line.split()[1]) * 1024
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmHWM")
            )
        except (OSError, StopIteration):
            continue
        stats[pid] = (cpu, peak)
    return stats


def measure(engine_name: str, address: str | None, path: Path, cluster_pid: int | None) -> dict[str, Any]:
    """Run both stages on one engine, in this process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from calve.engines import EngineSpec, get_engine

    engine = get_engine(EngineSpec(engine_name, address))
    events = pq.read_table(path)
    columns = ["event_id", "account_id", "title_id", "device", "event_day", "event_time", "view_seconds"]
    events = events.select(columns)
    engine.run("SELECT count(*) AS n FROM t", {"t": pa.table({"a": [1, 2]})}, {})  # warm-up: workers up
    stages: dict[str, Any] = {}
    inputs = {"events": events}
    for stage, alias in (("stage1", "events"), ("stage2", "daily")):
        sql = (SQL / f"{stage}.sql").read_text()
        before = _worker_stats(cluster_pid)
        cpu, wall = time.process_time(), time.perf_counter()
        out = engine.run(sql, {alias: inputs[alias]}, {})
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        after = _worker_stats(cluster_pid)
        assert out is not None
        workers_cpu = sum(c for c, _ in after.values()) - sum(c for c, _ in before.values())
        stages[stage] = {
            "rows_in": inputs[alias].num_rows,
            "rows_out": out.num_rows,
            "wall_s": round(wall, 3),
            "driver_cpu_s": round(cpu, 3),
            "workers_cpu_s": round(workers_cpu, 3),
        }
        inputs["daily"] = out
    peak_driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    workers = _worker_stats(cluster_pid)
    return {
        "engine": engine_name,
        "stages": stages,
        "peak_driver_mib": peak_driver >> 20,
        "peak_worker_mib": [peak >> 20 for _, peak in workers.values()],
    }


# the Ray setups: (worker nodes besides the head, the head's CPUs). The head runs Daft's scheduler
# actor, so it needs a CPU (a head with none deadlocks); both setups have this machine's 2 cores.
RAY_SETUPS = {"ray1": (0, 2), "ray2": (1, 1)}


def start_cluster(workers: int, head_cpus: int) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    process = subprocess.Popen(
        [
            sys.executable,
            str(CLUSTER),
            "--workers",
            str(workers),
            "--head-cpus",
            str(head_cpus),
            "--object-store-mib",
            "2048",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ADDRESS"):
        process.kill()
        raise SystemExit("the Ray cluster did not start")
    return process, line.split()[1]


def stop_cluster(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
    with contextlib.suppress(ProcessLookupError):  # a node process left in the cluster's group
        os.killpg(process.pid, signal.SIGKILL)


def run_one(engine: str, address: str | None, path: Path, cluster_pid: int | None) -> dict[str, Any]:
    args = [sys.executable, __file__, "--one", engine, "--path", str(path)]
    if address:
        args += ["--address", address, "--cluster-pid", str(cluster_pid)]
    # the driver, too, must keep 127.0.0.1 as is (else Ray resolves it to the outward address)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "DAFT_PROGRESS_BAR": "0"}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        done = subprocess.run(args, capture_output=True, text=True, env=env, check=False, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"engine": engine, "error": "timed out after 30 minutes"}
    if done.returncode != 0:
        return {"engine": engine, "error": done.stderr[-1500:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--engines", nargs="*", default=["duckdb", "daft", "ray1", "ray2"])
    parser.add_argument("--one")
    parser.add_argument("--path")
    parser.add_argument("--address")
    parser.add_argument("--cluster-pid", type=int)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.address, Path(args.path), args.cluster_pid)))
        return
    results = []
    for rows in args.rows:
        path = events_file(rows)
        for engine in args.engines:
            if engine.startswith("ray"):
                cluster, address = start_cluster(*RAY_SETUPS[engine])
                try:
                    result = run_one("ray", address, path, cluster.pid)
                finally:
                    stop_cluster(cluster)
            else:
                result = run_one(engine, None, path, None)
            result = {"rows": rows, "setup": engine, **result}
            print(json.dumps(result), flush=True)
            results.append(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engines.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
