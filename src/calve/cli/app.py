"""The `calve` command line: thin commands over the library, text for people, --json for scripts."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pyiceberg.catalog import Catalog
from rich.console import Console
from rich.table import Table as RichTable

from calve import __version__
from calve.capture.changelog import compute_changelog
from calve.capture.changes import ChangeSet, capture_changes
from calve.capture.icdc import create_icdc_table
from calve.capture.ranges import change_ranges
from calve.catalog import load_table, open_catalog
from calve.cli.output import Output, human_bytes
from calve.errors import CalveError
from calve.state import StateStore

if TYPE_CHECKING:
    from calve.project import Project

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """What every command may need, loaded on first use: the project, its catalog and state store.

    Inside a project (a calve.yaml here or above, or --project), the catalog and state store are the
    project's; elsewhere, the embedded default in ./.calve (or $CALVE_HOME), or --catalog.
    """

    def __init__(self, catalog_name: str | None, project_dir: Path | None) -> None:
        self.catalog_name = catalog_name
        self.project_dir = project_dir
        self._catalog: Catalog | None = None

    @functools.cached_property
    def project_root(self) -> Path | None:
        from calve.project import find_project

        return self.project_dir.resolve() if self.project_dir is not None else find_project()

    @functools.cached_property
    def project(self) -> Project:
        from calve.project import open_project

        return open_project(self.project_root, self.catalog_name)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            if self.project_root is not None:
                self._catalog = self.project.catalog
            else:
                self._catalog = open_catalog(self.catalog_name)
        return self._catalog

    @property
    def state(self) -> StateStore:
        return self.project.state if self.project_root is not None else StateStore()


def json_option(func: F) -> F:
    return click.option("--json", "json_mode", is_flag=True, help="Print one JSON object (for scripts).")(
        func
    )


def handle_errors(func: F) -> F:
    """Turn calve's errors into one clear line and exit code 1; no traceback for expected errors."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = Output(kwargs.get("json_mode", False))
        try:
            return func(*args, out=out, **kwargs)
        except CalveError as exc:
            out.error(str(exc))
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--catalog",
    "catalog_name",
    envvar="CALVE_CATALOG",
    metavar="NAME",
    help="A catalog from the pyiceberg configuration (.pyiceberg.yaml or PYICEBERG_CATALOG__NAME__* "
    "variables). Default: the project's (calve.yaml), else the embedded SQLite catalog and warehouse "
    "in ./.calve/ (or $CALVE_HOME).",
)
@click.option(
    "--project",
    "project_dir",
    envvar="CALVE_PROJECT",
    type=click.Path(file_okay=False, path_type=Path),
    help="The project folder (with calve.yaml). Default: the nearest one at or above the current folder.",
)
@click.version_option(__version__, prog_name="calve")
@click.pass_context
def cli(ctx: click.Context, catalog_name: str | None, project_dir: Path | None) -> None:
    """calve: incremental processing for Apache Iceberg tables.

    calve reads what changed in a table between two snapshots from Iceberg metadata alone, publishes
    it as a zero-copy ICDC table, and lets consumers commit their output together with their
    checkpoint, so that each change is processed exactly once.

    \b
    Start here:
      calve demo                          the playback pipeline, lookback vs calve, side by side
      calve init my_project               a project: calve.yaml, workflows/, embedded warehouse
      calve validate                      check every workflow file before anything runs
      calve run daily_views               run a workflow once, now
      calve runs                          what ran, with status, timings and rows
      calve scheduler                     run workflows when their triggers fire
      calve changes db.events --since 42 --ranges event_time --json
      calve compact db.events             fold small files, invisible to consumers
    """
    ctx.obj = Context(catalog_name, project_dir)


def _snapshot_id(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a snapshot id (an integer; see `calve snapshots TABLE`)"
        ) from None


def _resolve_since(ctx: Context, table_name: str, since: str | None, consumer: str | None) -> int | None:
    if since is not None and consumer is not None:
        raise click.UsageError("give --since or --consumer, not both")
    if consumer is None:
        return _snapshot_id(since)
    from calve.write.consumer import Consumer

    records = [r for r in ctx.state.checkpoints(consumer) if r.source_table == table_name]
    if not records:
        raise CalveError(
            f"consumer {consumer!r} has committed no checkpoint for {table_name}; list consumers with "
            "`calve consumers`, or give --since SNAPSHOT_ID"
        )
    source = load_table(ctx.catalog, table_name)
    target = load_table(ctx.catalog, records[0].target_table)
    checkpoint = Consumer(ctx.catalog, consumer).checkpoint(target, source)  # Iceberg is the truth
    return checkpoint.snapshot_id if checkpoint else None


@cli.command()
@click.argument("table")
@click.option("--since", metavar="SNAPSHOT_ID", help="Exclusive start. Default: the whole history.")
@click.option("--consumer", metavar="NAME", help="Start at this consumer's checkpoint for TABLE.")
@click.option("--until", metavar="SNAPSHOT_ID", help="Inclusive end. Default: the current snapshot.")
@click.option("--ranges", "ranges", metavar="COL,...", help="Min/max of these columns from manifest bounds.")
@click.option(
    "--changelog", is_flag=True, help="Also compute the rows inserted and deleted (reads touched files)."
)
@click.option(
    "--changelog-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the changelog rows, with a _change_type column, to this Parquet file (implies --changelog).",
)
@click.option("--files/--no-files", default=True, help="List the files in text output.")
@json_option
@click.pass_obj
@handle_errors
def changes(
    ctx: Context,
    table: str,
    since: str | None,
    consumer: str | None,
    until: str | None,
    ranges: str | None,
    changelog: bool,
    changelog_out: Path | None,
    files: bool,
    json_mode: bool,
    out: Output,
) -> None:
    """Show what changed in TABLE between two snapshots, from metadata alone.

    Each snapshot after --since up to --until is classified by operation (append, overwrite,
    delete, replace); its added and removed files are listed with their record counts and sizes.
    Compaction (replace) is never counted as a change.

    \b
    Examples:
      calve changes db.events --since 5023 --ranges event_time,account_id
      calve changes db.events --consumer daily_rollup --json
      calve changes db.events --since 5023 --changelog-out changes.parquet
    """
    source = load_table(ctx.catalog, table)
    change_set = capture_changes(source, _resolve_since(ctx, table, since, consumer), _snapshot_id(until))
    payload = change_set.to_dict()
    columns = [c.strip() for c in ranges.split(",") if c.strip()] if ranges else []
    column_ranges = change_ranges(change_set, source.schema(), columns)
    payload["ranges"] = {name: r.to_dict() for name, r in column_ranges.items()}
    if changelog or changelog_out:
        log = compute_changelog(source, change_set)
        payload["changelog"] = log.to_dict()
        if changelog_out:
            import pyarrow.parquet as pq

            pq.write_table(log.to_arrow(), changelog_out)
            payload["changelog"]["path"] = str(changelog_out)

    def render(console: Console) -> None:
        _render_change_set(console, change_set, files)
        for name, r in column_ranges.items():
            notes = []
            if not r.complete:
                notes.append(f"{r.files_without_bounds} file(s) without bounds: the range may be wider")
            if r.truncated:
                notes.append("bounds may be truncated prefixes: max is an over-estimate")
            note = f"  [yellow]({'; '.join(notes)})[/yellow]" if notes else ""
            console.print(f"range [bold]{name}[/bold]: {r.to_dict()['min']} .. {r.to_dict()['max']}{note}")
        if "changelog" in payload:
            log_info = payload["changelog"]
            console.print(f"changelog: {log_info['inserted']} row(s) inserted, {log_info['deleted']} deleted")
            if changelog_out:
                console.print(f"wrote {changelog_out}")

    out.result(payload, render)


def _render_change_set(console: Console, change_set: ChangeSet, list_files: bool) -> None:
    console.print(
        f"[bold]{change_set.table}[/bold]: snapshots after "
        f"{change_set.from_snapshot_id_exclusive or 'the start'} "
        f"up to {change_set.to_snapshot_id_inclusive}"
    )
    if not change_set.snapshots:
        console.print("no new snapshots")
        return
    grid = RichTable(
        "snapshot", "operation", "+files", "-files", "+records", "-records", "+deletes", "-deletes"
    )
    for s in change_set.snapshots:
        style = "dim" if not s.is_logical_change else None
        grid.add_row(
            str(s.snapshot_id),
            s.operation.value + (" (no change)" if not s.is_logical_change else ""),
            str(len(s.added_files)),
            str(len(s.removed_files)),
            str(s.added_records),
            str(s.removed_records),
            str(len(s.added_delete_files)),
            str(len(s.removed_delete_files)),
            style=style,
        )
    console.print(grid)
    added, removed = change_set.added_files, change_set.removed_files
    console.print(
        f"net: {len(added)} file(s) added ({change_set.added_records} records, "
        f"{human_bytes(sum(f.file_size_in_bytes for f in added))}), {len(removed)} removed "
        f"({change_set.removed_records} records)"
    )
    if not change_set.is_append_only:
        console.print(
            "[yellow]row-level changes (overwrite/delete): "
            "use --changelog for the rows inserted and deleted[/yellow]"
        )
    if list_files:
        for sign, group in (("+", added), ("-", removed)):
            for f in group:
                part = ", ".join(f"{k}={v}" for k, v in f.partition.items())
                console.print(
                    f"  {sign} {f.path}  {f.record_count} rows  {human_bytes(f.file_size_in_bytes)}  {part}"
                )


@cli.command()
@click.argument("table")
@click.option("--since", metavar="SNAPSHOT_ID", help="Exclusive start. Default: the whole history.")
@click.option("--until", metavar="SNAPSHOT_ID", help="Inclusive end. Default: the current snapshot.")
@click.option(
    "--name",
    metavar="NAMESPACE.NAME",
    help="The ICDC table to create or replace. Default: calve_icdc.<ns>__<table>.",
)
@click.option(
    "--appends-only",
    is_flag=True,
    help="Publish the appended files even if the range has overwrites/deletes.",
)
@json_option
@click.pass_obj
@handle_errors
def icdc(
    ctx: Context,
    table: str,
    since: str | None,
    until: str | None,
    name: str | None,
    appends_only: bool,
    json_mode: bool,
    out: Output,
) -> None:
    """Publish the files appended to TABLE in a range as a zero-copy ICDC table.

    The ICDC table is a real Iceberg table (any Iceberg reader can open its metadata file) whose
    one snapshot references exactly the data files that the range's append snapshots added. No
    data file is read, copied or written; the source keeps owning its files (gc.enabled=false).

    \b
    Examples:
      calve icdc db.events --since 5023
      calve icdc db.events --since 5023 --name scratch.events_changes --json
    """
    source = load_table(ctx.catalog, table)
    change_set = capture_changes(source, _snapshot_id(since), _snapshot_id(until))
    result = create_icdc_table(ctx.catalog, source, change_set, name, appends_only=appends_only)

    def render(console: Console) -> None:
        console.print(
            f"[bold]{result.identifier}[/bold]: {result.files} file(s), {result.records} records, "
            f"{human_bytes(result.bytes)} referenced (0 bytes copied)"
        )
        console.print(f"metadata: {result.metadata_location}")
        if not result.complete:
            console.print(
                f"[yellow]incomplete: snapshots {list(result.row_level_snapshot_ids)} changed rows in place "
                "and are not in the ICDC table; see `calve changes --changelog`[/yellow]"
            )

    out.result(result.to_dict(), render)


@cli.command()
@click.argument("table")
@click.option(
    "--small-file-size",
    "small",
    default="32MiB",
    show_default=True,
    metavar="SIZE",
    help="Files below this size (and files with delete files) are compacted, as in 8MiB or 500KB.",
)
@click.option(
    "--min-files", default=4, show_default=True, help="Compact a partition only with at least this many."
)
@json_option
@click.pass_obj
@handle_errors
def compact(ctx: Context, table: str, small: str, min_files: int, json_mode: bool, out: Output) -> None:
    """Fold each partition's small files of TABLE into one, as a `replace` snapshot.

    Incremental pipelines add a small file to every partition that late data touches; readers then
    open more and more files. Compaction rewrites the live rows of a partition's small files (and of
    files with position deletes, which it applies) into one file. The snapshot is a `replace`:
    no rows change, so change capture ignores it and no consumer reprocesses anything.

    \b
    Examples:
      calve compact playback.daily_calve --small-file-size 1MiB --min-files 8
      calve compact db.events --json
    """
    from calve.workflows.values import parse_size
    from calve.write.compaction import compact as compact_table

    try:
        small_bytes = parse_size(small)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--small-file-size") from None
    result = compact_table(load_table(ctx.catalog, table), small_bytes, min_files)

    def render(console: Console) -> None:
        if not result.partitions:
            console.print(f"{table}: nothing to compact (no partition has {min_files} small files)")
            return
        console.print(
            f"{table}: {result.partitions} partition(s), {result.files_removed} files folded into "
            f"{result.files_written} ({result.rows:,} rows, {human_bytes(result.bytes_read)} read), "
            f"replace snapshot {result.snapshot_id}"
        )

    out.result(result.to_dict(), render)


@cli.command()
@click.argument("table")
@click.option("--limit", default=50, show_default=True, help="Show at most this many, newest first.")
@json_option
@click.pass_obj
@handle_errors
def snapshots(ctx: Context, table: str, limit: int, json_mode: bool, out: Output) -> None:
    """List TABLE's snapshots on its current line of ancestry, newest first."""
    source = load_table(ctx.catalog, table)
    by_id = {s.snapshot_id: s for s in source.metadata.snapshots}
    rows: list[dict[str, Any]] = []
    snapshot = source.current_snapshot()
    while snapshot is not None and len(rows) < limit:
        summary = snapshot.summary
        rows.append(
            {
                "snapshot_id": snapshot.snapshot_id,
                "parent_snapshot_id": snapshot.parent_snapshot_id,
                "timestamp_ms": snapshot.timestamp_ms,
                "operation": summary.operation.value if summary else None,
                "added_records": int(summary.get("added-records") or 0) if summary else 0,
                "deleted_records": int(summary.get("deleted-records") or 0) if summary else 0,
                "total_records": int(summary.get("total-records") or 0) if summary else 0,
            }
        )
        snapshot = by_id.get(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id is not None else None

    def render(console: Console) -> None:
        grid = RichTable("snapshot", "parent", "operation", "+records", "-records", "total")
        for r in rows:
            grid.add_row(
                str(r["snapshot_id"]),
                str(r["parent_snapshot_id"] or ""),
                str(r["operation"]),
                str(r["added_records"]),
                str(r["deleted_records"]),
                str(r["total_records"]),
            )
        console.print(grid)

    out.result({"table": table, "snapshots": rows}, render)


@cli.command()
@click.argument("name", required=False)
@json_option
@click.pass_obj
@handle_errors
def consumers(ctx: Context, name: str | None, json_mode: bool, out: Output) -> None:
    """List consumers and their checkpoints (from the state store's mirror of the Iceberg commits)."""
    records = ctx.state.checkpoints(name)

    def render(console: Console) -> None:
        if not records:
            console.print("no consumer has committed yet")
            return
        grid = RichTable("consumer", "source", "checkpoint snapshot", "target", "target snapshot")
        for r in records:
            grid.add_row(
                r.consumer, r.source_table, str(r.snapshot_id), r.target_table, str(r.target_snapshot_id)
            )
        console.print(grid)

    out.result({"consumers": [r.to_dict() for r in records]}, render)


@cli.command()
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
    stage_1, stage_2 = report["stages"]["daily"]["cpu_ratio"], report["stages"]["agg"]["cpu_ratio"]
    console.print(
        f"calve used {report['cpu_ratio']:.0%} of the lookback's CPU time "
        f"(stage 1 {stage_1:.0%}, stage 2 {stage_2:.0%}) and read {report['bytes_read_ratio']:.0%} "
        "of its bytes."
    )


from calve.cli import workflow_commands  # noqa: E402  (registers the workflow commands on `cli`)

del workflow_commands


def main() -> None:
    cli(prog_name="calve")


if __name__ == "__main__":  # run as a script, this file is not calve.cli.app: use the real module
    from calve.cli.app import main as _main

    _main()
