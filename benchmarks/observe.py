"""What the run metrics cost: a run's CPU with the extra collection on and off, side by side.

    .venv/bin/python benchmarks/observe.py                      # 20 pairs at 1,000 and at 100,000 rows
    .venv/bin/python benchmarks/observe.py --pairs 10 --rows 1000 --cold-cache
    .venv/bin/python benchmarks/observe.py --pairs 10 --rows 1000 --cold-cache --empty-store --json

Two identical pipelines, `observed` and `plain`: a workflow of one step reads the new files of a source
partitioned by day (`read: icdc`, 30 earlier snapshots over 30 days) and appends them to a target
partitioned by day, so that every metric is computed: phases, peak memory, input and output skew (a
manifest read of the committed snapshot), freshness and the 14-day lookback estimate. Each pair
appends the same batch to both sources and runs `observed` with `CALVE_OBSERVE=1` and `plain` with
`CALVE_OBSERVE=0` (only CPU, rows and the error class recorded), the order swapped every other
pair, in one process. Reported per batch size: the median process CPU seconds of a run with and
without, and the median of the pairs' ratios. `--cold-cache` forgets the lookback's state and
manifest cache before each run (a one-shot `calve run`; a scheduler keeps them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, LongType, NestedField, StringType

from calve.observe import lookback
from calve.project import Project, init_project
from calve.state.lookback import LookbackStates
from calve.workflows.runner import Runner

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "day", DateType(), required=False),
    NestedField(3, "name", StringType(), required=False),
)
WORKFLOW = """
id: {name}
steps:
  - id: copy
    inputs:
      events: {{table: bench.src_{name}, read: icdc}}
    sql: SELECT id, day, name FROM events
    output: {{table: bench.dst_{name}, mode: append, partition_by: [day]}}
"""
PIPELINES = ("observed", "plain")  # (not on/off: YAML reads those as booleans)
FIRST = dt.date(2026, 1, 1)


def batch(start: int, count: int, day: int) -> pa.Table:
    """`count` rows, most on `day`, a few late ones spread over the 5 days before (several partitions)."""
    ids = list(range(start, start + count))
    days = [FIRST + dt.timedelta(days=day - (i % 6 if i % 20 == 0 else 0)) for i in ids]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "day": pa.array(days, pa.date32()),
            "name": pa.array([f"n{i}" for i in ids]),
        }
    )


def measure(rows: int, pairs: int, cold: bool, empty_store: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "p"
        init_project(root, example=False)
        for name in PIPELINES:
            (root / "workflows" / f"{name}.yaml").write_text(textwrap.dedent(WORKFLOW.format(name=name)))
        project = Project(root)
        project.catalog.create_namespace("bench")
        spec = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "day"))
        sources = {
            name: project.catalog.create_table(f"bench.src_{name}", schema=SCHEMA, partition_spec=spec)
            for name in PIPELINES
        }
        runner = Runner.for_project(project)
        for name in PIPELINES:
            for day in range(30):
                sources[name].append(batch(day * 100, 100, day))
            os.environ["CALVE_OBSERVE"] = "1" if name == "observed" else "0"
            runner.run(project.workflow(name))  # the history, once, before measuring
        next_id, day = 1_000_000, 30

        def one(name: str) -> float:
            os.environ["CALVE_OBSERVE"] = "1" if name == "observed" else "0"
            if cold:
                lookback.forget()
                if empty_store:
                    LookbackStates(runner.state).clear()
            cpu = time.process_time()
            result = runner.run(project.workflow(name))
            taken = time.process_time() - cpu
            assert result is not None and result.status.value == "succeeded", result and result.run.error
            return taken

        on: list[float] = []
        off: list[float] = []
        for pair in range(pairs):
            for name in PIPELINES:
                sources[name].append(batch(next_id, rows, day))
            next_id, day = next_id + rows, day + 1
            if pair % 2 == 0:
                on.append(one("observed"))
                off.append(one("plain"))
            else:
                off.append(one("plain"))
                on.append(one("observed"))
        os.environ.pop("CALVE_OBSERVE", None)
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    return {
        "rows_per_run": rows,
        "pairs": pairs,
        "cold_cache": cold,
        "empty_store": cold and empty_store,
        "cpu_s_on_median": round(statistics.median(on), 4),
        "cpu_s_off_median": round(statistics.median(off), 4),
        "ratio_of_medians": round(statistics.median(on) / statistics.median(off), 4),
        "median_pair_ratio": round(statistics.median(ratios), 4),
        "cpu_s_on_total": round(sum(on), 3),
        "cpu_s_off_total": round(sum(off), 3),
        "ratio_of_totals": round(sum(on) / sum(off), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--rows", default="1000,100000", help="rows per run, comma-separated sizes")
    parser.add_argument(
        "--cold-cache", action="store_true", help="forget the lookback's memory before each run (one-shot)"
    )
    parser.add_argument(
        "--empty-store", action="store_true", help="with --cold-cache: delete its stored states too"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [measure(int(n), args.pairs, args.cold_cache, args.empty_store) for n in args.rows.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(
            f"{r['rows_per_run']:>8,} rows/run, {r['pairs']} pairs"
            f"{' (cold cache' if r['cold_cache'] else ''}"
            f"{', empty store)' if r['empty_store'] else ')' if r['cold_cache'] else ''}: "
            f"CPU on {r['cpu_s_on_median']:.4f}s, off {r['cpu_s_off_median']:.4f}s (medians); "
            f"on/off: median of pairs {r['median_pair_ratio']:.3f}, totals {r['ratio_of_totals']:.3f}"
        )


if __name__ == "__main__":
    main()
