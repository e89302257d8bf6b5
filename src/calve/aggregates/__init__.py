"""Incremental aggregates: a step's GROUP BY maintained from its input's changelog and a mergeable state.

    plan = analyze(sql, "events")           # or NotIncrementalError(reason)
    print(plan.explain())
    state = plan.initial(all_rows)          # first run, or a rebuild
    delta = plan.delta(inserted, deleted)   # each run: only the changed rows
    needed = plan.needed_values(delta, stored_groups)  # value rows to read: touched keys, whole sets
    update = plan.apply(State(stored_groups, needed_value_rows), delta)
    rows = plan.output_merge(update)        # merge on plan.group_keys, DELETE_COLUMN deletes

Pure functions over Arrow tables (DuckDB inside); reading and writing the Iceberg tables is the
runner's. The design (state schemas, NULL semantics, costs) is in docs/incremental-aggregates.md.
"""

from calve.aggregates._analysis import SUPPORTED, NotIncrementalError
from calve.aggregates._plan import AggregatePlan, StateColumn, StateEstimate, analyze
from calve.aggregates._state import (
    DELETE_COLUMN,
    VALUE_KEYS,
    NeededValues,
    State,
    StateDelta,
    StateMismatchError,
    StateUpdate,
)

__all__ = [
    "DELETE_COLUMN",
    "SUPPORTED",
    "VALUE_KEYS",
    "AggregatePlan",
    "NeededValues",
    "NotIncrementalError",
    "State",
    "StateColumn",
    "StateDelta",
    "StateEstimate",
    "StateMismatchError",
    "StateUpdate",
    "analyze",
]
