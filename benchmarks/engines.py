"""DuckDB in process vs Daft local vs Daft on Ray (1 and 2 worker nodes): the playback pipeline's SQL.

    PYTHONPATH=. .venv-ray/bin/python benchmarks/engines.py --rows 1000000 10000000 50000000

For each size, the playback events are generated once (benchmarks/results/events_<rows>.parquet);
then each engine runs in a process of its own (Daft sets one runner per process) and times the
pipeline's stage-1 SQL (clean and enrich every event: the rows a merge writes) and stage-2 SQL (the
aggregate per account and day) on them, each after one warm-up query: wall time, CPU time of the
driver, of the Daft workers and of the rest of the Ray cluster (raylets, object store spilling, GCS,
Daft's scheduler actor), and the peak memory of each process (driver and each Daft worker).
What it leaves out, the same for every engine: pyiceberg's planning and the commit, which run on the
driver whatever the engine (docs/engines.md). Results: benchmarks/results/engines.json (merged by
size, setup and object store size, so a run of one size keeps the others' entries), summed up in
benchmarks/README.md.

Memory guard: while an engine runs, the parent samples the private memory (RssAnon) of the driver
and of every process of the Ray cluster, plus the object store's shared memory once, every 0.5 s;
past --memory-cap-gib (default 18) or with less than 1 GiB left on the machine it kills the engine
and records it as failed (out of memory, with the peak it reached and the stage it was in) instead
of letting the machine's OOM killer pick a victim. Likewise past --disk-floor-gib (20) free on
/tmp, where Ray spills its object store (Ray itself only stops at 95% of the disk).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


def _descendants(root: int) -> list[int]:
    """The processes below `root` (from /proc), without it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _process_stats(cluster_pid: int | None) -> dict[int, tuple[float, int, bool]]:
    """CPU seconds, peak RSS (bytes) and is-a-Daft-worker of every process of the Ray cluster.

    Every process counts for CPU (raylet with the object store, GCS, Daft's scheduler actor and
    its workers): the object store's copies and the shuffle between nodes run in the raylets."""
    if cluster_pid is None:
        return {}
    from tests.ray_kill_worker import daft_workers

    ticks = os.sysconf("SC_CLK_TCK")
    daft = set(daft_workers(cluster_pid))
    stats = {}
    for pid in _descendants(cluster_pid):
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
        stats[pid] = (cpu, peak, pid in daft)
    return stats


def _worker_stats(cluster_pid: int | None) -> dict[int, tuple[float, int]]:
    """CPU seconds and peak RSS (bytes) of the Daft worker processes of the cluster (as before
    _process_stats: benchmarks/engine_runs.py on main uses it)."""
    return {pid: (cpu, peak) for pid, (cpu, peak, daft) in _process_stats(cluster_pid).items() if daft}


def _cpu_used(before: dict[int, Any], after: dict[int, Any], daft: bool) -> float:
    """CPU seconds the cluster's (Daft worker or other) processes used in between; one that ended
    in between is left out, one that started counts whole."""
    start = {pid: cpu for pid, (cpu, _, _) in before.items()}
    return sum(cpu - start.get(pid, 0.0) for pid, (cpu, _, d) in after.items() if d == daft)


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
        print("STAGE", stage, file=sys.stderr, flush=True)  # for the memory guard's report
        before = _process_stats(cluster_pid)
        cpu, wall = time.process_time(), time.perf_counter()
        out = engine.run(sql, {alias: inputs[alias]}, {})
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        after = _process_stats(cluster_pid)
        assert out is not None
        stages[stage] = {
            "rows_in": inputs[alias].num_rows,
            "rows_out": out.num_rows,
            "wall_s": round(wall, 3),
            "driver_cpu_s": round(cpu, 3),
            "workers_cpu_s": round(_cpu_used(before, after, True), 3),
            "ray_other_cpu_s": round(_cpu_used(before, after, False), 3),
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
SETUPS = ["duckdb", "daft", *RAY_SETUPS]


def start_cluster(workers: int, head_cpus: int, store_mib: int = 2048) -> tuple[subprocess.Popen[str], str]:
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
            str(store_mib),
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


GIB = 1 << 30
SPILL = Path(tempfile.gettempdir())  # where Ray spills its object store (/tmp/ray)


def _memory(pids: list[int]) -> int:
    """Private memory of `pids` plus their largest shared mapping (the object store, once)."""
    private = shared = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        rss = {line.split(":")[0]: int(line.split()[1]) << 10 for line in status if line.startswith("Rss")}
        private += rss.get("RssAnon", 0)
        shared = max(shared, rss.get("RssShmem", 0))
    return private + shared


def _available() -> int:
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable"))
    return int(line.split()[1]) * 1024


@dataclass(frozen=True)
class Guarded:
    """What a guarded child run left: its output, and why it was killed (empty if it was not)."""

    stdout: str
    stderr: str
    returncode: int
    killed: str
    peak: int  # bytes: the largest memory of the child and the Ray cluster seen
    disk_written: int  # bytes: the most free disk lost on SPILL meanwhile

    def result(self, extra: dict[str, Any]) -> dict[str, Any]:
        """The child's JSON result (its last line), or an `error` entry; with the guard's figures."""
        guard = {"peak_guarded_mib": self.peak >> 20, "disk_written_mib": self.disk_written >> 20}
        stages = [line.split()[1] for line in self.stderr.splitlines() if line.startswith("STAGE ")]
        stage = stages[-1] if stages else "setup"
        if self.killed:
            return {**extra, "error": f"{self.killed}, in {stage}", **guard}
        if self.returncode != 0:
            return {**extra, "error": f"exit {self.returncode} in {stage}: {self.stderr[-1500:]}", **guard}
        return {**json.loads(self.stdout.strip().splitlines()[-1]), **guard}


def run_guarded(
    args: list[str], cluster_pid: int | None, cap: int, timeout: float, disk_floor: int
) -> Guarded:
    """Run a measuring child process (`args`, with the Ray driver's environment), and kill it when
    it and the cluster pass `cap` bytes of memory, leave under 1 GiB on the machine or under
    `disk_floor` bytes free where Ray spills, or run past `timeout` seconds."""
    # the driver, too, must keep 127.0.0.1 as is (else Ray resolves it to the outward address)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "DAFT_PROGRESS_BAR": "0"}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(args, stdout=out, stderr=err, text=True, env=env, start_new_session=True)
        started, peak, killed = time.monotonic(), 0, ""
        disk_before = disk_min = shutil.disk_usage(SPILL).free
        while child.poll() is None:
            pids = [child.pid, *_descendants(child.pid)]
            if cluster_pid is not None:
                pids += _descendants(cluster_pid)
            used, left, disk = _memory(pids), _available(), shutil.disk_usage(SPILL).free
            peak, disk_min = max(peak, used), min(disk_min, disk)
            if used > cap or left < GIB:
                killed = (
                    f"out of memory: killed at {used / GIB:.1f} GiB (driver and Ray processes, cap "
                    f"{cap / GIB:.1f} GiB), {left / GIB:.1f} GiB left on the machine"
                )
            elif disk < disk_floor:
                killed = (
                    f"out of disk: killed with {disk / GIB:.1f} GiB left on {SPILL} (floor "
                    f"{disk_floor / GIB:.0f} GiB), {(disk_before - disk) / GIB:.1f} GiB written since "
                    "the start (Ray spilling its object store)"
                )
            elif time.monotonic() - started > timeout:
                killed = f"timed out after {timeout:.0f} s"
            if killed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                break
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return Guarded(stdout, stderr, child.returncode, killed, peak, max(0, disk_before - disk_min))


def run_one(
    engine: str,
    address: str | None,
    path: Path,
    cluster_pid: int | None,
    cap: int,
    timeout: float,
    disk_floor: int,
) -> dict[str, Any]:
    args = [sys.executable, __file__, "--one", engine, "--path", str(path)]
    if address:
        args += ["--address", address, "--cluster-pid", str(cluster_pid)]
    return run_guarded(args, cluster_pid, cap, timeout, disk_floor).result({"engine": engine})


def _run_info() -> dict[str, Any]:
    from importlib.metadata import version

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    commit, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "benchmarks/engines.py")
    return {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit + ("+uncommitted engines.py" if dirty else ""),
        "versions": {p: version(p) for p in ("daft", "ray", "pyarrow", "duckdb")},
    }


def _key(result: dict[str, Any]) -> tuple[Any, ...]:
    """engines.json holds one entry per size, setup and object store size."""
    return result["rows"], result["setup"], result.get("object_store_mib")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--engines", nargs="*", default=["duckdb", "daft", "ray1", "ray2"])
    parser.add_argument("--one")
    parser.add_argument("--path")
    parser.add_argument("--address")
    parser.add_argument("--cluster-pid", type=int)
    parser.add_argument("--memory-cap-gib", type=float, default=18.0)
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--disk-floor-gib", type=float, default=20.0)
    parser.add_argument("--object-store-mib", type=int, default=2048, help="per Ray node")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.address, Path(args.path), args.cluster_pid)))
        return
    cap, floor, info = int(args.memory_cap_gib * GIB), int(args.disk_floor_gib * GIB), _run_info()
    file = RESULTS / "engines.json"
    results = json.loads(file.read_text()) if file.exists() else []
    for rows in args.rows:
        path = events_file(rows)
        for engine in args.engines:
            if engine.startswith("ray"):
                cluster, address = start_cluster(*RAY_SETUPS[engine], args.object_store_mib)
                try:
                    result = run_one("ray", address, path, cluster.pid, cap, args.timeout_s, floor)
                finally:
                    stop_cluster(cluster)
            else:
                result = run_one(engine, None, path, None, cap, args.timeout_s, floor)
            result = {"rows": rows, "setup": engine, **result, **info}
            if engine in RAY_SETUPS:
                result["object_store_mib"] = args.object_store_mib
            print(json.dumps(result), flush=True)
            results = [r for r in results if _key(r) != _key(result)] + [result]
            results.sort(key=lambda r: (r["rows"], SETUPS.index(r["setup"]) if r["setup"] in SETUPS else 9))
            file.write_text(json.dumps(results, indent=2))  # after each engine: a later crash keeps it


if __name__ == "__main__":
    main()
