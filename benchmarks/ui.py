"""The web UI's run list with 10,000 runs in the state store: how long the server takes per page.

    .venv/bin/python benchmarks/ui.py                     # 10,000 runs, 100 requests per page
    .venv/bin/python benchmarks/ui.py --runs 10000 --requests 200 --json

A project's state store is filled through `StateStore` (the runner's own calls: `create_run`, two
`record_step`s with metrics, the run's end) with `--runs` runs of 20 workflows, one in ten failed.
Then `calve ui` runs as a real subprocess on 127.0.0.1, and each page below is requested
`--requests` times over one keep-alive HTTP connection, after 5 warm-up requests. Reported: the
median and p95 of the time from sending the request to the last byte of the answer (the server's
time plus the loopback), and the page's size. Goal: the first page of the run list in at most
200 ms. The list is one `LIMIT 50` query (with a count of the filtered runs); it never loads every
run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from calve.project import init_project
from calve.state import RunRecord, RunStatus, StateStore, StepMetrics, StepRunRecord
from calve.state.records import InputRead

GOAL_MS = 200.0


def fill(store: StateStore, runs: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    start = time.time() - runs * 60
    for index in range(runs):
        created = start + index * 60
        failed = index % 10 == 9
        run = RunRecord(
            run_id=f"bench-{index:06d}",
            workflow=f"workflow_{index % 20:02d}",
            workflow_version="v1",
            trigger=rng.choice(["manual", "cron:0 * * * *", "interval:900s", "incremental:any:db.events"]),
            logical_date="2026-11-29",
            params={"label": "x"},
            status=RunStatus.RUNNING,
            created_at=created,
            started_at=created,
            host="bench",
            pid=1,
        )
        store.create_run(run)
        for step in ("read", "write"):
            store.record_step(
                StepRunRecord(
                    run_id=run.run_id,
                    step_id=step,
                    status=RunStatus.FAILED if failed and step == "write" else RunStatus.SUCCEEDED,
                    started_at=created,
                    finished_at=created + 1,
                    cpu_s=0.5,
                    metrics=StepMetrics(
                        rows_read=rng.randrange(10_000),
                        files_read=3,
                        bytes_read=1 << 20,
                        inputs={
                            "events": InputRead(
                                "db.events", from_snapshot_id=1, to_snapshot_id=2, snapshots=1
                            )
                        },
                        rows_written=100,
                        output="db.out",
                        mode="append",
                        committed_snapshot_id=index,
                    ),
                    error="step 'write': workflows/w.yaml:9: SQL failed: Binder Error"
                    if failed and step == "write"
                    else None,
                )
            )
        store.update_run(
            run.run_id,
            status=RunStatus.FAILED if failed else RunStatus.SUCCEEDED,
            finished_at=created + 2,
            error="step 'write': workflows/w.yaml:9: SQL failed: Binder Error" if failed else None,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "calve", "--project", str(root), "ui", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k not in ("CALVE_HOME", "CALVE_PROJECT")},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("calve ui did not start within 60s")


def measure(port: int, path: str, requests: int) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times, size = [], 0
    for index in range(requests + 5):
        begun = time.perf_counter()
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read()
        elapsed = (time.perf_counter() - begun) * 1000
        if answer.status != 200:
            raise SystemExit(f"GET {path}: HTTP {answer.status}")
        size = len(body)
        if index >= 5:  # warm-up: templates compiled, connections opened
            times.append(elapsed)
    connection.close()
    times.sort()
    return {
        "path": path,
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
        "max_ms": round(times[-1], 2),
        "bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "project"
        init_project(root, example=False)
        began = time.perf_counter()
        store = StateStore(root / ".calve" / "state.db")
        fill(store, args.runs)
        filled_s = time.perf_counter() - began
        process, port = serve(root)
        try:
            pages = [
                measure(port, path, args.requests)
                for path in (
                    "/runs",
                    f"/runs?page={args.runs // 50 // 2}",
                    "/runs?status=failed",
                    "/runs?workflow=workflow_07&status=succeeded",
                    "/runs/bench-000009",
                )
            ]
        finally:
            process.terminate()
            process.wait(timeout=15)
    result = {"runs": args.runs, "steps": 2 * args.runs, "fill_s": round(filled_s, 1), "goal_ms": GOAL_MS}
    result["pages"] = pages
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{args.runs:,} runs ({2 * args.runs:,} steps) recorded in {filled_s:.1f}s; "
        f"{args.requests} requests per page"
    )
    for page in pages:
        print(
            f"  GET {page['path']:<45} median {page['median_ms']:7.2f} ms  p95 {page['p95_ms']:7.2f} ms  "
            f"max {page['max_ms']:7.2f} ms  ({page['bytes']:,} bytes)"
        )
    first = pages[0]
    verdict = "within" if first["p95_ms"] <= GOAL_MS else "OVER"
    print(f"run list, first page: p95 {first['p95_ms']} ms, {verdict} the {GOAL_MS:.0f} ms goal")


if __name__ == "__main__":
    main()
