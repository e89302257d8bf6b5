"""The web UI's application: pages over a project's workflows, runs, tables, lineage and backfills.

    GET  /                          workflows: triggers, next due time, last run
    GET  /workflows/{id}            one workflow: steps (SQL file:line), triggers, runs, cost per run
    GET  /runs                      runs, newest first, filtered by workflow, status and trigger
    GET  /runs/{run_id}             one run: steps, inputs' snapshot ranges, metrics, errors
    GET  /tables                    the project's tables
    GET  /tables/{name}             snapshots, consumers with checkpoints and lag, lateness
    GET  /lineage                   workflows and tables as a graph
    GET  /backfills[/{id}]          backfills and their chunks' progress
    POST /workflows/{id}/run        run now         } only with --allow-actions, a form token and
    POST /runs/{run_id}/restart     restart a run   } a same-origin request

Contract: pages only read (the state store through `StateQueries`, the catalog's metadata); every
value reaches the HTML through Jinja2's autoescape or `markupsafe.escape`. Without `allow_actions`
every POST is refused with 403 and a message saying how to enable actions. With it, an action needs
the form token of this server process and, when the browser sends an Origin, the server's own
origin: a page of another site cannot start runs. An action runs in a background thread with the
project's `Runner`, which takes the workflow's lock like any other run.
"""

from __future__ import annotations

import collections
import datetime as dt
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from calve.errors import CalveError, ProblemsError
from calve.project import Project
from calve.state.records import RESTARTABLE, RunStatus
from calve.ui import svg
from calve.ui.actions import ActionLog, refusal
from calve.ui.formatting import (
    first_line,
    format_bytes,
    format_duration,
    format_number,
    format_time,
    mark_file_lines,
)
from calve.ui.queries import PAGE_SIZE, RunFilter, StateQueries
from calve.ui.schedule import next_due
from calve.workflows.model import Workflow

STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
RUN_STATUSES = tuple(status.value for status in RunStatus)
TRIGGER_KINDS = ("manual", "cron", "interval", "incremental", "recovery", "retry", "backfill", "demo")
# metrics a step page shows in its own places; any other key is listed as is
STEP_METRICS_SHOWN = {
    "inputs",
    "icdc_tables",
    "rows_read",
    "files_read",
    "bytes_read",
    "rows_out",
    "rows_written",
    "rows_deleted",
    "files_written",
    "bytes_written",
    "files_removed",
    "committed_snapshot_id",
    "output",
    "mode",
    "merge",
    "timings",
    "peak_rss_bytes",
    "skew",
    "error_class",
    "strategy",
    "reason",
}


class UI:
    """The state one UI server keeps: the project, its queries, templates, the form token, actions."""

    def __init__(self, project: Project, allow_actions: bool) -> None:
        self.project = project
        self.allow_actions = allow_actions
        project.state  # noqa: B018 -- opens (and migrates) the store once, before any read-only query
        self.queries = StateQueries(project.settings.state)
        self.token = secrets.token_urlsafe(24)  # the form token of this process: a new one per start
        self.actions = ActionLog()
        self.templates = Environment(
            loader=PackageLoader("calve.ui", "templates"),
            autoescape=select_autoescape(["html"], default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            ts=format_time, dur=format_duration, num=format_number, size=format_bytes, first_line=first_line
        )
        self.templates.globals.update(mark_file_lines=mark_file_lines)

    def page(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            request=request,
            allow_actions=self.allow_actions,
            token=self.token,
            project_root=str(self.project.root),
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def workflows(self) -> tuple[dict[str, Workflow], list[str]]:
        """The project's workflows, or none and the problems of its files (the pages still work)."""
        try:
            return self.project.workflows(), []
        except ProblemsError as exc:
            return {}, list(exc.problems)


LATENESS_SNAPSHOTS = 100  # the table page's lateness covers this many of the newest snapshots


def create_app(
    project: Project, *, allow_actions: bool = False, allowed_hosts: Sequence[str] | None = None
) -> Starlette:
    """The Starlette application of `calve ui` for `project` (read-only unless `allow_actions`).

    `allowed_hosts`: the only Host headers answered (None: any). `calve ui` on a loopback address
    passes its loopback names, so that a site whose DNS name is re-pointed at 127.0.0.1 (DNS
    rebinding) can neither read the pages nor take a form token from them.
    """
    ui = UI(project, allow_actions)

    def workflows_page(request: Request) -> Response:
        loaded, problems = ui.workflows()
        now = dt.datetime.now(dt.UTC)
        locks = ui.queries.locks()
        rows = []
        for workflow in loaded.values():
            state = ui.queries.trigger_state(workflow.id)
            dues = [next_due(t, state.get(t.key), now) for t in workflow.triggers]
            rows.append(
                {
                    "workflow": workflow,
                    "dues": dues,
                    "last_run": ui.queries.last_run(workflow.id),
                    "running": locks.get(workflow.id),
                }
            )
        return ui.page(request, "workflows.html", rows=rows, problems=problems, actions=ui.actions.recent())

    def workflow_page(request: Request) -> Response:
        workflow_id = request.path_params["workflow_id"]
        loaded, _ = ui.workflows()
        workflow = loaded.get(workflow_id)
        if workflow is None:
            raise HTTPException(404, f"no workflow {workflow_id!r} in this project; the list is at /")
        state = ui.queries.trigger_state(workflow.id)
        now = dt.datetime.now(dt.UTC)
        runs, total = ui.queries.runs_page(RunFilter(workflow=workflow.id), 1, 20)
        points = ui.queries.cost_points(workflow.id)
        root = project.root
        steps = [
            {
                "spec": step,
                "sql_at": f"{_relative(step.sql_origin[0], root)}:{step.sql_origin[1]}"
                if step.sql_origin
                else None,
            }
            for step in workflow.steps
        ]
        backfills = [b for b in ui.queries.backfills() if b.get("workflow") == workflow.id]
        return ui.page(
            request,
            "workflow.html",
            workflow=workflow,
            workflow_file=_relative(workflow.path, root),
            steps=steps,
            dues=[next_due(t, state.get(t.key), now) for t in workflow.triggers],
            runs=runs,
            total_runs=total,
            rows_chart=_rows_chart(points),
            cpu_chart=_cpu_chart(points),
            has_lookback=any(p["lookback_rows_estimate"] is not None for p in points),
            backfills=backfills,
            actions=[a for a in ui.actions.recent() if workflow.id in a.what],
        )

    def runs_page(request: Request) -> Response:
        query = request.query_params
        where = RunFilter(
            workflow=query.get("workflow") or None,
            status=query.get("status") or None,
            trigger=query.get("trigger") or None,
        )
        page = _positive_int(query.get("page"), 1)
        rows, total = ui.queries.runs_page(where, page)
        pages = max(1, -(-total // PAGE_SIZE))
        kept = {
            k: v
            for k, v in (("workflow", where.workflow), ("status", where.status), ("trigger", where.trigger))
            if v
        }
        return ui.page(
            request,
            "runs.html",
            runs=rows,
            total=total,
            page=page,
            pages=pages,
            where=where,
            workflows=ui.queries.run_workflows(),
            statuses=RUN_STATUSES,
            triggers=TRIGGER_KINDS,
            prev_url=f"/runs?{urlencode({**kept, 'page': page - 1})}" if page > 1 else None,
            next_url=f"/runs?{urlencode({**kept, 'page': page + 1})}" if page < pages else None,
        )

    def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = ui.queries.run(run_id)
        if run is None:
            raise HTTPException(
                404, f"no run {run_id!r} in this project's state store; the runs are at /runs"
            )
        loaded, _ = ui.workflows()
        workflow = loaded.get(run["workflow"])
        sql_at = {}
        if workflow is not None:
            for step in workflow.steps:
                if step.sql_origin:
                    sql_at[step.id] = f"{_relative(step.sql_origin[0], project.root)}:{step.sql_origin[1]}"
        steps = ui.queries.steps(run_id)
        tables = _TableCache(project)
        for row in steps:
            metrics = row["metrics"]
            row["other_metrics"] = {k: v for k, v in metrics.items() if k not in STEP_METRICS_SHOWN}
            row["inputs"] = metrics.get("inputs") if isinstance(metrics.get("inputs"), dict) else {}
            row["change_sets"] = {
                alias: tables.change_set(read)
                for alias, read in row["inputs"].items()
                if isinstance(read, dict) and read.get("snapshots") and read.get("to_snapshot_id") is not None
            }
        return ui.page(
            request,
            "run.html",
            run=run,
            steps=steps,
            sql_at=sql_at,
            workflow_file=_relative(workflow.path, project.root) if workflow else None,
            restarts=ui.queries.restarts_of(run_id),
            restartable=run["status"] in {s.value for s in RESTARTABLE} and workflow is not None,
        )

    def tables_page(request: Request) -> Response:
        from calve.catalog import load_table
        from calve.ui.tables import snapshot_rows

        loaded, problems = ui.workflows()
        roles = _table_roles(loaded, ui.queries.checkpoints())
        rows = []
        for name in sorted(roles):
            try:
                table = load_table(project.catalog, name)
            except CalveError:
                rows.append({"name": name, "roles": roles[name], "exists": False})
                continue
            snapshots = snapshot_rows(table, limit=1)
            rows.append(
                {
                    "name": name,
                    "roles": roles[name],
                    "exists": True,
                    "snapshots": len(table.metadata.snapshots),
                    "current": snapshots[0] if snapshots else None,
                }
            )
        return ui.page(request, "tables.html", tables=rows, problems=problems)

    def table_page(request: Request) -> Response:
        from calve.catalog import load_table
        from calve.observe.lateness import lateness_report
        from calve.ui.lateness import event_time_columns, recent_ancestor
        from calve.ui.tables import consumer_lag, snapshot_rows

        name = request.path_params["name"]
        try:
            table = load_table(project.catalog, name)
        except CalveError as exc:
            raise HTTPException(404, f"{exc}; the project's tables are at /tables") from None
        checkpoints = ui.queries.checkpoints()
        consumers = []
        for checkpoint in checkpoints:
            if checkpoint["source_table"] == name:
                consumers.append({**checkpoint, "lag": consumer_lag(table, checkpoint["snapshot_id"])})
        loaded, _ = ui.workflows()
        candidates = event_time_columns(table)
        column = request.query_params.get("column") or _event_time_column(loaded, name, candidates)
        lateness: list[Any] = []
        lateness_error = None
        if column:  # the `calve lateness` report over the last 100 snapshots, newest first
            try:
                since = recent_ancestor(table, LATENESS_SNAPSHOTS)
                report = lateness_report(table, column, since_snapshot_id=since)
                lateness = list(reversed(report.snapshots))
            except CalveError as exc:
                lateness_error = str(exc)
        known = [s for s in lateness if s.lateness_max_s is not None]
        lateness_chart = svg.chart(
            [
                svg.Series(
                    "its oldest row",
                    [(s.timestamp_ms / 1000, s.lateness_max_s) for s in known],
                    "series-a",
                    False,
                ),
                svg.Series(
                    "its newest row",
                    [(s.timestamp_ms / 1000, s.lateness_min_s) for s in known],
                    "series-b",
                    False,
                ),
            ],
            title=f"lateness of {column} at commit, per snapshot" if column else "lateness",
            y_label="late by",
            y_format=svg.duration_label,
        )
        return ui.page(
            request,
            "table.html",
            name=name,
            table=table,
            snapshots=snapshot_rows(table),
            snapshot_count=len(table.metadata.snapshots),
            commits=ui.queries.step_commits(name),
            consumers=consumers,
            checkpoints_into=[c for c in checkpoints if c["target_table"] == name],
            column=column,
            columns=candidates,
            lateness=lateness,
            lateness_error=lateness_error,
            lateness_chart=lateness_chart,
        )

    def lineage_page(request: Request) -> Response:
        loaded, problems = ui.workflows()
        graph = svg.Graph()
        for workflow in loaded.values():
            last = ui.queries.last_run(workflow.id)
            key = f"workflow:{workflow.id}"
            graph.add(
                svg.Node(
                    key, workflow.id, "workflow", f"/workflows/{workflow.id}", last["status"] if last else ""
                )
            )
            for table in sorted(workflow.source_tables):
                graph.add(svg.Node(f"table:{table}", table, "table", f"/tables/{table}"))
                graph.edges.add((f"table:{table}", key))
            for table in sorted(workflow.output_tables):
                graph.add(svg.Node(f"table:{table}", table, "table", f"/tables/{table}"))
                graph.edges.add((key, f"table:{table}"))
        return ui.page(request, "lineage.html", graph=svg.lineage(graph), problems=problems)

    def backfills_page(request: Request) -> Response:
        return ui.page(request, "backfills.html", backfills=ui.queries.backfills())

    def backfill_page(request: Request) -> Response:
        backfill_id = request.path_params["backfill_id"]
        backfill = ui.queries.backfill(backfill_id)
        if backfill is None:
            raise HTTPException(404, f"no backfill {backfill_id!r}; the backfills are at /backfills")
        chunks = ui.queries.backfill_chunks(backfill_id)
        done = sum(1 for c in chunks if c.get("status") in ("succeeded", "skipped"))
        return ui.page(request, "backfill.html", backfill=backfill, chunks=chunks, done=done)

    async def run_now(request: Request) -> Response:
        refused = await refusal(request, ui.allow_actions, ui.token)
        if refused is not None:
            return refused
        workflow_id = request.path_params["workflow_id"]
        loaded, _ = ui.workflows()
        workflow = loaded.get(workflow_id)
        if workflow is None:
            raise HTTPException(404, f"no workflow {workflow_id!r} in this project; the list is at /")

        def work() -> str:
            from calve.workflows.runner import Runner

            result = Runner.for_project(project).run(workflow, trigger="manual")
            return f"run {result.run.run_id} {result.status.value}" if result else "nothing ran"

        ui.actions.start(f"run {workflow.id}", work)
        return RedirectResponse(f"/workflows/{workflow.id}", status_code=303)

    async def restart(request: Request) -> Response:
        refused = await refusal(request, ui.allow_actions, ui.token)
        if refused is not None:
            return refused
        run_id = request.path_params["run_id"]
        run = ui.queries.run(run_id)
        if run is None:
            raise HTTPException(
                404, f"no run {run_id!r} in this project's state store; the runs are at /runs"
            )
        if run["status"] not in {s.value for s in RESTARTABLE}:
            raise HTTPException(
                409, f"run {run_id} is {run['status']}: only a failed or cancelled run restarts"
            )
        loaded, _ = ui.workflows()
        workflow = loaded.get(run["workflow"])
        if workflow is None:
            raise HTTPException(
                404, f"workflow {run['workflow']!r} of run {run_id} is no longer in this project"
            )

        def work() -> str:
            from calve.workflows.runner import Runner

            result = Runner.for_project(project).run(workflow, restart_of=run_id)
            return f"run {result.run.run_id} {result.status.value}" if result else "nothing ran"

        ui.actions.start(f"restart {run_id} of {workflow.id}", work)
        return RedirectResponse(f"/workflows/{workflow.id}", status_code=303)

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return ui.page(
            request, "error.html", status_code=exc.status_code, status=exc.status_code, message=exc.detail
        )

    async def calve_error(request: Request, exc: Exception) -> Response:
        return ui.page(request, "error.html", status_code=500, status=500, message=str(exc))

    routes = [
        Route("/", workflows_page),
        Route("/workflows/{workflow_id}", workflow_page),
        Route("/workflows/{workflow_id}/run", run_now, methods=["POST"]),
        Route("/runs", runs_page),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/restart", restart, methods=["POST"]),
        Route("/tables", tables_page),
        Route("/tables/{name}", table_page),
        Route("/lineage", lineage_page),
        Route("/backfills", backfills_page),
        Route("/backfills/{backfill_id}", backfill_page),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = (
        [] if allowed_hosts is None else [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)]
    )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error, CalveError: calve_error},
    )
    app.state.ui = ui
    return app


class _TableCache:
    """Tables loaded once per page (a step's inputs often share one), for their change sets."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.loaded: dict[str, Any] = {}

    def change_set(self, read: dict[str, Any]) -> list[Any] | None:
        """The snapshots an input's change set held (from the table's metadata), or None if gone."""
        from calve.catalog import load_table
        from calve.ui.tables import change_set_rows

        name = str(read.get("table"))
        if name not in self.loaded:
            try:
                self.loaded[name] = load_table(self.project.catalog, name)
            except CalveError:
                self.loaded[name] = None
        table = self.loaded[name]
        if table is None:
            return None
        return change_set_rows(table, read.get("from_snapshot_id"), int(read["to_snapshot_id"]))


def _table_roles(workflows: dict[str, Workflow], checkpoints: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Every table the project knows, with what it is to whom ("read by W", "written by W", ...)."""
    roles: dict[str, list[str]] = collections.defaultdict(list)
    for workflow in workflows.values():
        for table in sorted(workflow.source_tables):
            roles[table].append(f"read by {workflow.id}")
        for table in sorted(workflow.output_tables):
            roles[table].append(f"written by {workflow.id}")
    for checkpoint in checkpoints:
        roles.setdefault(checkpoint["source_table"], [])
        roles.setdefault(checkpoint["target_table"], [])
    return dict(roles)


def _event_time_column(workflows: dict[str, Workflow], table: str, candidates: list[str]) -> str | None:
    """The column a workflow reads the table's change ranges of (its event time), else the first
    date or timestamp column."""
    for workflow in workflows.values():
        for step in workflow.steps:
            for spec in step.inputs:
                if spec.table == table:
                    for column in spec.ranges:
                        if column in candidates:
                            return column
    return candidates[0] if candidates else None


def _rows_chart(points: list[dict[str, Any]]) -> Markup:
    lookback = [
        (p["at"], p["lookback_rows_estimate"]) for p in points if p["lookback_rows_estimate"] is not None
    ]
    return svg.chart(
        [
            svg.Series("calve: rows read", [(p["at"], p["rows_read"]) for p in points], "series-a"),
            svg.Series("lookback estimate: rows read", lookback, "series-b"),
        ],
        title="rows read per run: calve against the lookback estimate",
        y_label="rows",
    )


def _cpu_chart(points: list[dict[str, Any]]) -> Markup:
    return svg.chart(
        [svg.Series("CPU seconds", [(p["at"], p["cpu_s"]) for p in points], "series-a")],
        title="CPU seconds per run",
        y_label="CPU s",
        y_format=svg.duration_label,
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _positive_int(text: str | None, default: int) -> int:
    try:
        return max(1, int(text or default))
    except ValueError:
        return default
