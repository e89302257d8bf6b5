"""Observability commands: `calve lateness` — how late a table's rows arrive, and what a lookback of a
given size would miss. Imports pyiceberg and calve.observe when it runs, not when the command line is
parsed."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import click

from calve.cli.context import Context, handle_errors, json_option
from calve.cli.output import Output

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_WINDOWS = "3d,7d,14d"


def _windows(text: str) -> list[tuple[str, int]]:
    from calve.workflows.values import parse_duration

    windows = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            windows.append((item, parse_duration(item)))
        except ValueError as exc:
            raise click.BadParameter(f"{item!r}: {exc}", param_hint="--lookback") from None
    return windows


def _since(value: str | None) -> tuple[int | None, dt.datetime | None]:
    """--since: a snapshot id (exclusive), or an ISO date or time (snapshots committed at or after it)."""
    if value is None:
        return None, None
    try:
        return int(value), None
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a snapshot id nor an ISO date or time (as in 2026-01-15)",
            param_hint="--since",
        ) from None
    return None, moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _days(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 86400:.2f}d"


@click.command()
@click.argument("table")
@click.option(
    "--event-time", "event_time", required=True, metavar="COLUMN", help="The rows' event date or time."
)
@click.option(
    "--arrival",
    metavar="COLUMN",
    help="A column that records when each row arrived (as the demo's ingest_day). Default: the commit time "
    "of the snapshot that added the row.",
)
@click.option(
    "--since",
    metavar="SNAPSHOT_ID|DATE",
    help="Only snapshots after this snapshot id, or committed at or after this ISO date or time.",
)
@click.option(
    "--lookback",
    "lookback",
    default=DEFAULT_WINDOWS,
    show_default=True,
    metavar="WINDOWS",
    help="Lookback windows (comma-separated durations): how many rows each would have missed.",
)
@click.option(
    "--exact",
    is_flag=True,
    help="Read the event (and arrival) column of the added files for exact counts and percentiles; "
    "default: file bounds only, no data read.",
)
@json_option
@click.pass_obj
@handle_errors
def lateness(
    ctx: Context,
    table: str,
    event_time: str,
    arrival: str | None,
    since: str | None,
    lookback: str,
    exact: bool,
    json_mode: bool,
    out: Output,
) -> None:
    """How late TABLE's rows arrive: per snapshot, over its history, and what a lookback would miss.

    Lateness is arrival minus event time; arrival is the commit time of the snapshot that added the
    row, or --arrival COLUMN. From the files' column bounds (no data read) unless --exact. A lookback
    of X misses every row that arrives X or more after its event time.

    \b
    Examples:
      calve lateness playback.events --event-time event_day --arrival ingest_day
      calve lateness db.events --event-time event_ts --lookback 1d,3d,7d --exact --json
    """
    from calve.catalog import load_table
    from calve.observe.lateness import lateness_report

    since_id, since_time = _since(since)
    report = lateness_report(
        load_table(ctx.catalog, table),
        event_time,
        arrival_column=arrival,
        since_snapshot_id=since_id,
        since_time=since_time,
        windows=_windows(lookback),
        exact=exact,
    )
    payload = report.to_dict()

    def render(console: Console) -> None:
        from rich.table import Table as RichTable

        how = "exact, from the columns" if report.exact else "from file bounds, no data read"
        console.print(
            f"{report.table}: lateness of {report.event_time} against {report.arrival} ({how}), "
            f"{report.rows:,} rows in {len(report.snapshots)} snapshot(s)",
            markup=False,
        )
        grid = RichTable("snapshot", "committed", "files", "rows", "events", "late (min .. max)")
        if report.exact:
            grid.add_column("p50 / p90 / p99")
        for s in report.snapshots:
            committed = dt.datetime.fromtimestamp(s.timestamp_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
            row = [
                str(s.snapshot_id),
                committed,
                str(s.files),
                f"{s.rows:,}",
                f"{s.event_min} .. {s.event_max}",
                f"{_days(s.lateness_min_s)} .. {_days(s.lateness_max_s)}",
            ]
            if report.exact:
                row.append(f"{_days(s.p50_s)} / {_days(s.p90_s)} / {_days(s.p99_s)}")
            grid.add_row(*row)
        console.print(grid)
        spread = ", ".join(f"{name} {rows:,}" for name, rows in report.distribution.items() if rows)
        console.print(f"distribution: {spread or 'no rows'}", markup=False)
        if report.uncertain_rows:
            console.print(
                f"uncertain: {report.uncertain_rows:,} rows in files whose bounds span buckets "
                "(--exact counts them)",
                markup=False,
            )
        if report.percentiles:
            p = report.percentiles
            console.print(
                f"lateness p50 {_days(p['p50_s'])}, p90 {_days(p['p90_s'])}, p99 {_days(p['p99_s'])}, "
                f"max {_days(p['max_s'])}",
                markup=False,
            )
        for window in report.windows:
            missed = f"{window.rows_missed:,}"
            if window.rows_missed_max != window.rows_missed:
                missed += f" to {window.rows_missed_max:,}"
            share = f" ({window.rows_missed / report.rows:.3%})" if report.rows else ""
            console.print(f"a lookback of {window.name} would miss {missed} rows{share}", markup=False)

    out.result(payload, render)


__all__ = ["lateness"]
