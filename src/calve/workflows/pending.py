"""What a run of a workflow would process: its sources pinned, each step's changes captured once.

`capture_pending` is what the scheduler decides on and what the run then processes (see
`Runner.pending`); `pending_changes` is the one way a step's changes since its checkpoint are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from calve.capture.changes import ChangeSet, capture_changes
from calve.catalog import load_table
from calve.workflows.model import StepKind, StepSpec, Workflow
from calve.write.consumer import CheckpointMirror, Consumer


@dataclass(frozen=True)
class Pending:
    """What a run of a workflow would process, captured once from the catalog.

    `pins` are the sources' current snapshots, `changes` each step's change set per source (from its
    checkpoint to the pin). A step that reads a table written by another step of the workflow has
    its changes captured when it runs, after that step committed.
    """

    workflow: str
    pins: Mapping[str, int | None]
    tables: Mapping[str, Table]  # the loaded sources (and the steps' targets that exist)
    changes: Mapping[str, Mapping[str, ChangeSet]]  # step id -> source table -> change set
    always_runs: bool  # some step reads whole tables, or changes of a table written in the run

    def source_pending(self, table: str) -> bool:
        """Whether some step has changes of source `table` to process."""
        return any(not by_table[table].is_empty for by_table in self.changes.values() if table in by_table)

    @property
    def anything(self) -> bool:
        """Whether a run would do anything: a change is pending, or some step always runs."""
        return self.always_runs or any(
            not cs.is_empty for by_table in self.changes.values() for cs in by_table.values()
        )


def capture_pending(
    catalog: Catalog,
    mirror: CheckpointMirror | None,
    workflow: Workflow,
    pins: Mapping[str, int | None] | None,
    tables: dict[str, Table],
) -> Pending:
    """Pin the sources (now, or at `pins`) and capture each step's pending changes on them, once.

    `tables` is a cache of loaded tables, filled as tables are loaded (the scheduler keeps one per
    tick); a source whose current snapshot is a step's checkpoint costs no manifest read.
    """

    def table(name: str) -> Table:
        if name not in tables:
            tables[name] = load_table(catalog, name)
        return tables[name]

    sources = sorted(workflow.source_tables)
    if pins is None:
        pins = {name: _snapshot_id(table(name)) for name in sources}
    used = {name: table(name) for name in sources}
    changes: dict[str, dict[str, ChangeSet]] = {}
    always_runs = False
    for step in workflow.steps:
        incremental = step.incremental_inputs
        if not incremental:
            always_runs |= step.kind is not StepKind.ICDC
            continue
        target = load_target(catalog, step, tables)
        if target is not None and step.output is not None:
            used[step.output.table] = target
        consumer = Consumer(catalog, workflow.consumer_name(step), mirror)
        for spec in incremental:
            if spec.table not in pins:
                always_runs = True  # written by an upstream step of this run: decided when it runs
                continue
            by_table = changes.setdefault(step.id, {})
            if spec.table not in by_table:
                by_table[spec.table] = pending_changes(consumer, used[spec.table], target, pins[spec.table])
    return Pending(workflow.id, dict(pins), used, changes, always_runs)


def pending_changes(consumer: Consumer, source: Table, target: Table | None, until: int | None) -> ChangeSet:
    """A consumer's pending changes of `source` up to `until` (all of them before its first commit,
    when `target` does not exist yet)."""
    if target is None:
        return capture_changes(source, None, until)
    return consumer.pending(source, target, until)


def load_target(catalog: Catalog, step: StepSpec, tables: dict[str, Table]) -> Table | None:
    """The step's output table, from the `tables` cache or loaded into it; None when not created yet."""
    if step.output is None:
        return None
    name = step.output.table
    if name not in tables:
        try:
            tables[name] = catalog.load_table(name)
        except NoSuchTableError:
            return None
    return tables[name]


def _snapshot_id(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None
