"""`calve demo`: the playback pipeline of the article, lookback vs calve, and its report."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from calve.cli.context import Context, handle_errors, json_option
from calve.cli.output import Output, human_bytes

if TYPE_CHECKING:
    from rich.console import Console


@click.command()
@click.option("--days", default=30, show_default=True, help="Days to simulate, one batch of events a day.")
@click.option("--events-per-day", default=100_000, show_default=True, help="Plays per event day.")
@click.option(
    "--late-fraction", default=0.03, show_default=True, help="Share of each day's plays that arrive late."
)
@click.option(
    "--mean-lag-days", default=3.0, show_default=True, help="Mean delay of a late play, in days (tail to 45)."
)
@click.option("--lookback-days", default=14, show_default=True, help="The baseline's window X.")
@click.option("--seed", default=7, show_default=True, help="Same seed, same data.")
@json_option
@click.pass_obj
@handle_errors
def demo(
    ctx: Context,
    days: int,
    events_per_day: int,
    late_fraction: float,
    mean_lag_days: float,
    lookback_days: int,
    seed: int,
    json_mode: bool,
    out: Output,
) -> None:
    """The playback pipeline of the article, lookback vs calve, side by side.

    Simulates DAYS days of playback events (a few percent late, some later than the lookback window)
    landing in playback.events. Every day both two-stage pipelines run on the same data, in
    alternating order: the lookback baseline recomputes the last X days of both stages; calve
    processes only what changed (stage 1 merges the ICDC table, stage 2 re-aggregates the changed
    keys). Prints rows and bytes read, rows written, CPU and wall seconds per stage and in total,
    and how many rows of each pipeline's tables differ from a from-scratch recomputation.

    \b
    The workflows are in examples/playback/ (the same SQL both ways). Examples:
      calve demo
      calve demo --days 40 --events-per-day 50000 --json
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from calve.playback.data import PlaybackConfig
    from calve.playback.demo import run_playback

    for name, value in (
        ("--days", days),
        ("--events-per-day", events_per_day),
        ("--lookback-days", lookback_days),
    ):
        if value < 1:
            raise click.BadParameter(f"must be at least 1, not {value}", param_hint=name)
    if not 0 <= late_fraction <= 1:
        raise click.BadParameter(
            f"must be between 0 and 1, not {late_fraction}", param_hint="--late-fraction"
        )
    config = PlaybackConfig(
        days=days,
        events_per_day=events_per_day,
        late_fraction=late_fraction,
        mean_lag_days=mean_lag_days,
        seed=seed,
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} days"),
        TimeElapsedColumn(),
        console=out.err,
        disable=json_mode,
        transient=True,
    ) as bar:
        task = bar.add_task("simulating", total=days)

        def progress(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, description=message)

        report = run_playback(ctx.catalog, ctx.state, config, lookback_days, progress)

    def render(console: Console) -> None:
        _render_playback(console, report)

    out.result(report, render)
    if report["calve_mismatched_rows"]:
        sys.exit(2)


def _render_playback(console: Console, report: dict[str, Any]) -> None:
    from rich.table import Table as RichTable

    console.print(
        f"[bold]{report['days']} days[/bold] of playback, {report['events_ingested']:,} events "
        f"({report['late_events']:,} late, {report['events_later_than_lookback']:,} of them "
        f"{report['lookback_days']} or more days late), lookback X = {report['lookback_days']}"
    )
    grid = RichTable(
        "stage",
        "pipeline",
        "rows read",
        "bytes read",
        "rows written",
        "CPU s",
        "wall s",
        "calve / lookback CPU",
    )
    labels = {"daily": "1: events → daily", "agg": "2: daily → agg"}
    groups: list[tuple[str, dict[str, Any], str | None]] = [
        (labels.get(stage, stage), figures, None) for stage, figures in report["stages"].items()
    ]
    groups.append(("total", {**report["total"], "cpu_ratio": report["cpu_ratio"]}, "bold"))
    for label, figures, style in groups:
        for pipeline in ("lookback", "calve"):
            cost = figures[pipeline]
            ratio = figures["cpu_ratio"]
            grid.add_row(
                label if pipeline == "lookback" else "",
                pipeline,
                f"{cost['rows_read']:,}",
                human_bytes(cost["bytes_read"]),
                f"{cost['rows_written']:,}",
                f"{cost['cpu_s']:.2f}",
                f"{cost['wall_s']:.2f}",
                f"{ratio:.0%}" if pipeline == "calve" and ratio is not None else "",
                style=style,
            )
    console.print(grid)
    accuracy = report["accuracy"]
    for pipeline in ("calve", "lookback"):
        per_table = ", ".join(f"{stage} {count:,}" for stage, count in accuracy[pipeline].items())
        total = report[f"{pipeline}_mismatched_rows"]
        colour = "green" if total == 0 else "yellow"
        console.print(
            f"{pipeline}: [{colour}]{total:,} rows differ[/{colour}] from a from-scratch recomputation "
            f"({per_table})"
        )
    stage_1, stage_2 = report["stage1_cpu_ratio"], report["stage2_cpu_ratio"]
    console.print(
        f"calve used {report['cpu_ratio']:.0%} of the lookback's CPU time "
        f"(stage 1 {_percent(stage_1)}, stage 2 {_percent(stage_2)}) and read "
        f"{report['bytes_read_ratio']:.0%} of its bytes."
    )


def _percent(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.0%}"
