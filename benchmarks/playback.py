"""The playback benchmark: lookback vs calve at several scales, side by side in one process run.

At each scale a fresh embedded catalog gets the same generated playback events, day by day, and
both pipelines of `examples/playback/` run after each day's batch, in alternating order (see
calve.playback.demo). Reported per scale: CPU seconds of each pipeline (sum over the steps of the
recorded runs), the ratio calve / lookback in total and per stage, rows and bytes read, and the rows
that differ from a from-scratch recomputation.

    python benchmarks/playback.py                       # 10k, 40k, 160k events a day, 30 days
    python benchmarks/playback.py --scales 10000,20000 --days 20
    python benchmarks/playback.py --quick               # one small scale, for a smoke run

Results are printed as a table and written to benchmarks/results/playback.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from calve.catalog import embedded_catalog
from calve.playback.data import PlaybackConfig
from calve.playback.demo import run_playback
from calve.state import StateStore


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", default="10000,40000,160000", help="events per day, comma-separated")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--late-fraction", type=float, default=0.03)
    parser.add_argument("--mean-lag-days", type=float, default=3.0)
    parser.add_argument("--lookback-days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="one scale of 5,000 events a day, 10 days")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "playback.json")
    args = parser.parse_args()
    scales = [5_000] if args.quick else [int(s) for s in args.scales.split(",")]
    days = 10 if args.quick else args.days

    results: list[dict[str, Any]] = []
    for events_per_day in scales:
        config = PlaybackConfig(
            days=days,
            events_per_day=events_per_day,
            late_fraction=args.late_fraction,
            mean_lag_days=args.mean_lag_days,
            seed=args.seed,
        )
        with tempfile.TemporaryDirectory(prefix="calve-bench-") as home:
            started = time.perf_counter()
            report = run_playback(
                embedded_catalog(Path(home)),
                StateStore(Path(home) / "state.db"),
                config,
                args.lookback_days,
                progress=lambda done, total, message: print(f"  {message}", end="\r", file=sys.stderr),
            )
            report["elapsed_s"] = round(time.perf_counter() - started, 1)
        results.append(report)
        print(" " * 60, end="\r", file=sys.stderr)
        print_row(report)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2, default=str))
    print(f"\nwritten to {args.out}")


HEADER = (
    "| events/day | days | lookback CPU s | calve CPU s | **CPU ratio** | stage 1 | stage 2 "
    "| bytes read ratio | rows differing (calve / lookback) |"
)


def print_row(report: dict[str, Any]) -> None:
    if not getattr(print_row, "header_done", False):
        print(HEADER)
        print("|---|---|---|---|---|---|---|---|---|")
        print_row.header_done = True  # type: ignore[attr-defined]
    stages = report["stages"]
    print(
        f"| {report['events_per_day']:,} | {report['days']} | {report['lookback_cpu_s']:.1f} "
        f"| {report['calve_cpu_s']:.1f} | **{report['cpu_ratio']:.2f}** | {stages['daily']['cpu_ratio']:.2f} "
        f"| {stages['agg']['cpu_ratio']:.2f} | {report['bytes_read_ratio']:.2f} "
        f"| {report['calve_mismatched_rows']} / {report['lookback_mismatched_rows']} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
