"""The `calve` command line: the click group, its global options, and `main`.

Commands live in modules by concept — `table_commands` (changes, icdc, compact, snapshots,
consumers), `workflow_commands` (init, validate, workflows, run, runs, scheduler),
`backfill_commands` (backfill, backfills, status), `observe_commands` (lateness), `ui_commands` (the
web UI) and `demo` — and are imported only when click needs them (to run one, or to list them in
`--help`). The arrows point
one way: this module names the command modules; they import `calve.cli.context` and
`calve.cli.output`, never this module. `calve --version` imports none of them.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from calve import __version__
from calve.cli.context import Context, handle_errors, json_option

__all__ = ["COMMANDS", "Context", "cli", "handle_errors", "json_option", "main"]

# command name -> the module that defines it (a click.Command of the same name)
COMMANDS: dict[str, str] = {
    "changes": "calve.cli.table_commands",
    "icdc": "calve.cli.table_commands",
    "compact": "calve.cli.table_commands",
    "snapshots": "calve.cli.table_commands",
    "consumers": "calve.cli.table_commands",
    "maintain": "calve.cli.table_commands",
    "orphans": "calve.cli.table_commands",
    "demo": "calve.cli.demo",
    "init": "calve.cli.workflow_commands",
    "validate": "calve.cli.workflow_commands",
    "explain": "calve.cli.workflow_commands",
    "workflows": "calve.cli.workflow_commands",
    "run": "calve.cli.workflow_commands",
    "runs": "calve.cli.workflow_commands",
    "scheduler": "calve.cli.workflow_commands",
    "backfill": "calve.cli.backfill_commands",
    "backfills": "calve.cli.backfill_commands",
    "status": "calve.cli.backfill_commands",
    "ui": "calve.cli.ui_commands",
    "lateness": "calve.cli.observe_commands",
}


class LazyGroup(click.Group):
    """A group whose commands are imported by name when click asks for them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return super().get_command(ctx, cmd_name)
        command = getattr(importlib.import_module(module), cmd_name)
        assert isinstance(command, click.Command), f"{module}.{cmd_name} is not a click command"
        return command


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
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
      calve explain daily_views           how each step runs, and which strategy it takes, and why
      calve run daily_views               run a workflow once, now
      calve runs                          what ran, with status, timings and rows
      calve scheduler                     run workflows when their triggers fire
      calve changes db.events --since 42 --ranges event_time --json
      calve maintain db.events            compaction and snapshot expiry, invisible to consumers
      calve orphans db.events             data files no snapshot lists (left by killed runs)
      calve ui                            the web UI on http://127.0.0.1:8765/ (read-only)
      calve lateness db.events --event-time day   how late rows arrive; what a lookback would miss
    """
    ctx.obj = Context(catalog_name, project_dir)


def main() -> None:
    cli(prog_name="calve")


if __name__ == "__main__":  # run as a script, this file is not calve.cli.app: use the real module
    from calve.cli.app import main as _main

    _main()
