"""The mergeable state of an incremental aggregate: plain Arrow tables, stored as Iceberg tables.

Two tables (docs/incremental-aggregates.md draws them):

- **groups**, keyed by the group key columns (named as in the output): `_rows`, the number of input
  rows of the group that pass WHERE, and the additive measures (`_a<i>_count`, `_a<i>_sum`,
  `_a<i>_true`, `_a<i>_false`): counts and sums, + for an inserted row, - for a deleted one.
- **values**, keyed by (group keys, `_set`, `_value_key`): for min, max and count(DISTINCT), the
  multiset of each value set's non-null values with `_count`, the rows that hold the value. `_v<set>`
  is the value in its own type (only the column of its set is filled); `_value_key` is its text, so
  that the merge key never holds a NULL. None when the SQL has no such aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from calve.aggregates._duck import query
from calve.errors import DataError

DELETE_COLUMN = "_calve_deleted"  # in the *_merge tables: true deletes the row's key
VALUE_KEYS = ("_set", "_value_key")  # with the group keys, the key of the values table


class StateMismatchError(DataError):
    """A count in the state went below zero: the state and the changes applied to it do not match.

    A change was applied twice, or the state was built from other rows than the input's. Rebuild
    the state with `AggregatePlan.initial(full_input)`.
    """


@dataclass(frozen=True)
class State:
    """The state of some groups (or the change to it, in a `StateDelta`): see the module docstring."""

    groups: pa.Table
    values: pa.Table | None


@dataclass(frozen=True)
class StateDelta(State):
    """The signed change to the state that a changelog makes: counts and sums of inserted minus deleted
    rows per group, and per (group, value set, value). Value rows whose count nets to zero are left out.
    """


@dataclass(frozen=True)
class NeededValues:
    """The stored value rows `AggregatePlan.apply` needs (`AggregatePlan.needed_values`).

    `touched`: keys (group keys, `_set`, `_value_key`) of the values the delta changes: read those
    rows by their whole key. `full_sets`: (group keys, `_set`) of the sets whose min or max goes
    away: read every value row of those (usually none). Both None when the SQL keeps no values.
    """

    touched: pa.Table | None
    full_sets: pa.Table | None


@dataclass(frozen=True)
class StateUpdate:
    """The changed groups' state after a delta, and what to write back.

    `state` holds every changed group that still has rows, with all its value rows: it is what
    `finalize` reads. `gone_groups` (group keys) are the groups left with no row. The two `*_merge`
    tables are what to merge into the stored state tables, with `DELETE_COLUMN` true for rows to delete.
    """

    group_keys: tuple[str, ...]
    state: State
    gone_groups: pa.Table
    changed_values: pa.Table | None  # value rows whose count changed and is still above zero
    gone_values: pa.Table | None  # keys (group keys, _set, _value_key) of value rows now at zero

    def groups_merge(self) -> pa.Table:
        """Rows to merge into the groups state table on the group keys."""
        return with_deletes(self.state.groups, self.gone_groups)

    def values_merge(self) -> pa.Table | None:
        """Rows to merge into the values state table on (group keys, `_set`, `_value_key`)."""
        if self.changed_values is None or self.gone_values is None:
            return None
        return with_deletes(self.changed_values, self.gone_values)


def with_deletes(rows: pa.Table, deleted_keys: pa.Table) -> pa.Table:
    """`rows` with DELETE_COLUMN false, then `deleted_keys` (other columns NULL) with it true."""
    return query(
        f"SELECT *, false AS {DELETE_COLUMN} FROM __calve_rows "
        f"UNION ALL BY NAME SELECT *, true AS {DELETE_COLUMN} FROM __calve_deleted",
        {"__calve_rows": rows, "__calve_deleted": deleted_keys},
    )
