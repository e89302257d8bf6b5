"""The table page's lateness helpers: which columns can be event times, and where its window starts.

The lateness itself is `calve lateness`'s report (`calve.observe.lateness.lateness_report`): one
computation for the command, the JSON and the page.
"""

from __future__ import annotations

from pyiceberg.table import Table
from pyiceberg.types import DateType, TimestampType, TimestamptzType

EVENT_TIME_TYPES = (DateType, TimestampType, TimestamptzType)


def event_time_columns(table: Table) -> list[str]:
    """The table's date and timestamp columns (top-level), in schema order: event-time candidates."""
    return [f.name for f in table.schema().fields if isinstance(f.field_type, EVENT_TIME_TYPES)]


def recent_ancestor(table: Table, count: int) -> int | None:
    """The snapshot `count` steps back in the current line of ancestry (None: the history is shorter),
    so that the page reports on the newest `count` snapshots only."""
    by_id = {s.snapshot_id: s for s in table.metadata.snapshots}
    snapshot = table.current_snapshot()
    for _ in range(count):
        if snapshot is None or snapshot.parent_snapshot_id is None:
            return None
        snapshot = by_id.get(snapshot.parent_snapshot_id)
    return snapshot.snapshot_id if snapshot is not None else None
