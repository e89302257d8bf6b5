"""A coarse rollup where incremental aggregates should win: aggregate vs filter-join vs lookback.

    .venv/bin/python benchmarks/rollup.py                         # 100,000 events a day, 30 days
    .venv/bin/python benchmarks/rollup.py --events-per-day 300000 --json

The playback events of `calve demo` (late arrivals included) land day by day in `playback.events`;
three workflows keep the same rollup (per event day and device: plays, seconds, qualified plays,
distinct accounts; `--additive` leaves the distinct count out) and run after each day's batch, in
rotating order, in one process:

- `aggregate`: `strategy: aggregate`, a mergeable state updated from the events' changelog;
- `filter_join`: `strategy: filter_join`, every event of each changed (day, device) re-aggregated;
- `lookback`: the last 14 event days recomputed and overwritten (events later than that are lost).

The rollup is small (a few rows a day), so no output is partitioned. Reported: CPU seconds of
each workflow's step summed over the days (the first day, which builds
everything from scratch, counted apart), the ratios, and the rows that differ from a recomputation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb

from calve.playback.data import EVENTS_SCHEMA, EVENTS_SPEC, PlaybackConfig, PlaybackGenerator
from calve.project import Project, init_project
from calve.workflows.runner import Runner

ROLLUP = """
SELECT event_day, device, count(*) AS plays, sum(view_seconds) AS seconds,
       count(*) FILTER (WHERE view_seconds >= 60) AS qualified_plays,
       count(DISTINCT account_id) AS accounts
FROM events
GROUP BY event_day, device
"""
# the same rollup without the distinct count: additive measures only (one state row per group)
ADDITIVE = """
SELECT event_day, device, count(*) AS plays, sum(view_seconds) AS seconds,
       count(*) FILTER (WHERE view_seconds >= 60) AS qualified_plays
FROM events
GROUP BY event_day, device
"""

STRATEGY = """
id: {name}
steps:
  - id: rollup
    inputs:
      events: {{table: playback.events, columns: [event_day, device, view_seconds, account_id]}}
    sql_file: rollup.sql
    strategy: {name}
    output: {{table: playback.rollup_{name}, mode: merge, keys: [event_day, device]}}
"""

LOOKBACK = """
id: lookback
params:
  since: {type: date, default: logical_date - 14 days}
steps:
  - id: rollup
    inputs:
      events:
        table: playback.events
        columns: [event_day, device, view_seconds, account_id]
        filter: {event_day: {gt: $since, lte: $logical_date}}
    sql_file: rollup.sql
    output:
      table: playback.rollup_lookback
      mode: overwrite
      filter: {event_day: {gt: $since, lte: $logical_date}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events-per-day", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--additive", action="store_true", help="the rollup without count(DISTINCT account_id)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = PlaybackConfig(days=args.days, events_per_day=args.events_per_day, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="calve-rollup-") as tmp:
        report = measure(Path(tmp) / "project", config, ADDITIVE if args.additive else ROLLUP)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    what = "additive measures only" if args.additive else "with count(DISTINCT account_id)"
    print(f"rollup ({what}) of {report['events']:,} playback events over {args.days} days")
    print("| workflow | CPU s (days 2..N) | / lookback | first day CPU s | rows differing |")
    print("|---|---|---|---|---|")
    for name, row in report["workflows"].items():
        print(
            f"| {name} | {row['cpu_s']:.2f} | {row['ratio']:.2f} | {row['first_cpu_s']:.2f} | "
            f"{row['rows_differing']} |"
        )


def measure(root: Path, config: PlaybackConfig, sql: str = ROLLUP) -> dict[str, Any]:
    init_project(root, example=False)
    (root / "workflows" / "rollup.sql").write_text(sql)
    for name in ("aggregate", "filter_join"):
        (root / "workflows" / f"{name}.yaml").write_text(textwrap.dedent(STRATEGY.format(name=name)))
    (root / "workflows" / "lookback.yaml").write_text(textwrap.dedent(LOOKBACK))
    project = Project(root)
    project.catalog.create_namespace("playback")
    source = project.catalog.create_table("playback.events", schema=EVENTS_SCHEMA, partition_spec=EVENTS_SPEC)
    runner = Runner.for_project(project)
    generator = PlaybackGenerator(config)
    names = ["aggregate", "filter_join", "lookback"]
    cpu = {name: 0.0 for name in names}
    first = {name: 0.0 for name in names}
    events = 0
    for index in range(config.days):
        batch = generator.ingest(index)
        source.append(batch)
        events += batch.num_rows
        order = names[index % 3 :] + names[: index % 3]
        for name in order:
            started = time.process_time()
            result = runner.run(project.workflow(name), logical_date=generator.day(index))
            spent = time.process_time() - started
            assert result is not None and result.status.value in ("succeeded", "skipped"), result
            if index == 0:
                first[name] += spent
            else:
                cpu[name] += spent
    truth = source.scan().to_arrow()
    con = duckdb.connect()
    con.register("events", truth)
    expected = con.sql(sql).to_arrow_table()
    out: dict[str, Any] = {"events": events, "workflows": {}}
    for name in names:
        got = project.catalog.load_table(f"playback.rollup_{name}").scan().to_arrow()
        got = got.select(expected.column_names).cast(expected.schema)
        con.register("got", got)
        con.register("expected", expected)
        ((differing,),) = con.sql(
            "SELECT count(*) FROM ((SELECT * FROM expected EXCEPT ALL SELECT * FROM got) "
            "UNION ALL (SELECT * FROM got EXCEPT ALL SELECT * FROM expected))"
        ).fetchall()
        out["workflows"][name] = {
            "cpu_s": round(cpu[name], 3),
            "ratio": round(cpu[name] / cpu["lookback"], 3) if cpu["lookback"] else None,
            "first_cpu_s": round(first[name], 3),
            "rows_differing": int(differing),
        }
    return out


if __name__ == "__main__":
    main()
