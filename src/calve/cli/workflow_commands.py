"""Project and workflow commands: init, validate, workflows, run, runs, scheduler.

The workflow layer (runner, scheduler, state store, engines) is imported when a command runs, not
when the command line is parsed.
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from calve.cli.context import Context, handle_errors, json_option
from calve.cli.output import Output, human_bytes
from calve.errors import CalveError, ProblemsError
from calve.state.records import RunStatus

if TYPE_CHECKING:
    from rich.console import Console

    from calve.workflows.runner import Runner

RUN_STATUSES = tuple(status.value for status in RunStatus)

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "running": "cyan",
    "queued": "cyan",
    "skipped": "dim",
    "cancelled": "yellow",
}


def _runner(ctx: Context, out: Output) -> Runner:
    from calve.workflows.runner import Runner

    project = ctx.project
    return Runner(
        project.catalog,
        project.state,
        project.engine(),
        lock_stale_after_s=project.settings.lock_stale_after_s,
        progress=out.progress,
        python_path=[str(project.root)],
        lookback_days=project.settings.lookback_days,
    )


@click.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--no-example", is_flag=True, help="Do not write the example workflow.")
@json_option
@handle_errors
def init(directory: Path, no_example: bool, json_mode: bool, out: Output) -> None:
    """Create a calve project in DIRECTORY (default: here).

    Writes calve.yaml (the defaults, commented: nothing to edit to get started), a workflows/ folder
    with an example workflow, and the embedded catalog, warehouse and state store in .calve/.

    \b
    Example:
      calve init pipelines && cd pipelines && calve validate
    """
    from calve.project import init_project

    created = init_project(directory, example=not no_example)

    def render(console: Console) -> None:
        console.print(f"created a calve project in [bold]{directory.resolve()}[/bold]:")
        for path in created:
            console.print(f"  {path.relative_to(directory.resolve())}")
        console.print(
            "next: add workflows to workflows/, check them with `calve validate`, run one with "
            "`calve run WORKFLOW`"
        )

    out.result({"project": str(directory.resolve()), "created": [str(p) for p in created]}, render)


@click.command()
@json_option
@click.pass_obj
@handle_errors
def validate(ctx: Context, json_mode: bool, out: Output) -> None:
    """Check calve.yaml and every workflow file, and report every problem at once.

    Each problem names the file and line, the key, what is wrong and how to fix it. Nothing runs and
    nothing is written. Exit code 1 if anything is invalid.
    """
    try:
        project = ctx.project  # reads calve.yaml: its problems are reported like the workflows'
        workflows = project.workflows()
    except ProblemsError as exc:
        if json_mode:
            sys.stdout.write(
                __import__("json").dumps({"valid": False, "problems": exc.problems}, indent=2) + "\n"
            )
        else:
            out.err.print(f"[bold red]{len(exc.problems)} problem(s):[/bold red]")
            for problem in exc.problems:
                out.err.print(f"  {problem}", markup=False)
        sys.exit(1)
    from calve.workflows.strategies import choose

    strategies = {
        w.id: {s.id: choose(s) for s in w.steps if s.strategy is not None} for w in workflows.values()
    }  # from the SQL alone (`calve explain` also reads the input's columns from the catalog)
    engines = {w.id: project.engine_spec(w) for w in workflows.values()}  # its own engine:, or calve.yaml's
    payload = {
        "valid": True,
        "workflows": {
            w.id: {
                "path": str(w.path),
                "version": w.version,
                "steps": [s.id for s in w.steps],
                "engine": {
                    "name": engines[w.id].name,
                    "address": engines[w.id].address,
                    "threads": engines[w.id].threads,
                    "from": "workflow" if w.engine is not None else "calve.yaml",
                },
                "strategies": {
                    step: {"strategy": c.strategy.value, "reason": c.reason}
                    for step, c in strategies[w.id].items()
                },
            }
            for w in workflows.values()
        },
    }

    def render(console: Console) -> None:
        if not workflows:
            console.print(f"no workflow files in {project.settings.workflows}")
        for w in workflows.values():
            console.print(
                f"[green]ok[/green] {w.id} ({w.path.name}): {len(w.steps)} step(s), "
                f"{len(w.triggers)} trigger(s)" + (f", engine {engines[w.id].name}" if w.engine else "")
            )
            for step, choice in strategies[w.id].items():
                console.print(
                    f"  step {step}: strategy {choice.strategy.value}: {choice.reason}", markup=False
                )

    out.result(payload, render)


@click.command()
@click.argument("workflow_id", metavar="WORKFLOW")
@click.argument("step_id", metavar="[STEP]", required=False)
@json_option
@click.pass_obj
@handle_errors
def explain(ctx: Context, workflow_id: str, step_id: str | None, json_mode: bool, out: Output) -> None:
    """Say how each step of WORKFLOW runs: what it reads, how it writes, and for a step with
    `strategy:` which strategy calve takes and why. Nothing runs and nothing is written.

    \b
    Examples:
      calve explain playback_calve
      calve explain playback_calve agg --json
    """
    from calve.workflows.explain import explain_step

    project = ctx.project
    workflow = project.workflow(workflow_id)
    steps = [workflow.step(step_id)] if step_id else list(workflow.steps)
    explained = [explain_step(project.catalog, step) for step in steps]
    engine = project.engine_spec(workflow)  # what runs its SQL: its own engine:, or calve.yaml's
    chosen = "the workflow's engine:" if workflow.engine is not None else "calve.yaml's engine:"
    payload = {"workflow": workflow.id, "engine": engine.name, "steps": explained}

    def render(console: Console) -> None:
        console.print(f"engine: {engine.name} ({chosen})", markup=False)
        for item in explained:
            console.print(f"[bold]{item['step']}[/bold] ({item['kind']}): {item['summary']}", soft_wrap=True)
            for line in item["details"]:
                console.print(f"  {line}", markup=False, soft_wrap=True)

    out.result(payload, render)


@click.command()
@json_option
@click.pass_obj
@handle_errors
def workflows(ctx: Context, json_mode: bool, out: Output) -> None:
    """List the project's workflows: steps, triggers and the last run of each."""
    project = ctx.project
    loaded = project.workflows()
    rows: list[dict[str, Any]] = []
    for w in loaded.values():
        last = project.state.runs(w.id, limit=1)
        rows.append(
            {
                "id": w.id,
                "description": w.description,
                "version": w.version,
                "steps": [s.id for s in w.steps],
                "triggers": [t.key for t in w.triggers],
                "last_run": last[0].to_dict() if last else None,
            }
        )

    def render(console: Console) -> None:
        from rich.table import Table as RichTable

        grid = RichTable("workflow", "steps", "triggers", "last run", "status")
        for r in rows:
            last = r["last_run"]
            status = last["status"] if last else ""
            grid.add_row(
                r["id"],
                " → ".join(r["steps"]),
                ", ".join(r["triggers"]) or "(manual)",
                last["run_id"] if last else "never",
                f"[{STATUS_STYLE.get(status, '')}]{status}[/]" if status else "",
            )
        console.print(grid)

    out.result({"workflows": rows}, render)


def parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    """`--param NAME=VALUE` options as a dict (values parsed later, by the workflow's param types)."""
    params: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        params[name.strip()] = value
    return params


@click.command()
@click.argument("workflow")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A param value (repeatable). Lists: comma-separated, as in days=2026-01-01,2026-01-02.",
)
@click.option(
    "--logical-date", type=click.DateTime(["%Y-%m-%d"]), help="The run's $logical_date. Default: today (UTC)."
)
@click.option(
    "--restart",
    "restart_of",
    metavar="RUN_ID",
    help="Restart a failed run: same params and pinned snapshots, from its first unfinished step.",
)
@json_option
@click.pass_obj
@handle_errors
def run(
    ctx: Context,
    workflow: str,
    params: tuple[str, ...],
    logical_date: dt.datetime | None,
    restart_of: str | None,
    json_mode: bool,
    out: Output,
) -> None:
    """Run WORKFLOW once, now, and record the run.

    Each step reads only what changed in its inputs since its checkpoint (or the whole table, pinned
    at one snapshot for the run), and commits its output together with its checkpoint. Steps with
    nothing pending are skipped. Exit code 1 if the run fails; the failure names the step, the file
    and line of the SQL, and the engine's message. Exit code 1, with nothing recorded, if another run
    of WORKFLOW holds its lock (at most one run per workflow at a time).

    \b
    Examples:
      calve run daily_views
      calve run backfill --param days=2026-01-01,2026-01-02 --json
      calve run daily_views --restart 20261127T101500-3fa2c1
    """
    project = ctx.project
    spec = project.workflow(workflow)
    result = _runner(ctx, out).run(
        spec,
        parse_params(params),
        logical_date=logical_date.date() if logical_date else None,
        restart_of=restart_of,
    )
    assert result is not None
    payload = result.to_dict()

    def render(console: Console) -> None:
        _render_run(console, payload)

    out.result(payload, render)
    if result.status is RunStatus.FAILED:
        sys.exit(1)


@click.command()
@click.argument("args", nargs=-1, metavar="[WORKFLOW] | show RUN_ID | cancel RUN_ID")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    help="List at most this many runs, newest first (the default shows the last 20).",
)
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs with this status.")
@json_option
@click.pass_obj
@handle_errors
def runs(
    ctx: Context, args: tuple[str, ...], limit: int, status: str | None, json_mode: bool, out: Output
) -> None:
    """List recorded runs (of WORKFLOW), show one, or cancel one whose process is gone.

    The list shows the 20 newest runs unless --limit says otherwise. `calve runs cancel RUN_ID` marks
    a queued or running run `cancelled` when the process that ran it is gone (killed, or its host
    stopped heartbeating): the scheduler then leaves it alone instead of restarting it, and
    `calve run WORKFLOW --restart RUN_ID` can still finish it. A run whose process is alive is not
    cancelled: stop that process first.

    \b
    Examples:
      calve runs
      calve runs daily_views --status failed --limit 100
      calve runs show 20261127T101500-3fa2c1 --json
      calve runs cancel 20261127T101500-3fa2c1
    """
    state = ctx.project.state
    state.reap_dead_runs()  # a run whose process is gone shows as failed, not running
    if args and args[0] in ("show", "cancel"):
        if len(args) != 2:
            raise click.UsageError(f"usage: calve runs {args[0]} RUN_ID")
        if args[0] == "cancel":
            _cancel(ctx, args[1], out)
            return
        record = state.run(args[1])
        if record is None:
            raise CalveError(f"no run {args[1]!r}; list runs with `calve runs`")
        payload = {**record.to_dict(), "steps": [s.to_dict() for s in state.step_runs(record.run_id)]}
        out.result(payload, lambda console: _render_run(console, payload))
        return
    if len(args) > 1:
        raise click.UsageError("give at most one WORKFLOW (or: show RUN_ID, cancel RUN_ID)")
    records = state.runs(args[0] if args else None, limit=limit, status=RunStatus(status) if status else None)
    rows = [r.to_dict() for r in records]

    def render(console: Console) -> None:
        from rich.table import Table as RichTable

        if not rows:
            console.print("no runs recorded")
            return
        grid = RichTable("run", "workflow", "trigger", "logical date", "status", "took", "error")
        for r in rows:
            took = (
                f"{r['finished_at'] - r['started_at']:.1f}s" if r["finished_at"] and r["started_at"] else ""
            )
            grid.add_row(
                r["run_id"],
                r["workflow"],
                r["trigger"],
                r["logical_date"],
                f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]",
                took,
                _short(r["error"]),
            )
        console.print(grid)

    out.result({"runs": rows}, render)


def _cancel(ctx: Context, run_id: str, out: Output) -> None:
    """Mark a queued/running run `cancelled`; the state store refuses a run whose process is alive."""
    project = ctx.project
    state = project.state
    # the store checks processes of this host; a live lock (fresh heartbeat) also covers other hosts
    lock = next((lock for lock in state.locks() if lock.run_id == run_id), None)
    if lock is not None and not lock.is_stale(
        time.time(), project.settings.lock_stale_after_s, socket.gethostname()
    ):
        raise CalveError(
            f"run {run_id} is running in process {lock.pid} on {lock.host} (heartbeat "
            f"{time.time() - lock.heartbeat_at:.0f}s ago); stop that process first (kill {lock.pid}), "
            f"then `calve runs cancel {run_id}`"
        )
    cancelled = state.cancel_run(run_id, "cancelled with `calve runs cancel`")
    payload = cancelled.to_dict()

    def render(console: Console) -> None:
        console.print(
            f"run {run_id} of {cancelled.workflow} cancelled (the scheduler will not restart it); "
            f"finish it later with `calve run {cancelled.workflow} --restart {run_id}`",
            markup=False,
            soft_wrap=True,
        )

    out.result(payload, render)


@click.command()
@click.option("--once", is_flag=True, help="Evaluate every trigger once, run what is due, and exit.")
@click.option(
    "--tick", default=10.0, show_default=True, metavar="SECONDS", help="How often to evaluate triggers."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics on this port at /metrics (0: any free port, logged).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="The address the metrics endpoint binds (0.0.0.0: every interface).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: every log and progress line as one JSON object per line on stdout.",
)
@json_option
@click.pass_obj
@handle_errors
def scheduler(
    ctx: Context,
    once: bool,
    tick: float,
    metrics_port: int | None,
    metrics_host: str,
    log_format: str,
    json_mode: bool,
    out: Output,
) -> None:
    """Run the project's workflows when their triggers fire, until stopped (Ctrl-C or SIGTERM).

    Time triggers (cron, interval) fire once per slot; incremental triggers fire when a source has
    changes past the workflow's checkpoints. Runs that a killed scheduler left unfinished are
    restarted from their first unfinished step. With --once: one evaluation, for cron jobs and tests.
    Log lines go to stdout, one per event, never wrapped; run progress goes to stderr.
    --log-format json prints both as JSON lines on stdout; --metrics-port serves Prometheus metrics.
    """
    # the handler comes first: a SIGTERM while the project and its workflows load stops cleanly
    stopping = {"flag": False}

    def stop(signum: int, frame: Any) -> None:
        out.progress("stopping after the current run ...")
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    from calve.workflows.scheduler import Scheduler

    project = ctx.project
    project.workflows()  # invalid files: fail now, with every problem
    runner = _runner(ctx, out)
    engine = Scheduler(project, runner, log=out.progress)
    json_log = None
    if log_format == "json":
        from calve.observe.logs import JsonLog

        json_log = JsonLog()
        runner.progress, engine.log, engine.on_firing = json_log.progress, json_log.log, json_log.firing
    stop_metrics = None
    if metrics_port is not None:
        from calve.observe.prometheus import SchedulerMetrics

        engine.metrics = SchedulerMetrics(project.state)
        host, port, stop_metrics = engine.metrics.serve(metrics_port, metrics_host)
        (json_log.log if json_log else out.progress)(f"metrics on http://{host}:{port}/metrics")
    try:
        if stopping["flag"]:
            out.progress("scheduler stopped before its first tick")
            return
        if once:
            _once(engine, json_mode, json_log, out)
            return
        if json_log is not None:
            engine.log = json_log.log
        else:
            engine.log = out.progress if json_mode else out.log
        engine.run_forever(tick, should_stop=lambda: stopping["flag"])
    finally:
        if stop_metrics is not None:
            stop_metrics()


def _once(engine: Any, json_mode: bool, json_log: Any, out: Output) -> None:
    """One tick: the firings as the result (or as JSON log lines); exit 1 if a run failed."""
    firings = engine.tick()
    if json_log is not None and not json_mode:
        for firing in firings:
            json_log.firing(firing)
    else:
        payload = {"fired": [f.to_dict() for f in firings]}

        def render(console: Console) -> None:
            if not firings:
                console.print("nothing due")
            for firing in firings:
                console.print(firing.describe(), markup=False, soft_wrap=True)

        out.result(payload, render)
    if any(f.result is not None and f.result.status is RunStatus.FAILED for f in firings):
        sys.exit(1)


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = text.splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def _render_run(console: Console, run: dict[str, Any]) -> None:
    from rich.table import Table as RichTable

    status = run["status"]
    console.print(
        f"run [bold]{run['run_id']}[/bold] of [bold]{run['workflow']}[/bold] "
        f"([{STATUS_STYLE.get(status, '')}]{status}[/]), trigger {run['trigger']}, "
        f"logical date {run['logical_date']}"
    )
    if run.get("params"):
        console.print("params: " + ", ".join(f"{k}={v}" for k, v in run["params"].items()), markup=False)
    grid = RichTable(
        "step",
        "status",
        "took",
        "cpu",
        "rows read",
        "bytes read",
        "rows written",
        "bytes written",
        "snapshot",
    )
    for step in run["steps"]:
        m = step["metrics"]
        took = (
            f"{step['finished_at'] - step['started_at']:.2f}s"
            if step["finished_at"] and step["started_at"]
            else ""
        )
        label = step["step_id"] + (f"[{step['iteration_value']}]" if step["iteration"] >= 0 else "")
        grid.add_row(
            label,
            f"[{STATUS_STYLE.get(step['status'], '')}]{step['status']}[/]",
            took,
            f"{step['cpu_s']:.2f}s" if step["cpu_s"] is not None else "",
            str(m.get("rows_read", "")),
            human_bytes(m["bytes_read"]) if "bytes_read" in m else "",
            str(m.get("rows_written", "")),
            human_bytes(m["bytes_written"]) if "bytes_written" in m else "",
            str(m.get("committed_snapshot_id") or ""),
        )
    console.print(grid)
    summary = _metrics_line(run.get("metrics") or {})
    if summary:
        console.print(summary, markup=False)
    if run.get("error"):
        from rich.markup import escape

        # escaped: an error's own brackets (`steps[0].sql`, `pip install 'calve[ray]'`) are text
        console.print(f"[red]error:[/red] {escape(run['error'])}", markup=True, highlight=False)


def _metrics_line(metrics: dict[str, Any]) -> str:
    """The run's metrics in one line (docs/observability.md): CPU, memory, freshness, lookback."""
    parts = []
    if metrics.get("cpu_s") is not None:
        parts.append(f"cpu {metrics['cpu_s']:.2f}s")
    if metrics.get("peak_rss_bytes"):
        parts.append(f"peak memory {human_bytes(metrics['peak_rss_bytes'])}")
    if metrics.get("freshness_s") is not None:
        parts.append(f"freshness {metrics['freshness_s']:.1f}s")
    if metrics.get("lookback_rows_estimate") is not None:
        parts.append(
            f"{metrics.get('rows_read', 0):,} rows read, where a {metrics['lookback_days']}-day lookback "
            f"would have read {metrics['lookback_rows_estimate']:,}"
        )
    if metrics.get("error_class"):
        parts.append(f"error class {metrics['error_class']}")
    return ("metrics: " + ", ".join(parts)) if parts else ""
