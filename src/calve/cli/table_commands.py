"""Table commands: changes, icdc, compact, maintain, orphans, snapshots, consumers — thin commands
over calve's capture and write modules.

Each command imports pyiceberg, pyarrow and calve's capture modules when it runs, not when the
command line is parsed: `calve --help` lists these commands without loading any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from calve.cli.context import Context, handle_errors, json_option
from calve.cli.output import Output, human_bytes
from calve.errors import CalveError

if TYPE_CHECKING:
    from rich.console import Console

    from calve.capture.changes import ChangeSet


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
    from calve.catalog import load_table
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


@click.command()
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
    from calve.capture.changelog import compute_changelog
    from calve.capture.changes import capture_changes
    from calve.capture.ranges import change_ranges
    from calve.catalog import load_table

    source = load_table(ctx.catalog, table)
    change_set = capture_changes(source, _resolve_since(ctx, table, since, consumer), _snapshot_id(until))
    payload = change_set.to_dict()
    columns = [c.strip() for c in ranges.split(",") if c.strip()] if ranges else []
    column_ranges = change_ranges(change_set, source.schema(), columns, table=source)
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
    from rich.table import Table as RichTable

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


@click.command()
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
    from calve.capture.changes import capture_changes
    from calve.capture.icdc import create_icdc_table
    from calve.catalog import load_table

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


@click.command()
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
    from calve.catalog import load_table
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


@click.command()
@click.argument("table")
@click.option("--compact", "do_compact", is_flag=True, help="Compact small files and fold position deletes.")
@click.option(
    "--rewrite-manifests", is_flag=True, help="Rewrite manifests (not supported by pyiceberg 0.12)."
)
@click.option(
    "--expire-older-than",
    metavar="DURATION",
    help="Expire snapshots that stopped being current this long ago, as in 7d. Implies expiry.",
)
@click.option(
    "--retain-last", type=click.IntRange(min=1), metavar="N", help="Always keep the last N. Implies expiry."
)
@click.option("--dry-run", is_flag=True, help="Plan and report; commit nothing.")
@json_option
@click.pass_obj
@handle_errors
def maintain(
    ctx: Context,
    table: str,
    do_compact: bool,
    rewrite_manifests: bool,
    expire_older_than: str | None,
    retain_last: int | None,
    dry_run: bool,
    json_mode: bool,
    out: Output,
) -> None:
    """Maintain TABLE off the hot path: compaction, then snapshot expiry.

    With no action flag, does all that the project's `maintenance:` policy (calve.yaml) enables,
    with its thresholds (defaults without one: compact partitions with 4 small files or any delete
    file; expire snapshots that stopped being current 7 days ago, keeping the last one). Compaction
    commits a `replace`, which consumers never see as a change. Expiry never removes the current
    snapshot, a branch or tag head, or any snapshot a consumer's checkpoint still needs.

    \b
    Examples:
      calve maintain db.events --dry-run
      calve maintain db.events --expire-older-than 3d --retain-last 5 --json
      calve maintain db.events --compact
    """
    from calve.workflows.values import parse_duration
    from calve.write.maintenance import maintain as maintain_table

    older_than_s = None
    if expire_older_than is not None:
        try:
            older_than_s = parse_duration(expire_older_than)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--expire-older-than") from None
    expire_asked = older_than_s is not None or retain_last is not None
    everything = not (do_compact or rewrite_manifests or expire_asked)
    policy = ctx.project.settings.maintenance if ctx.project_root is not None else None
    result = maintain_table(
        ctx.catalog,
        table,
        policy,
        compact_files=None if everything else do_compact,
        rewrite_manifests=everything or rewrite_manifests,
        expire=None if everything else expire_asked,
        expire_older_than_s=older_than_s,
        retain_last=retain_last,
        dry_run=dry_run,
    )

    def render(console: Console) -> None:
        would = "would be " if dry_run else ""
        c = result.compaction
        if c is not None:
            if not c.partitions and not c.delete_files_removed:
                console.print(
                    f"{table}: nothing to compact ({c.data_files_before} data files, "
                    f"{c.delete_files_before} delete files)"
                )
            else:
                console.print(
                    f"{table}: {c.partitions} partition(s), {c.files_removed} data file(s) "
                    f"{would}folded into {c.files_written if not dry_run else 'fewer'}, "
                    f"{c.delete_files_removed} delete file(s) {would}removed "
                    f"({human_bytes(c.bytes_read)} read)"
                    + (f", replace snapshot {c.snapshot_id}" if c.snapshot_id else "")
                )
        e = result.expiry
        if e is not None:
            console.print(f"{table}: {len(e.expired)} of {e.snapshots_before} snapshot(s) {would}expired")
            for kept in e.kept:
                console.print(f"  {kept.describe()}")
            for warning in e.warnings:
                console.print(f"  [yellow]{warning}[/yellow]")
        if result.manifests:
            console.print(f"{table}: manifests {result.manifests}")
        if result.error:
            console.print(f"[red]{result.error}[/red]")

    out.result(result.to_dict(), render)
    if result.error:
        raise SystemExit(1)


@click.command()
@click.argument("table")
@click.option(
    "--older-than",
    default="3d",
    show_default=True,
    metavar="DURATION",
    help="Only files older than this (a younger one may belong to a commit in flight).",
)
@click.option("--delete", is_flag=True, help="Delete them (without it, only list them).")
@click.option(
    "--force", is_flag=True, help="Accept an --older-than under one hour (no run may be in flight)."
)
@json_option
@click.pass_obj
@handle_errors
def orphans(
    ctx: Context, table: str, older_than: str, delete: bool, force: bool, json_mode: bool, out: Output
) -> None:
    """List (or with --delete, delete) TABLE's orphan files: data files no snapshot lists.

    A run killed after its data files were written and before its commit leaves them (the Daft and
    Ray engines' workers write a step's files before the driver commits them). No reader sees them;
    they only take space. A file listed by any snapshot of TABLE, or of another table of the catalog
    (an ICDC table lists its source's files), is never an orphan. Keep --older-than longer than your
    longest run. Local file systems only.

    \b
    Examples:
      calve orphans db.daily
      calve orphans db.daily --older-than 7d --delete --json
      calve orphans db.daily --older-than 0s --delete --force   # nothing runs: all of them
    """
    from calve.workflows.values import parse_duration
    from calve.write.orphans import remove_orphan_files

    try:
        older_than_s = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    if older_than_s < 3600 and delete and not force:
        raise click.BadParameter(
            f"{older_than} is under one hour: a file that young may belong to a run that has not "
            "committed yet; pass --force if no run of any workflow writing this table is in flight",
            param_hint="--older-than",
        )
    found = remove_orphan_files(ctx.catalog, table, older_than_s, dry_run=not delete)

    def render(console: Console) -> None:
        verb = "deleted" if found.deleted else "found"
        console.print(
            f"{table}: {len(found.files)} orphan file(s) {verb} ({human_bytes(found.bytes)}) in "
            f"{found.folder}; {found.referenced} file(s) referenced; {found.young} unreferenced file(s) "
            f"younger than {older_than} kept"
        )
        for path in found.files:
            console.print(f"  {path}")
        if found.files and not found.deleted:
            console.print("pass --delete to delete them")

    out.result(found.to_dict(), render)


@click.command()
@click.argument("table")
@click.option("--limit", default=50, show_default=True, help="Show at most this many, newest first.")
@json_option
@click.pass_obj
@handle_errors
def snapshots(ctx: Context, table: str, limit: int, json_mode: bool, out: Output) -> None:
    """List TABLE's snapshots on its current line of ancestry, newest first."""
    from rich.table import Table as RichTable

    from calve.catalog import load_table

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


@click.command()
@click.argument("name", required=False)
@json_option
@click.pass_obj
@handle_errors
def consumers(ctx: Context, name: str | None, json_mode: bool, out: Output) -> None:
    """List consumers and their checkpoints (from the state store's mirror of the Iceberg commits)."""
    from rich.table import Table as RichTable

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
