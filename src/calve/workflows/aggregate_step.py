"""The `aggregate` strategy: a step's GROUP BY kept as a mergeable state beside its output.

Three tables, each committed with its own consumer's checkpoint (so each advances exactly once):

    <output>__state_values   (consumer <workflow>-<step>-values)  min, max, count(DISTINCT) multisets
    <output>__state_groups   (consumer <workflow>-<step>-groups)  counts, sums, distinct counts, mins
                                                                  and maxes per group
    <output>                 (consumer <workflow>-<step>)         the step's rows, finalized

A run reads the input's changelog since each table's checkpoint, applies it to the stored state of
the changed groups (calve.aggregates: their groups rows, and only the value rows the changes touch,
plus the whole value set of a group whose min or max went away), and commits the values, the groups,
then the output. Normally
the three checkpoints are equal and one changelog serves all. After a crash between two commits a
later table lags: its own range is applied to it (groups lagging values recount their distinct
counts, mins and maxes from every value row of their changed groups), and the output rows of every
group changed since the output's checkpoint are finalized from the stored groups rows, so nothing is
applied twice or missed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import Table

from calve.aggregates import DELETE_COLUMN, AggregatePlan, State, StateDelta
from calve.capture.changelog import compute_changelog
from calve.capture.changes import ChangeSet, capture_changes
from calve.read.planning import plan_files, read_files
from calve.workflows.inputs import read_rows_of_keys
from calve.workflows.model import StepSpec
from calve.workflows.pending import pending_changes
from calve.write.consumer import CheckpointMirror, Consumer
from calve.write.modes import WriteMode
from calve.write.tables import load_or_create, parse_partition_field

ALWAYS_TRUE = AlwaysTrue()
PLAN_PROPERTY = "calve.aggregate.plan"  # on the groups state: a hash of the SQL it was built by
GROUPS_SUFFIX = "__state_groups"
VALUES_SUFFIX = "__state_values"


@dataclass(frozen=True)
class AggregateResult:
    """The output rows to merge (deletes split off) and what the state commits did."""

    rows: pa.Table  # the output rows of the changed groups that still have rows
    deletes: pa.Table | None  # the group keys of the changed groups left with no row
    changelog_rows: int  # inserted and deleted rows read to update the state
    rebuilt: bool = False  # the state was built from the whole input: `rows` replace the output


def state_tables(output: str) -> tuple[str, str]:
    """The names of an output's state tables: (groups, values)."""
    return output + GROUPS_SUFFIX, output + VALUES_SUFFIX


def maintain(
    catalog: Catalog,
    mirror: CheckpointMirror | None,
    step: StepSpec,
    plan: AggregatePlan,
    consumer: Consumer,
    source: Table,
    until: int | None,
    output_changes: ChangeSet,
    progress: Callable[[str], None] = lambda _: None,
) -> AggregateResult:
    """Bring the state up to `until` and return the output rows of the groups changed since the
    output's checkpoint (the output's commit is the caller's, with `output_changes`)."""
    assert step.output is not None
    groups_name, values_name = state_tables(step.output.table)
    groups_table, values_table = _load(catalog, groups_name), _load(catalog, values_name)
    groups_consumer = Consumer(catalog, f"{consumer.name}-groups", mirror)
    values_consumer = Consumer(catalog, f"{consumer.name}-values", mirror)
    has_values = any(c.table == "values" for c in plan.state_columns)
    plan_id = hashlib.sha256(plan.sql.encode()).hexdigest()[:16]
    if groups_table is not None and groups_table.properties.get(PLAN_PROPERTY) != plan_id:
        progress("    the step's SQL changed since its state was built: rebuilding the state")
        groups_table = None
    if groups_table is None:  # the first run, a changed SQL, or dropped state tables
        return _rebuild(catalog, step, plan, plan_id, groups_consumer, values_consumer, source, until)

    groups_changes = pending_changes(groups_consumer, source, groups_table, until)
    values_changes = pending_changes(values_consumer, source, values_table, until) if has_values else None
    logs: dict[int | None, Any] = {}

    def changelog(changes: ChangeSet) -> Any:
        key = changes.from_snapshot_id_exclusive
        if key not in logs:
            logs[key] = compute_changelog(source, changes)
        return logs[key]

    rows_read = 0
    update = None
    if not groups_changes.is_empty or (values_changes is not None and not values_changes.is_empty):
        log = changelog(groups_changes)
        rows_read += log.inserted.num_rows + log.deleted.num_rows
        delta = plan.delta(log.inserted, log.deleted)
        if values_changes is not None and _start(values_changes) != _start(groups_changes):  # a crash
            # the values committed, the groups not: each gets its own range of changes
            other = changelog(values_changes)
            delta = StateDelta(delta.groups, plan.delta(other.inserted, other.deleted).values)
        changed = plan.changed_groups(delta)
        stored_groups = _rows(groups_table, changed, delta.groups)
        repair = values_changes is not None and _start(values_changes) != _start(groups_changes)
        if repair:  # the groups lag the values: recount their distinct values, mins and maxes whole
            current = State(stored_groups, _rows(values_table, changed, delta.values))
        else:
            current = State(stored_groups, _needed_values(plan, values_table, delta, stored_groups))
        update = plan.apply(current, delta, whole_groups=repair)
        if values_changes is not None:
            merge = update.values_merge()
            assert merge is not None
            _commit(
                catalog,
                values_consumer,
                values_table,
                values_name,
                step,
                merge,
                plan.value_keys,
                values_changes,
            )
        _commit(
            catalog,
            groups_consumer,
            groups_table,
            groups_name,
            step,
            update.groups_merge(),
            plan.group_keys,
            groups_changes,
        )
        progress(f"    state: {changed.num_rows} group(s) changed by {rows_read} changelog row(s)")

    if update is not None and _start(output_changes) == _start(groups_changes):
        rows = plan.output_merge(update)
        flag = pc.fill_null(rows[DELETE_COLUMN], False)
        deletes = rows.filter(flag).select(list(plan.group_keys))
        kept = rows.filter(pc.invert(flag)).drop_columns([DELETE_COLUMN])
        return AggregateResult(kept, deletes, rows_read)
    # the output lags the state (a crash between the commits): finalize its changed groups anew
    log = changelog(output_changes)
    delta = plan.delta(log.inserted, log.deleted)
    changed = plan.changed_groups(delta)
    groups_table = _load(catalog, groups_name)
    final = plan.finalize(State(_rows(groups_table, changed, delta.groups), None))  # groups rows suffice
    keys = list(plan.group_keys)
    gone = changed.join(final.select(keys).cast(changed.schema), keys=keys, join_type="left anti")
    return AggregateResult(final, gone, rows_read + log.inserted.num_rows + log.deleted.num_rows)


def _rebuild(
    catalog: Catalog,
    step: StepSpec,
    plan: AggregatePlan,
    plan_id: str,
    groups_consumer: Consumer,
    values_consumer: Consumer,
    source: Table,
    until: int | None,
) -> AggregateResult:
    """The state built from the whole input at `until`, in new state tables whose checkpoints are
    `until`; the output rows of every group, to replace the output."""
    assert step.output is not None
    full = source.schema().as_arrow().empty_table()
    if until is not None:
        tasks = plan_files(source, ALWAYS_TRUE, until)
        full = read_files(source, tasks, ALWAYS_TRUE, source.scan(snapshot_id=until).projection())
    state = plan.initial(full)
    at_pin = capture_changes(source, until, until)  # no change, ending at the pin: the checkpoint
    groups_name, values_name = state_tables(step.output.table)
    for name, rows, consumer in (
        (values_name, state.values, values_consumer),
        (groups_name, state.groups, groups_consumer),  # last: its plan property marks the state done
    ):
        with contextlib.suppress(NoSuchTableError):
            catalog.drop_table(name)  # never purge: a drop leaves files to maintenance, not to a crash
        if rows is None:
            continue
        partition_by = () if name == groups_name else _partitioning(step, rows)
        properties = {PLAN_PROPERTY: plan_id} if name == groups_name else {}
        table = load_or_create(catalog, name, rows.schema, partition_by, properties)
        consumer.commit(table, [at_pin], rows, mode=WriteMode.APPEND)
    return AggregateResult(plan.finalize(state), None, full.num_rows, rebuilt=True)


def _partitioning(step: StepSpec, rows: pa.Table) -> tuple[str, ...]:
    assert step.output is not None
    columns = set(rows.column_names)
    return tuple(p for p in step.output.partition_by if parse_partition_field(p)[0] in columns)


def _rows(table: Table | None, keys: pa.Table, like: pa.Table | None) -> pa.Table | None:
    """The stored state rows of the groups in `keys` (none yet: an empty table shaped `like`)."""
    if like is None:
        return None
    if table is None:
        return like.slice(0, 0)
    return read_rows_of_keys(table, keys)


def _needed_values(
    plan: AggregatePlan, table: Table | None, delta: StateDelta, stored_groups: pa.Table | None
) -> pa.Table | None:
    """The stored value rows `apply` needs: those the delta touches (read by their whole key), and
    the whole sets of the few groups whose min or max goes away (read by group keys and `_set`)."""
    needed = plan.needed_values(delta, stored_groups)
    if needed.touched is None or delta.values is None:
        return None
    if table is None:
        return delta.values.slice(0, 0)
    touched = read_rows_of_keys(table, needed.touched) if needed.touched.num_rows else None
    if needed.full_sets is None or not needed.full_sets.num_rows:
        return touched
    needed = plan.needed_values(delta, stored_groups, touched)  # only extremes that reach count 0
    if needed.full_sets is None or not needed.full_sets.num_rows:
        return touched
    whole = read_rows_of_keys(table, needed.full_sets)
    return whole if touched is None else pa.concat_tables([touched, whole.cast(touched.schema)])


def _start(changes: ChangeSet) -> int | None:
    return changes.from_snapshot_id_exclusive


def _load(catalog: Catalog, name: str) -> Table | None:
    try:
        return catalog.load_table(name)
    except NoSuchTableError:
        return None


def _commit(
    catalog: Catalog,
    consumer: Consumer,
    table: Table | None,
    name: str,
    step: StepSpec,
    merge: pa.Table,
    keys: tuple[str, ...],
    changes: ChangeSet,
) -> Table:
    """Merge state rows (DELETE_COLUMN true: delete the key) into a state table, with the checkpoint."""
    assert step.output is not None
    flag = pc.fill_null(merge[DELETE_COLUMN], False)
    deletes = merge.filter(flag).select(list(keys))
    rows = merge.filter(pc.invert(flag)).drop_columns([DELETE_COLUMN])
    if table is None:  # the values state (one row per value and group) is partitioned as the output;
        # the groups state (one row per group) is small: one file, rewritten whole, costs least
        partition_by = () if name.endswith(GROUPS_SUFFIX) else _partitioning(step, rows)
        table = load_or_create(catalog, name, rows.schema, partition_by, {})
    consumer.commit(table, [changes], rows, mode=WriteMode.MERGE, keys=keys, deletes=deletes)
    return table
