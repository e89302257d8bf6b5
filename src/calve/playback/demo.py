"""`calve demo`: the playback pipeline of the article, lookback vs calve, side by side.

Day after day, a batch of playback events lands in `playback.events` (a few percent of them late,
some beyond the lookback window). Both workflows of the packaged project (`pipeline/`, also at
`examples/playback/`) run on the same data, one after the other in alternating order: the lookback
baseline recomputes the last X days of both stages; calve processes only what changed. Every
step's CPU and wall time, rows and bytes read and rows written come from the recorded runs. At the
end both pipelines' tables are compared with a from-scratch recomputation over all the events.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchNamespaceError, NoSuchTableError

from calve.capture.icdc import ICDC_NAMESPACE, drop_icdc_table, is_icdc_table
from calve.engines import Engine
from calve.engines.duckdb import DuckDBEngine
from calve.errors import CalveError
from calve.playback.data import EVENTS_SCHEMA, EVENTS_SPEC, PlaybackConfig, PlaybackGenerator
from calve.state import MergeMetrics, RunStatus, StateStore, StepMetrics
from calve.workflows.loader import load_workflow
from calve.workflows.model import Workflow
from calve.workflows.runner import Runner

PIPELINE = Path(__file__).resolve().parent / "pipeline"
NAMESPACE = "playback"
SOURCE = f"{NAMESPACE}.events"
STAGES = ("daily", "agg")
STAGE_OF = {"daily": "daily", "compact_daily": "daily", "agg": "agg"}  # compaction is stage 1's cost
TABLES = {
    "lookback": {"daily": f"{NAMESPACE}.daily_lookback", "agg": f"{NAMESPACE}.agg_lookback"},
    "calve": {"daily": f"{NAMESPACE}.daily_calve", "agg": f"{NAMESPACE}.agg_calve"},
}
KEYS = {"daily": ["event_day", "event_id"], "agg": ["event_day", "account_id"]}


@dataclass
class StageCost:
    cpu_s: float = 0.0
    wall_s: float = 0.0
    rows_read: int = 0
    bytes_read: int = 0
    rows_written: int = 0
    files_written: int = 0

    def add(self, metrics: StepMetrics, cpu_s: float, wall_s: float) -> None:
        merge = metrics.merge or MergeMetrics()
        self.cpu_s += cpu_s
        self.wall_s += wall_s
        self.rows_read += metrics.rows_read + merge.rows_read
        self.bytes_read += metrics.bytes_read + merge.bytes_read
        self.rows_written += metrics.rows_written or 0
        self.files_written += metrics.files_written or 0

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class PipelineCost:
    stages: dict[str, StageCost] = field(default_factory=lambda: {s: StageCost() for s in STAGES})
    run_cpu_s: float = 0.0  # whole runs, including pinning, locking and recording
    run_wall_s: float = 0.0

    @property
    def total(self) -> StageCost:
        total = StageCost()
        for stage in self.stages.values():
            for name in total.__dict__:
                setattr(total, name, getattr(total, name) + getattr(stage, name))
        return total


def playback_workflows() -> dict[str, Workflow]:
    folder = PIPELINE / "workflows"
    return {
        "lookback": load_workflow(folder / "lookback.yaml", PIPELINE),
        "calve": load_workflow(folder / "incremental.yaml", PIPELINE),
    }


DEMO_PROPERTY = "calve.demo"  # marks the tables the demo owns, and may drop and recreate


def reset_tables(catalog: Catalog) -> None:
    """Remove the tables of an earlier demo and create an empty source.

    Only tables marked as the demo's are touched: a `playback.events` (or any of the pipelines'
    tables) that the demo did not create stops the demo with an error instead. The demo's own tables
    are purged (their files deleted) after the demo's ICDC tables, which reference the source's
    files, have been dropped (never purged)."""
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(NAMESPACE)
    owned = [SOURCE, *(t for tables in TABLES.values() for t in tables.values())]
    existing = []
    for identifier in owned:
        try:
            table = catalog.load_table(identifier)
        except NoSuchTableError:
            continue
        if table.properties.get(DEMO_PROPERTY) != "playback":
            raise CalveError(
                f"{identifier} exists and was not created by `calve demo`, which would replace it: "
                "run the demo against another catalog (--catalog, or another folder for the embedded "
                "one), or drop that table yourself"
            )
        existing.append(identifier)
    try:
        for icdc_identifier in catalog.list_tables(ICDC_NAMESPACE):
            if icdc_identifier[-1].startswith("playback_calve-"):
                drop_icdc_table(catalog, ".".join(icdc_identifier))
    except NoSuchNamespaceError:
        pass
    for identifier in existing:
        if is_icdc_table(catalog.load_table(identifier)):  # never: it would delete a source's files
            catalog.drop_table(identifier)
        else:
            catalog.purge_table(identifier)
    catalog.create_table(
        SOURCE, schema=EVENTS_SCHEMA, partition_spec=EVENTS_SPEC, properties={DEMO_PROPERTY: "playback"}
    )


def mark_tables(catalog: Catalog) -> None:
    """Mark the pipelines' tables (created by their first runs) as the demo's."""
    for tables in TABLES.values():
        for identifier in tables.values():
            try:
                table = catalog.load_table(identifier)
            except NoSuchTableError:
                continue
            if table.properties.get(DEMO_PROPERTY) != "playback":
                with table.transaction() as tx:
                    tx.set_properties({DEMO_PROPERTY: "playback"})


def run_playback(
    catalog: Catalog,
    state: StateStore,
    config: PlaybackConfig,
    lookback_days: int = 14,
    progress: Callable[[int, int, str], None] = lambda done, total, message: None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Simulate `config.days` days with both pipelines; returns the figures of `calve demo --json`.
    The SQL steps run on `engine` (default: DuckDB in process)."""
    workflows = playback_workflows()
    reset_tables(catalog)
    runner = Runner(catalog, state, engine or DuckDBEngine())
    generator = PlaybackGenerator(config)
    source = catalog.load_table(SOURCE)
    costs = {name: PipelineCost() for name in workflows}
    ingested = 0
    params = {"lookback": {"lookback_days": str(lookback_days)}, "calve": {}}
    for index in range(config.days):
        day = generator.day(index)
        batch = generator.ingest(index)
        source.append(batch)
        ingested += batch.num_rows
        order = ["lookback", "calve"] if index % 2 == 0 else ["calve", "lookback"]
        for name in order:
            progress(index, config.days, f"day {day}: {name}")
            cpu, wall = time.process_time(), time.perf_counter()
            result = runner.run(workflows[name], params[name], logical_date=day, trigger="demo")
            costs[name].run_cpu_s += time.process_time() - cpu
            costs[name].run_wall_s += time.perf_counter() - wall
            if result is None or result.status is RunStatus.FAILED:
                raise CalveError(f"the {name} pipeline failed on {day}: {result.run.error if result else ''}")
            for step in result.steps:
                stage = STAGE_OF.get(step.step_id)
                if stage is not None:
                    wall_s = (step.finished_at or 0) - (step.started_at or 0)
                    costs[name].stages[stage].add(step.metrics, step.cpu_s or 0.0, wall_s)
        if index == 0:
            mark_tables(catalog)
    mark_tables(catalog)
    progress(config.days, config.days, "comparing with a from-scratch recomputation")
    events = catalog.load_table(SOURCE).scan().to_arrow()  # read once: the truth and the lags
    accuracy = compare_with_recomputation(catalog, events)
    con = duckdb.connect()
    con.register("events", events)
    (lags,) = con.sql(
        "SELECT count(*) FILTER (WHERE ingest_day > event_day) AS late, "
        "count(*) FILTER (WHERE ingest_day - event_day >= $x) AS beyond FROM events",
        params={"x": lookback_days},
    ).fetchall()
    return report(config, lookback_days, ingested, int(lags[0]), int(lags[1]), costs, accuracy)


def recompute(events: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Both stages from scratch, with the pipelines' own SQL, over every event."""
    sql = {
        stage: (PIPELINE / "workflows" / f"stage{n}.sql").read_text()
        for n, stage in ((1, "daily"), (2, "agg"))
    }
    con = duckdb.connect()
    con.register("events", events)
    daily = con.sql(sql["daily"]).to_arrow_table()
    con.register("daily", daily)
    return daily, con.sql(sql["agg"]).to_arrow_table()


def compare_with_recomputation(catalog: Catalog, events: pa.Table | None = None) -> dict[str, dict[str, int]]:
    """Rows that differ from the recomputation, per pipeline and table (missing + extra + changed)."""
    events = events if events is not None else catalog.load_table(SOURCE).scan().to_arrow()
    truth = dict(zip(STAGES, recompute(events), strict=True))
    result: dict[str, dict[str, int]] = {}
    for pipeline, tables in TABLES.items():
        result[pipeline] = {}
        for stage, identifier in tables.items():
            try:
                actual = catalog.load_table(identifier).scan().to_arrow()
            except NoSuchTableError:
                actual = truth[stage].schema.empty_table()
            result[pipeline][stage] = differing_rows(truth[stage], actual, KEYS[stage])
    return result


def differing_rows(expected: pa.Table, actual: pa.Table, keys: list[str]) -> int:
    """Keys missing from `actual`, keys only in `actual`, and keys whose row differs."""
    con = duckdb.connect()
    con.register("expected", expected)
    con.register("actual", actual.select(expected.column_names).cast(expected.schema))
    on = " AND ".join(f'e."{k}" = a."{k}"' for k in keys)  # column names from the pipeline, not input
    first = keys[0]
    row = con.sql(
        f"""SELECT count(*) FILTER (WHERE a."{first}" IS NULL)
                 + count(*) FILTER (WHERE e."{first}" IS NULL)
                 + count(*) FILTER (WHERE e."{first}" IS NOT NULL AND a."{first}" IS NOT NULL
                                    AND e IS DISTINCT FROM a)
            FROM expected AS e FULL OUTER JOIN actual AS a ON {on}"""
    ).fetchall()[0]
    return int(row[0])


def report(
    config: PlaybackConfig,
    lookback_days: int,
    ingested: int,
    late: int,
    beyond: int,
    costs: dict[str, PipelineCost],
    accuracy: dict[str, dict[str, int]],
) -> dict[str, Any]:
    calve, lookback = costs["calve"], costs["lookback"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None

    stages = {
        stage: {
            "calve": calve.stages[stage].to_dict(),
            "lookback": lookback.stages[stage].to_dict(),
            "cpu_ratio": ratio(calve.stages[stage].cpu_s, lookback.stages[stage].cpu_s),
            "bytes_read_ratio": ratio(calve.stages[stage].bytes_read, lookback.stages[stage].bytes_read),
            "rows_read_ratio": ratio(calve.stages[stage].rows_read, lookback.stages[stage].rows_read),
        }
        for stage in STAGES
    }
    total_calve, total_lookback = calve.total, lookback.total
    return {
        "days": config.days,
        "events_per_day": config.events_per_day,
        "late_fraction": config.late_fraction,
        "lookback_days": lookback_days,
        "seed": config.seed,
        "events_ingested": ingested,
        "late_events": late,
        "events_later_than_lookback": beyond,
        "stages": stages,
        "total": {"calve": total_calve.to_dict(), "lookback": total_lookback.to_dict()},
        "calve_cpu_s": round(total_calve.cpu_s, 3),
        "lookback_cpu_s": round(total_lookback.cpu_s, 3),
        "cpu_ratio": ratio(total_calve.cpu_s, total_lookback.cpu_s),
        # calve stage CPU / lookback stage CPU (the same as stages.<stage>.cpu_ratio, for scripts)
        "stage1_cpu_ratio": stages["daily"]["cpu_ratio"],
        "stage2_cpu_ratio": stages["agg"]["cpu_ratio"],
        "wall_ratio": ratio(total_calve.wall_s, total_lookback.wall_s),
        "bytes_read_ratio": ratio(total_calve.bytes_read, total_lookback.bytes_read),
        "rows_read_ratio": ratio(total_calve.rows_read, total_lookback.rows_read),
        "calve_run_cpu_s": round(calve.run_cpu_s, 3),
        "lookback_run_cpu_s": round(lookback.run_cpu_s, 3),
        "run_cpu_ratio": ratio(calve.run_cpu_s, lookback.run_cpu_s),
        "accuracy": accuracy,
        "calve_mismatched_rows": sum(accuracy["calve"].values()),
        "lookback_mismatched_rows": sum(accuracy["lookback"].values()),
    }
