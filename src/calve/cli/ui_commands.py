"""`calve ui`: the web UI, served by uvicorn; read-only and bound to 127.0.0.1 unless told otherwise.

The server's libraries are an optional extra (`pip install 'calve[ui]'`), imported only when the
command runs: `calve --help` never loads them.
"""

from __future__ import annotations

import ipaddress

import click

from calve.cli.context import Context, handle_errors
from calve.cli.output import Output

DEFAULT_PORT = 8765


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="The address to bind (0.0.0.0: every interface)."
)
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535), help="The port."
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Allow actions from the browser: run a workflow now, restart a failed run. Default: read-only.",
)
@click.pass_obj
@handle_errors
def ui(ctx: Context, host: str, port: int, allow_actions: bool, out: Output) -> None:
    """Serve the web UI of the project: workflows, runs, tables, lineage, backfills.

    Pages show the workflows with their triggers and next due time, the runs (filtered), each run's
    steps with the snapshot ranges they read, their metrics and errors (with the workflow file:line),
    the tables with their snapshots, consumers, checkpoints, lag and lateness, and the lineage graph.
    Everything is rendered on the server; nothing is fetched from the internet.

    The UI is read-only unless --allow-actions, and listens on 127.0.0.1 (this machine only) unless
    --host says otherwise: it has no login, so bind it to another address only on a trusted network.

    \b
    Examples:
      calve ui                                  http://127.0.0.1:8765/
      calve ui --port 9000 --allow-actions      with "run now" and "restart" buttons
    """
    from calve.ui import require_server

    require_server()
    import uvicorn

    from calve.ui.app import LOOPBACK_HOSTS, create_app

    project = ctx.project
    loopback = _loopback(host)
    # on loopback, answer only loopback Host names: a rebinding DNS name gets nothing (starlette's
    # host check cannot parse a bracketed IPv6 Host, so an IPv6 address goes without it)
    guarded = loopback and ":" not in host
    app = create_app(project, allow_actions=allow_actions, allowed_hosts=LOOPBACK_HOSTS if guarded else None)
    where = f"[{host}]" if ":" in host else host
    mode = (
        "actions allowed (run now, restart)"
        if allow_actions
        else "read-only (--allow-actions to run workflows)"
    )
    out.progress(f"calve ui: project {project.root} at http://{where}:{port}/, {mode}; Ctrl-C stops it")
    if not loopback:
        out.progress(
            f"warning: listening on {host}: anyone who can reach this machine sees the project's runs and "
            "tables (there is no login); use --host 127.0.0.1 unless the network is trusted"
        )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
