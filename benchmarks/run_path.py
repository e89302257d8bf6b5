"""The run path's fixed costs: one small change through a step, and a scheduler tick with nothing new.

    .venv/bin/python benchmarks/run_path.py                 # 15 repeats
    .venv/bin/python benchmarks/run_path.py --repeats 5 --workflows 50 --json

1. Per-step fixed cost: a source with 30 earlier snapshots, a workflow of one step (`read: icdc`,
   merge into its target). Each measured run processes exactly one newly appended small file:
   capture, ICDC table, the SQL, the merge commit with its checkpoint, the run and step records.
   Reported: process CPU seconds per run (median), and where it goes (cProfile, top functions).
2. Scheduler tick: `--workflows` workflows, each with an incremental trigger on its own source, and
   nothing new anywhere. Reported: wall and CPU seconds of one tick, and how many manifest files
   were read (goal: none, since every source's current snapshot is its consumer's checkpoint).

Uses only the public API (`Runner`, `Scheduler`, `Project`), so the same script measures an older
commit too: run it from a checkout of that commit to compare.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import pstats
import statistics
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.manifest import ManifestFile
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

from calve.project import Project, init_project
from calve.workflows.runner import Runner
from calve.workflows.scheduler import Scheduler

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "name", StringType(), required=False),
)

STEP = """
id: {id}
triggers:
  - incremental: {{sources: [{source}]}}
steps:
  - id: copy
    inputs:
      events: {{table: {source}, read: icdc}}
    sql: SELECT id, name FROM events
    output: {{table: {target}, mode: merge, keys: [id]}}
"""


def rows(start: int, count: int) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.table({"id": pa.array(ids, pa.int64()), "name": pa.array([f"n{i}" for i in ids])})


def project_with(root: Path, workflows: int) -> Project:
    init_project(root, example=False)
    for n in range(workflows):
        text = STEP.format(id=f"wf{n}", source=f"bench.src{n}", target=f"bench.dst{n}")
        (root / "workflows" / f"wf{n}.yaml").write_text(textwrap.dedent(text))
    return Project(root)


def per_step_cost(repeats: int, profile: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        project = project_with(Path(tmp) / "p", 1)
        project.catalog.create_namespace("bench")
        source = project.catalog.create_table("bench.src0", schema=SCHEMA)
        for n in range(30):
            source.append(rows(n * 10, 10))
        runner = Runner(project.catalog, project.state, project.engine())
        workflow = project.workflow("wf0")
        runner.run(workflow)  # first run: creates the target, processes the 30 snapshots
        cpu: list[float] = []
        profiler = cProfile.Profile()
        for n in range(repeats):
            source.append(rows(10_000 + n * 3, 3))
            started = time.process_time()
            if profile:
                profiler.enable()
            result = runner.run(workflow)
            if profile:
                profiler.disable()
            cpu.append(time.process_time() - started)
            assert result is not None and result.status.value == "succeeded", result
        out: dict[str, Any] = {"cpu_s_median": statistics.median(cpu), "cpu_s_min": min(cpu), "runs": repeats}
        if profile:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
            out["profile"] = text.getvalue()
        return out


def tick_cost(workflows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        project = project_with(Path(tmp) / "p", workflows)
        project.catalog.create_namespace("bench")
        for n in range(workflows):
            project.catalog.create_table(f"bench.src{n}", schema=SCHEMA).append(rows(0, 5))
        clock = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
        runner = Runner(project.catalog, project.state, project.engine())
        Scheduler(project, runner, clock=lambda: clock).tick()  # every workflow processes its source
        reads = 0
        original = ManifestFile.fetch_manifest_entry

        def counting(self: ManifestFile, *args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            reads += 1
            return original(self, *args, **kwargs)

        ManifestFile.fetch_manifest_entry = counting  # type: ignore[method-assign]
        try:
            scheduler = Scheduler(project, runner, clock=lambda: clock + dt.timedelta(hours=1))
            wall, cpu = time.perf_counter(), time.process_time()
            firings = scheduler.tick()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            ManifestFile.fetch_manifest_entry = original  # type: ignore[method-assign]
        return {
            "workflows": workflows,
            "wall_s": wall,
            "cpu_s": cpu,
            "manifest_reads": reads,
            "fired": len(firings),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--workflows", type=int, default=50)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    step = per_step_cost(args.repeats, profile=False)
    profiled = per_step_cost(max(3, args.repeats // 3), profile=not args.no_profile)
    tick = tick_cost(args.workflows)
    report = {"per_step": step, "tick": tick, "profile": profiled.get("profile")}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"per-step fixed cost: {step['cpu_s_median'] * 1000:.0f} ms CPU a run (median of {step['runs']})")
    print(
        f"scheduler tick, {tick['workflows']} workflows, nothing new: {tick['wall_s']:.2f} s wall, "
        f"{tick['cpu_s']:.2f} s CPU, {tick['manifest_reads']} manifest reads, {tick['fired']} fired"
    )
    if report["profile"]:
        print(report["profile"])


if __name__ == "__main__":
    main()
