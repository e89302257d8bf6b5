"""Backfill commands: backfill (plan, run, resume), backfills (list, show), status (stale ranges).

The workflow layer is imported when a command runs, not when the command line is parsed.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from calve.cli.context import Context, handle_errors, json_option
from calve.cli.output import Output
from calve.errors import CalveError

if TYPE_CHECKING:
    from rich.console import Console

    from calve.workflows.backfill import Backfiller, BackfillPlan

STATUS_STYLE = {
    "succeeded": "green",
    "unchanged": "dim",
    "failed": "red",
    "running": "cyan",
    "queued": "cyan",
}


def _backfiller(ctx: Context, out: Output) -> Backfiller:
    from calve.workflows.backfill import Backfiller
    from calve.workflows.runner import Runner

    project = ctx.project
    return Backfiller(Runner.for_project(project, progress=out.progress), project.workflows(), out.progress)


@click.command()
@click.argument("workflow", required=False)
@click.option("--from", "start", metavar="START", help="First value of the range (a date: 2026-11-01).")
@click.option(
    "--to",
    "end",
    metavar="END",
    help="Last value (inclusive for dates and integers; exclusive for timestamps).",
)
@click.option(
    "--step",
    "steps",
    multiple=True,
    metavar="STEP",
    help="Backfill only this step (repeatable). Default: every step with an output.",
)
@click.option(
    "--chunk",
    metavar="SIZE",
    help="Chunk size: 1d (default), 7d, 2w, 6h; a number of values for an integer column.",
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A param of the workflow for every chunk (repeatable). Default: the params' defaults.",
)
@click.option(
    "--column", metavar="COLUMN", help="The range column. Default: the column the outputs are partitioned by."
)
@click.option("--plan", "plan_only", is_flag=True, help="Show what the backfill would do, and run nothing.")
@click.option(
    "--propagate",
    is_flag=True,
    help="After each chunk, run the downstream workflows until nothing is pending.",
)
@click.option(
    "--resume",
    "resume_id",
    metavar="BACKFILL_ID",
    help="Resume a failed or killed backfill at its first unfinished chunk.",
)
@click.option(
    "--throttle",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds to pause between chunks (lets scheduled runs take the lock).",
)
@click.option("--yes", "-y", is_flag=True, help="Run without asking for confirmation (for scripts).")
@json_option
@click.pass_obj
@handle_errors
def backfill(
    ctx: Context,
    workflow: str | None,
    start: str | None,
    end: str | None,
    steps: tuple[str, ...],
    chunk: str | None,
    params: tuple[str, ...],
    column: str | None,
    plan_only: bool,
    propagate: bool,
    resume_id: str | None,
    throttle: float,
    yes: bool,
    json_mode: bool,
    out: Output,
) -> None:
    """Recompute WORKFLOW's outputs over a range with its current logic, chunk by chunk.

    Each chunk (a day by default) is recomputed from the inputs' rows of that range and committed as
    one overwrite of that range of each output table, marked in the snapshot summary with the
    backfill's id, chunk and workflow version. A chunk whose rows come out equal to what the table
    holds commits nothing. Chunks take the workflow's run lock one at a time, so scheduled runs go on
    between them. Downstream workflows see the rewrite as changes of their incremental inputs (only
    the rows that changed); --propagate runs them after each chunk, else their triggers do.

    The plan is shown first, with the tables rewritten, the downstream workflows and the estimated
    rows and files (from manifest statistics); --plan stops there, --yes skips the question.
    A killed or failed backfill resumes with --resume ID at its first unfinished chunk.

    \b
    Examples:
      calve backfill daily_views --from 2026-10-01 --to 2026-10-07 --plan
      calve backfill daily_views --from 2026-10-01 --to 2026-10-31 --chunk 7d --propagate --yes
      calve backfill daily_views --from 2026-10-01 --to 2026-10-07 --step clean --json --yes
      calve backfill --resume bf-20261129T120000-3fa2c1
    """
    backfiller = _backfiller(ctx, out)
    if resume_id is not None:
        if workflow or start or end or steps or chunk or column or propagate or params:
            raise click.UsageError("--resume takes only the backfill id: its range and options are recorded")
        record = backfiller.log.get(resume_id)
        if record is None:
            raise CalveError(f"no backfill {resume_id!r}; list them with `calve backfills`")
        _run(backfiller, resume_id, throttle, out)
        return
    if not workflow or not start or not end:
        raise click.UsageError("give WORKFLOW, --from and --to (or --resume BACKFILL_ID)")
    from calve.cli.workflow_commands import parse_params
    from calve.workflows.backfill import plan_backfill

    given = parse_params(params)
    plan = plan_backfill(
        backfiller.runner,
        backfiller.workflows,
        workflow,
        start,
        end,
        steps=steps,
        chunk=chunk,
        column=column,
        params=given,
    )
    payload = {**plan.to_dict(), "params": given}
    if plan_only:
        out.result({"plan": payload}, lambda console: _render_plan(console, plan))
        return
    if not yes:
        if json_mode or not sys.stdin.isatty():
            raise click.UsageError("a backfill rewrites tables: pass --yes to run it without confirmation")
        _render_plan(out.err, plan)
        click.confirm(
            f"Run this backfill of {plan.workflow.id} ({len(plan.chunks)} chunks)?", abort=True, err=True
        )
    record = backfiller.start(plan, propagate=propagate, params=given)
    out.progress(f"backfill {record.backfill_id}: {len(plan.chunks)} chunk(s) of {plan.column}")
    _run(backfiller, record.backfill_id, throttle, out)


def _run(backfiller: Backfiller, backfill_id: str, throttle: float, out: Output) -> None:
    chunks = backfiller.log.chunks(backfill_id)
    if out.json_mode or not out.err.is_terminal:  # progress lines only (CI logs, pipes)
        result = backfiller.run(backfill_id, throttle_s=throttle)
    else:  # a progress bar of the chunks on the terminal, under the progress lines
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("chunks"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=out.err, transient=True) as bar:
            task = bar.add_task("chunks", total=len(chunks), completed=sum(c.status.done for c in chunks))
            result = backfiller.run(backfill_id, throttle_s=throttle, on_chunk=lambda _: bar.advance(task))
    payload = result.to_dict()
    out.result(payload, lambda console: _render_backfill(console, payload))
    if result.record.status.value == "failed":
        sys.exit(1)


@click.command()
@click.argument("backfill_id", required=False)
@click.option("--workflow", metavar="WORKFLOW", help="Only backfills of this workflow.")
@click.option("--limit", default=20, show_default=True, help="List at most this many, newest first.")
@json_option
@click.pass_obj
@handle_errors
def backfills(
    ctx: Context, backfill_id: str | None, workflow: str | None, limit: int, json_mode: bool, out: Output
) -> None:
    """List backfills with their progress, or show one (BACKFILL_ID) chunk by chunk.

    \b
    Examples:
      calve backfills
      calve backfills bf-20261129T120000-3fa2c1 --json
    """
    from calve.state.backfills import BackfillLog

    log = BackfillLog(ctx.project.state)
    if backfill_id is not None:
        record = log.get(backfill_id)
        if record is None:
            raise CalveError(f"no backfill {backfill_id!r}; list them with `calve backfills`")
        payload = {**record.to_dict(), "chunks": [c.to_dict() for c in log.chunks(backfill_id)]}
        out.result(payload, lambda console: _render_backfill(console, payload))
        return
    rows = []
    for record in log.backfills(workflow, limit=limit):
        chunks = log.chunks(record.backfill_id)
        done = sum(1 for c in chunks if c.status.done)
        rows.append({**record.to_dict(), "chunks_done": done, "chunks_total": len(chunks)})

    def render(console: Console) -> None:
        from rich.table import Table as RichTable

        if not rows:
            console.print("no backfills recorded")
            return
        grid = RichTable("backfill", "workflow", "steps", "range", "chunks", "status", "error")
        for r in rows:
            grid.add_row(
                r["backfill_id"],
                r["workflow"],
                ", ".join(r["steps"]),
                f"{r['range_column']} {r['range_from']}..{r['range_to']}",
                f"{r['chunks_done']}/{r['chunks_total']}",
                f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]",
                (r["error"] or "")[:80],
            )
        console.print(grid)

    out.result({"backfills": rows}, render)


@click.command()
@click.argument("workflow", required=False)
@json_option
@click.pass_obj
@handle_errors
def status(ctx: Context, workflow: str | None, json_mode: bool, out: Output) -> None:
    """Which ranges of each output were built by an older version of its workflow, and the fix.

    Every commit records the workflow's version (a hash of its files) and the range of the range
    column it wrote. A range whose rows were last rebuilt, or touched since, by another version than
    the current one is listed with the `calve backfill` command that recomputes it.

    \b
    Examples:
      calve status
      calve status daily_views --json
    """
    from calve.state.backfills import BackfillLog
    from calve.workflows.versions import declared_range_column, encode, range_kind, stale_ranges

    project = ctx.project
    log = BackfillLog(project.state)
    workflows = project.workflows()
    chosen = [project.workflow(workflow)] if workflow else list(workflows.values())
    report: list[dict[str, Any]] = []
    for spec in chosen:
        steps = []
        for step in spec.steps:
            if step.output is None:
                continue
            entry: dict[str, Any] = {"step": step.id, "table": step.output.table, "stale": []}
            column = declared_range_column(step)
            if column is None:
                entry["note"] = "no range column (partition the output by one to track versions by range)"
                steps.append(entry)
                continue
            try:
                schema = project.catalog.load_table(step.output.table).schema().as_arrow()
            except Exception:
                entry["note"] = "not created yet"
                steps.append(entry)
                continue
            kind = range_kind(schema.field(column).type) if column in schema.names else None
            if kind is None:
                entry["note"] = f"range column {column!r} is not a date, timestamp or integer column"
                steps.append(entry)
                continue
            for stale in stale_ranges(log.commits(spec.id, step.id), spec.version, kind):
                item = stale.to_dict()
                item["command"] = (
                    f"calve backfill {spec.id} --step {step.id} --from {encode(stale.low)} "
                    f"--to {encode(stale.high)}"
                )
                entry["stale"].append(item)
            steps.append(entry)
        report.append({"workflow": spec.id, "version": spec.version, "steps": steps})

    def render(console: Console) -> None:
        for w in report:
            console.print(f"[bold]{w['workflow']}[/] (version {w['version']})")
            for s in w["steps"]:
                if s.get("note"):
                    console.print(f"  {s['step']} -> {s['table']}: {s['note']}")
                elif not s["stale"]:
                    console.print(f"  {s['step']} -> {s['table']}: [green]up to date[/]")
                for stale in s["stale"]:
                    older = ", ".join(v for v in stale["versions"] if v != w["version"])
                    console.print(
                        f"  {s['step']} -> {s['table']}: [yellow]{stale['column']} "
                        f"{stale['from']}..{stale['to']}[/] built by version {older}; bring it up to "
                        f"date:\n    {stale['command']}"
                    )

    out.result({"workflows": report}, render)


def _render_plan(console: Console, plan: BackfillPlan) -> None:
    console.print(
        f"[bold]backfill {plan.workflow.id}[/] (version {plan.workflow.version}): {plan.column} "
        f"{plan.to_dict()['from']}..{plan.to_dict()['to']} in {len(plan.chunks)} chunk(s) of {plan.chunk}"
    )
    for stage in plan.stages:
        target = stage.target
        console.print(
            f"  step {stage.step}: rewrites {target.table} in the range "
            f"({target.rows} rows in {target.files} files now)"
        )
        for alias, read in stage.inputs.items():
            scope = "in the range" if read.ranged else f"whole (no column {plan.column})"
            console.print(
                f"    reads {alias} = {read.table} {scope}: ~{read.rows} rows in {read.files} files"
            )
    if not plan.downstream:
        console.print("  downstream: no workflow reads these tables")
    for d in plan.downstream:
        targets = "; ".join(
            f"{t.table} ({t.rows} rows in {t.files} files in the range)" if t.ranged else f"{t.table} (whole)"
            for t in d.targets
        )
        console.print(
            f"  downstream: {d.workflow} (steps {', '.join(d.steps)}) reads {', '.join(d.reads)} "
            f"incrementally and reprocesses only the rows that change; at most: {targets or 'no output'}"
        )


def _render_backfill(console: Console, payload: dict[str, Any]) -> None:
    from rich.table import Table as RichTable

    style = STATUS_STYLE.get(payload["status"], "")
    console.print(
        f"backfill {payload['backfill_id']} of {payload['workflow']} ({', '.join(payload['steps'])}): "
        f"{payload['range_column']} {payload['range_from']}..{payload['range_to']}: "
        f"[{style}]{payload['status']}[/]"
    )
    grid = RichTable("chunk", "range", "status", "steps", "downstream runs", "error")
    for c in payload.get("chunks", []):
        steps = "; ".join(
            f"{s['step']} {s['status']} ({s['rows_before']}->{s['rows_written']} rows)"
            for s in c["metrics"].get("steps", [])
        )
        runs = ", ".join(f"{r['workflow']} {r['status']}" for r in c["metrics"].get("downstream_runs", []))
        grid.add_row(
            str(c["chunk"]),
            f"{c['range_lo']}..{c['range_hi']}",
            f"[{STATUS_STYLE.get(c['status'], '')}]{c['status']}[/]",
            steps,
            runs,
            (c["error"] or "")[:120],
        )
    console.print(grid)
    if payload["status"] == "failed":
        console.print(f"resume with: calve backfill --resume {payload['backfill_id']}")
