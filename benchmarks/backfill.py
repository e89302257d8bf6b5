"""Managed backfill against the hand-built way, on a three-stage pipeline of playback events.

    .venv/bin/python benchmarks/backfill.py                          # 100,000 events a day, 30 days
    .venv/bin/python benchmarks/backfill.py --events-per-day 20000 --json

The pipeline (three workflows, each incremental on the one before):

- `plays`   (stage 1): the events' ICDC rows cleaned, merged on (event_day, event_id), partitioned by day;
- `daily`   (stage 2): per day and device, recomputed for the range of days that changed;
- `monthly` (stage 3): per month and device, recomputed for the months that changed.

Both copies of it are built from the same generated data and run day by day. Then stage 1's logic
changes (a play now qualifies from 30 s, not 60 s; with `--changed-days N` only on the last N days)
and the last 7 event days are brought up to date:

- `calve backfill plays --from D-6 --to D --propagate`: chunk by chunk, stage 1 overwritten for the
  day, stages 2 and 3 updated by their incremental triggers from the changes;
- the same without `--propagate`: stages 2 and 3 run once after the last chunk, as their incremental
  triggers run them in a scheduler (`by_triggers`);
- the hand-built way: three `foreach` workflows, run one after the other, that recompute each
  stage's range (7 days of stage 1, 7 days of stage 2, the months they fall in of stage 3).

Reported: CPU seconds (this process: everything runs in it) and rows written per stage, for both,
and whether both copies end equal. Measured in one run, in alternating order over --repeat rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from calve.playback.data import EVENTS_SCHEMA, EVENTS_SPEC, PlaybackConfig, PlaybackGenerator
from calve.project import Project, init_project
from calve.workflows.backfill import Backfiller, plan_backfill
from calve.workflows.runner import Runner

STAGE1 = """
SELECT event_id, account_id, device, event_day, view_seconds,
       view_seconds >= {threshold} AS qualified
FROM events
WHERE view_seconds > 0
"""

PLAYS = """
id: plays
triggers:
  - incremental: {sources: [playback.events]}
steps:
  - id: plays
    inputs:
      events:
        table: playback.events
        read: icdc
        columns: [event_id, account_id, device, event_day, view_seconds]
    sql_file: stage1.sql
    output: {table: playback.plays, mode: merge, keys: [event_day, event_id], partition_by: [event_day]}
"""

DAILY_SQL = """
SELECT event_day, device, count(*) AS plays, count(*) FILTER (WHERE qualified) AS qualified_plays,
       sum(view_seconds) AS seconds
FROM plays WHERE event_day BETWEEN $range_event_day_min AND $range_event_day_max
GROUP BY event_day, device
"""

DAILY = """
id: daily
triggers:
  - incremental: {sources: [playback.plays]}
steps:
  - id: daily
    inputs:
      changed: {table: playback.plays, read: ranges, ranges: [event_day]}
      plays:
        table: playback.plays
        columns: [event_day, device, qualified, view_seconds]
        filter: {event_day: {between: [$range_event_day_min, $range_event_day_max]}}
    sql_file: daily.sql
    output:
      table: playback.daily
      mode: overwrite
      filter: {event_day: {between: [$range_event_day_min, $range_event_day_max]}}
      partition_by: [event_day]
"""

MONTHLY_SQL = """
SELECT CAST(date_trunc('month', event_day) AS DATE) AS month, device, sum(plays) AS plays,
       sum(qualified_plays) AS qualified_plays, sum(seconds) AS seconds
FROM daily GROUP BY 1, 2
"""

MONTHLY = """
id: monthly
triggers:
  - incremental: {sources: [playback.daily]}
steps:
  - id: monthly
    inputs:
      changed: {table: playback.daily, read: ranges, ranges: {event_day: month}}
      daily:
        table: playback.daily
        filter: {event_day: {between: [$range_event_day_min, $range_event_day_max]}}
    sql_file: monthly.sql
    output:
      table: playback.monthly
      mode: overwrite
      filter: {month: {between: [$range_event_day_min, $range_event_day_max]}}
      partition_by: [month]
"""

# the hand-built way: one foreach workflow per stage, each recomputing its range
FIX_PLAYS = """
id: fix_plays
params:
  days: {type: "list[date]"}
steps:
  - id: plays
    foreach: {param: days, as: day}
    inputs:
      events:
        table: playback.events
        columns: [event_id, account_id, device, event_day, view_seconds]
        filter: {event_day: {eq: $day}}
    sql_file: stage1.sql
    output: {table: playback.plays, mode: overwrite, filter: {event_day: {eq: $day}}}
"""

FIX_DAILY = """
id: fix_daily
params:
  days: {type: "list[date]"}
steps:
  - id: daily
    foreach: {param: days, as: day}
    inputs:
      plays:
        table: playback.plays
        columns: [event_day, device, qualified, view_seconds]
        filter: {event_day: {eq: $day}}
    sql: |
      SELECT event_day, device, count(*) AS plays, count(*) FILTER (WHERE qualified) AS qualified_plays,
             sum(view_seconds) AS seconds
      FROM plays GROUP BY event_day, device
    output: {table: playback.daily, mode: overwrite, filter: {event_day: {eq: $day}}}
"""

FIX_MONTHLY = """
id: fix_monthly
params:
  months: {type: "list[date]"}
steps:
  - id: monthly
    foreach: {param: months, as: month}
    inputs:
      daily:
        table: playback.daily
        filter: {event_day: {gte: $month}}
    sql: |
      SELECT CAST(date_trunc('month', event_day) AS DATE) AS month, device, sum(plays) AS plays,
             sum(qualified_plays) AS qualified_plays, sum(seconds) AS seconds
      FROM daily WHERE CAST(date_trunc('month', event_day) AS DATE) = $month GROUP BY 1, 2
    output: {table: playback.monthly, mode: overwrite, filter: {month: {eq: $month}}}
"""

STAGES = ("plays", "daily", "monthly")


def build(root: Path, config: PlaybackConfig, changed_days: int | None = None) -> tuple[Project, dt.date]:
    """A project with the pipeline run day by day over the generated events; returns the last day."""
    init_project(root, example=False)
    folder = root / "workflows"
    for name, text in (("plays", PLAYS), ("daily", DAILY), ("monthly", MONTHLY)):
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    for name, text in (("fix_plays", FIX_PLAYS), ("fix_daily", FIX_DAILY), ("fix_monthly", FIX_MONTHLY)):
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    (folder / "stage1.sql").write_text(STAGE1.format(threshold=60))
    (folder / "daily.sql").write_text(DAILY_SQL)
    (folder / "monthly.sql").write_text(MONTHLY_SQL)
    project = Project(root)
    project.catalog.create_namespace("playback")
    source = project.catalog.create_table("playback.events", schema=EVENTS_SCHEMA, partition_spec=EVENTS_SPEC)
    runner = Runner.for_project(project)
    generator = PlaybackGenerator(config)
    for index in range(config.days):
        source.append(generator.ingest(index))
        for name in STAGES:
            result = runner.run(project.workflow(name))
            assert result is not None and result.status.value in ("succeeded", "skipped"), result.run.error
    # the business logic changes: a play qualifies from 30 seconds
    threshold = "30"
    if changed_days is not None:  # the new logic changes only the last `changed_days` event days
        since = generator.day(config.days - changed_days).isoformat()
        threshold = f"CASE WHEN event_day >= DATE '{since}' THEN 30 ELSE 60 END"  # a constant, not input
    (folder / "stage1.sql").write_text(STAGE1.format(threshold=threshold))
    return Project(root), generator.day(config.days - 1)


def managed(project: Project, first: dt.date, last: dt.date, propagate: bool = True) -> dict[str, Any]:
    """`calve backfill plays --propagate`; without `propagate`, the downstream workflows run once
    after the last chunk, as their incremental triggers would run them in a scheduler."""
    runner = Runner.for_project(project)
    backfiller = Backfiller(runner, project.workflows())
    started = time.process_time()
    plan = plan_backfill(backfiller.runner, backfiller.workflows, "plays", str(first), str(last))
    result = backfiller.run(backfiller.start(plan, propagate=propagate).backfill_id)
    assert result.record.status.value == "succeeded", result.record.error
    runs = [run["run_id"] for chunk in result.chunks for run in chunk.metrics.get("downstream_runs", [])]
    if not propagate:
        for name in STAGES[1:]:
            done = runner.run(project.workflow(name), skip_if_no_changes=True)
            assert done is not None and done.status.value in ("succeeded", "skipped"), done.run.error
            runs.append(done.run.run_id)
    cpu = time.process_time() - started
    written = {stage: 0 for stage in STAGES}
    for chunk in result.chunks:
        for step in chunk.metrics["steps"]:
            written["plays"] += step["rows_written"]
    for run_id in runs:
        for step in project.state.step_runs(run_id):
            written[step.step_id] += step.metrics.rows_written or 0
    return {"cpu_s": cpu, "rows_written": written}


def managed_by_triggers(project: Project, first: dt.date, last: dt.date) -> dict[str, Any]:
    return managed(project, first, last, propagate=False)


def hand_built(project: Project, first: dt.date, last: dt.date) -> dict[str, Any]:
    runner = Runner.for_project(project)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    months = sorted({d.replace(day=1) for d in days})
    started = time.process_time()
    written = {}
    for stage, params in (
        ("plays", {"days": days}),
        ("daily", {"days": days}),
        ("monthly", {"months": months}),
    ):
        result = runner.run(project.workflow(f"fix_{stage}"), params)
        assert result is not None and result.status.value == "succeeded", result.run.error
        written[stage] = sum(s.metrics.rows_written or 0 for s in result.steps)
    return {"cpu_s": time.process_time() - started, "rows_written": written}


def tables(project: Project) -> dict[str, list[tuple[Any, ...]]]:
    found = {}
    for stage in STAGES:
        rows = project.catalog.load_table(f"playback.{stage}").scan().to_arrow().to_pylist()
        found[stage] = sorted(tuple(sorted(r.items())) for r in rows)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events-per-day", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--range-days", type=int, default=7, help="how many of the last days to backfill")
    parser.add_argument(
        "--changed-days",
        type=int,
        help="the logic change affects only the last N days of the range (default: every day)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds, alternating which way runs first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = PlaybackConfig(days=args.days, events_per_day=args.events_per_day)
    rounds = []
    for round_index in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="calve-backfill-") as tmp:
            a, last = build(Path(tmp) / "a", config, args.changed_days)
            b, _ = build(Path(tmp) / "b", config, args.changed_days)
            c, _ = build(Path(tmp) / "c", config, args.changed_days)
            first = last - dt.timedelta(days=args.range_days - 1)
            ways = [
                ("managed", managed, a),
                ("hand_built", hand_built, b),
                ("by_triggers", managed_by_triggers, c),
            ]
            ways = ways[round_index % 3 :] + ways[: round_index % 3]
            measured: dict[str, Any] = {name: way(project, first, last) for name, way, project in ways}
            measured["equal"] = tables(a) == tables(b) == tables(c)
            rounds.append(measured)
    report = {
        "events_per_day": args.events_per_day,
        "days": args.days,
        "range_days": args.range_days,
        "changed_days": args.changed_days,
        "rounds": rounds,
        "cpu_ratio": [r["managed"]["cpu_s"] / r["hand_built"]["cpu_s"] for r in rounds],
        "cpu_ratio_by_triggers": [r["by_triggers"]["cpu_s"] / r["hand_built"]["cpu_s"] for r in rounds],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"backfill of the last {args.range_days} of {args.days} days ({args.events_per_day:,} events a day), "
        f"three stages; the logic change affects {args.changed_days or args.range_days} of those days"
    )
    print("| round | way | CPU s | rows written: plays / daily / monthly | tables equal |")
    print("|---|---|---|---|---|")
    for index, r in enumerate(rounds):
        for name in ("managed", "by_triggers", "hand_built"):
            w = r[name]["rows_written"]
            print(
                f"| {index + 1} | {name} | {r[name]['cpu_s']:.2f} | {w['plays']:,} / {w['daily']:,} / "
                f"{w['monthly']:,} | {r['equal']} |"
            )
    print("CPU managed (--propagate) / hand-built: " + ", ".join(f"{x:.2f}" for x in report["cpu_ratio"]))
    print(
        "CPU managed (downstream by triggers) / hand-built: "
        + ", ".join(f"{x:.2f}" for x in report["cpu_ratio_by_triggers"])
    )


if __name__ == "__main__":
    main()
