"""Stage 2 of the playback pipeline (`agg`), phase by phase: calve now, calve before, the floor.

Setup: a fresh embedded catalog; the playback generator (30-day config, default late arrivals);
days 0..warmup-1 run the whole calve workflow through the Runner. Then `agg_calve` is cloned
(register_table over the same metadata: zero copy) into one target per variant, so every variant
starts from the same table state. For each measured day: the day's batch lands, stage 1 runs, and
then, in an order that rotates every day, on the same keys and the same pinned `daily_calve`:

  now       calve's stage-2 path: keys of the appended files, key files planned, read with DuckDB
            (calve.read.duckdb_scan.read_matched), stage2.sql on the engine, plan_merge (DuckDB),
            commit
  before    the same with the Arrow paths (ArrowScan + Arrow semi-join, Arrow merge planning): what
            calve did before issue 9, and still does where DuckDB may not read the files
  floor     hand-written: DuckDB read_parquet of the touched days' files of daily_calve, semi-join
            and stage2.sql in one query, each touched day's plain parquet output file rewritten

Every variant's output and table are compared with `now` (exact rows). CPU is time.process_time()
(all threads, DuckDB included), medians over the measured days; ratios are of medians.

    .venv/bin/python benchmarks/stage2.py                          # 100k events/day, ~3 minutes
    .venv/bin/python benchmarks/stage2.py --events-per-day 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import FileScanTask, Table

import calve.write.consumer as consumer_module
from calve.capture.changelog import read_tasks, snapshot_schema
from calve.capture.changes import capture_changes
from calve.catalog import embedded_catalog, load_table
from calve.engines.duckdb import DuckDBEngine
from calve.playback.data import PlaybackConfig, PlaybackGenerator
from calve.playback.demo import PIPELINE, differing_rows, playback_workflows, reset_tables
from calve.read import duckdb_scan
from calve.state import RunStatus, StateStore
from calve.workflows.runner import Runner
from calve.write import merge as merge_module
from calve.write.consumer import Consumer
from calve.write.merge import MergePlan, plan_key_files, plan_merge, read_key_files
from calve.write.tables import conform

DAILY = "playback.daily_calve"
AGG = "playback.agg_calve"
KEYS = ["event_day", "account_id"]
CONSUMER = "playback_calve-agg"
STAGE2_SQL = (PIPELINE / "workflows" / "stage2.sql").read_text()
ALWAYS = AlwaysTrue()
VARIANTS = ("now", "before", "floor")
PHASES = ("keys", "plan", "read", "aggregate", "merge_plan", "write_commit")


class Timer:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.process_time()
        try:
            yield
        finally:
            self.cpu[name] += time.process_time() - start

    @property
    def total(self) -> float:
        return sum(self.cpu.values())


@contextmanager
def arrow_paths() -> Iterator[None]:
    """calve before issue 9: every DuckDB read refused, so every caller takes its Arrow path."""
    saved = (duckdb_scan.matched_positions, merge_module.matching_files)
    duckdb_scan.matched_positions = lambda *a, **k: None  # type: ignore[assignment]
    merge_module.matching_files = lambda *a, **k: None  # type: ignore[assignment]
    try:
        yield
    finally:
        duckdb_scan.matched_positions, merge_module.matching_files = saved


def changed_keys(source: Table, before: int, until: int) -> tuple[Any, pa.Table]:
    change_set = capture_changes(source, before, until)
    schema = snapshot_schema(source, until).select(*KEYS)
    tasks = [FileScanTask(f.data_file) for f in change_set.appended_files]
    return change_set, read_tasks(source, schema, tasks).group_by(KEYS).aggregate([])


def arrow_semi_join(table: pa.Table, keys: pa.Table) -> pa.Table:
    numbered = table.select(KEYS).append_column("__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    kept = numbered.join(keys.cast(table.select(KEYS).schema), keys=KEYS, join_type="left semi")
    return table.take(np.sort(kept.column("__row").to_numpy()))


def run_calve(
    catalog: Any, engine: DuckDBEngine, target_id: str, before: int, until: int, t: Timer, *, arrow: bool
) -> pa.Table:
    source = load_table(catalog, DAILY)
    target = catalog.load_table(target_id)
    with t("keys"):
        change_set, keys = changed_keys(source, before, until)
    with t("plan"):
        projection = source.scan(snapshot_id=until).projection()
        tasks = plan_key_files(source, keys, until, ALWAYS)
    with t("read"):
        matched = None if arrow else duckdb_scan.read_matched(source, tasks, keys, ALWAYS, projection)
        if matched is not None:
            daily = matched.rows
        else:
            daily = arrow_semi_join(read_key_files(source, tasks, keys, ALWAYS, projection), keys)
    with t("aggregate"):
        output = engine.run(STAGE2_SQL, {"changed": keys, "daily": daily}, {})
        assert output is not None
        data = conform(output, target, "agg")
    with t("merge_plan"):
        if arrow:
            with arrow_paths():
                plan = plan_merge(target, data, KEYS)
        else:
            plan = plan_merge(target, data, KEYS)
    with t("write_commit"):
        commit_with(plan, Consumer(catalog, CONSUMER), target, change_set, data)
    return data


def commit_with(plan: MergePlan, consumer: Consumer, target: Table, change_set: Any, data: pa.Table) -> None:
    original = consumer_module.plan_merge
    consumer_module.plan_merge = lambda *a, **k: plan  # type: ignore[assignment]
    try:
        consumer.commit(target, [change_set], data, mode="merge", keys=KEYS)
    finally:
        consumer_module.plan_merge = original  # type: ignore[assignment]


class Floor:
    """Hand-written: plain parquet, one output file per day, no Iceberg."""

    def __init__(self, folder: Path, daily_location: str, agg: pa.Table) -> None:
        self.folder = folder
        self.daily_data = daily_location.removeprefix("file://") + "/data"
        folder.mkdir(parents=True, exist_ok=True)
        for day in agg.column("event_day").unique().to_pylist():
            pq.write_table(
                agg.filter(pc.equal(agg.column("event_day"), pa.scalar(day, pa.date32()))),
                folder / f"{day}.parquet",
            )

    def run(self, new_files: list[str], t: Timer) -> pa.Table:
        con = duckdb.connect()
        # else DuckDB may build the semi-join's hash table on the files' side (RIGHT_SEMI): ~3x slower
        con.execute("SET disabled_optimizers = 'build_side_probe_side'")
        with t("keys"):
            keys = con.sql(
                "SELECT DISTINCT event_day, account_id FROM read_parquet($f)", params={"f": new_files}
            ).to_arrow_table()
            con.register("changed", keys)
            days = keys.column("event_day").unique().to_pylist()
        with t("plan"):
            files = [f for d in days for f in glob.glob(f"{self.daily_data}/event_day={d}/*.parquet")]
        with t("aggregate"):  # read + semi-join + aggregate, one query (keys from Arrow)
            daily = con.sql(
                "SELECT d.* FROM read_parquet($f) d "
                "SEMI JOIN changed c ON d.event_day = c.event_day AND d.account_id = c.account_id",
                params={"f": files},
            )
            con.register("daily", daily)
            out = con.sql(STAGE2_SQL).to_arrow_table()
        with t("write_commit"):  # copy-on-write of each touched day's output file
            con.register("o", out)
            for day in days:
                path = self.folder / f"{day}.parquet"
                new = "SELECT * FROM o WHERE event_day = $d"
                if path.exists():
                    old = "SELECT * FROM read_parquet($p) ANTI JOIN changed USING (event_day, account_id)"
                    sql = f"{old} UNION ALL {new}"
                    rows = con.sql(sql, params={"d": day, "p": str(path)}).to_arrow_table()
                else:
                    rows = con.sql(new, params={"d": day}).to_arrow_table()
                pq.write_table(rows, path)
        return out

    def table(self) -> pa.Table:
        return duckdb.sql(
            "SELECT * FROM read_parquet($f)", params={"f": f"{self.folder}/*.parquet"}
        ).to_arrow_table()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events-per-day", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=16, help="days run before measuring")
    parser.add_argument("--measured", type=int, default=6, help="days measured after the warm-up")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="calve-stage2-"))
    catalog = embedded_catalog(home)
    state = StateStore(home / "state.db")
    engine = DuckDBEngine()
    runner = Runner(catalog, state, engine)
    generator = PlaybackGenerator(PlaybackConfig(days=30, events_per_day=args.events_per_day))
    full = playback_workflows()["calve"]
    stage1 = dataclasses.replace(full, steps=(full.step("daily"),))
    reset_tables(catalog)
    source = catalog.load_table("playback.events")
    started = time.perf_counter()
    for index in range(args.warmup):
        source.append(generator.ingest(index))
        result = runner.run(full, {}, logical_date=generator.day(index), trigger="bench")
        assert result is not None and result.status is RunStatus.SUCCEEDED, result and result.run.error
    print(f"warm-up: {args.warmup} days in {time.perf_counter() - started:.0f}s", file=sys.stderr)

    targets = {"now": "playback.agg_now", "before": "playback.agg_before"}
    for identifier in targets.values():
        catalog.register_table(identifier, catalog.load_table(AGG).metadata_location)
    daily_table = catalog.load_table(DAILY)
    floor = Floor(home / "floor", daily_table.metadata.location, catalog.load_table(AGG).scan().to_arrow())

    runs: list[dict[str, Any]] = []
    for index in range(args.warmup, args.warmup + args.measured):
        source.append(generator.ingest(index))
        before = catalog.load_table(DAILY).current_snapshot().snapshot_id  # type: ignore[union-attr]
        result = runner.run(stage1, {}, logical_date=generator.day(index), trigger="bench")
        assert result is not None and result.status is RunStatus.SUCCEEDED
        daily_table = catalog.load_table(DAILY)
        until = daily_table.current_snapshot().snapshot_id  # type: ignore[union-attr]
        change_set, keys = changed_keys(daily_table, before, until)
        new_files = [f.data_file.file_path.removeprefix("file://") for f in change_set.appended_files]
        timers: dict[str, Timer] = {}
        outputs: dict[str, pa.Table] = {}
        shift = index % len(VARIANTS)
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            t = timers[name] = Timer()
            if name == "floor":
                outputs[name] = floor.run(new_files, t)
            else:
                outputs[name] = run_calve(
                    catalog, engine, targets[name], before, until, t, arrow=name == "before"
                )
        for name, out in outputs.items():  # exactness: every output and table equal `now`'s
            assert differing_rows(outputs["now"], out, KEYS) == 0, name
        truth = catalog.load_table(targets["now"]).scan().to_arrow()
        assert differing_rows(truth, catalog.load_table(targets["before"]).scan().to_arrow(), KEYS) == 0
        assert differing_rows(truth, floor.table(), KEYS) == 0
        runs.append(
            {
                "ingest_day": index,
                "changed_keys": keys.num_rows,
                "touched_days": len(pc.unique(keys.column("event_day"))),
                "variants": {n: {"cpu": dict(t.cpu), "total": t.total} for n, t in timers.items()},
            }
        )
        print(f"day {index}: " + "  ".join(f"{n} {t.total:.2f}s" for n, t in timers.items()), file=sys.stderr)

    def median(name: str, phase: str | None = None) -> float:
        values = [r["variants"][name]["total" if phase is None else "cpu"] for r in runs]
        return statistics.median(v if phase is None else v.get(phase, 0.0) for v in values)

    print(f"\nstage 2 at {args.events_per_day:,} events/day: median CPU s per run ({len(runs)} runs)")
    print(f"{'phase':<14}" + "".join(f"{n:>10}" for n in VARIANTS))
    for phase in PHASES:
        print(f"{phase:<14}" + "".join(f"{median(n, phase):>10.3f}" for n in VARIANTS))
    print(f"{'total':<14}" + "".join(f"{median(n):>10.3f}" for n in VARIANTS))
    ratios = {
        "now_over_before": median("now") / median("before"),
        "now_over_floor": median("now") / median("floor"),
        "before_over_floor": median("before") / median("floor"),
    }
    print("  ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    report = {"events_per_day": args.events_per_day, "runs": runs, "ratios": ratios}
    out = args.out or Path(__file__).parent / "results" / f"stage2-{args.events_per_day}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
