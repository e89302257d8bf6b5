"""The lookback estimate's state, kept between processes: per source table (by uuid) and column (by
field id), a compact summary of the live data files at one snapshot, as JSON (calve.observe.lookback
writes and reads it). A one-shot `calve run` starts from it instead of reading every manifest.

One row per (table, column), replaced on every estimate (`INSERT ... ON CONFLICT ... DO UPDATE`,
which SQLite and PostgreSQL both read). The row is a cache: losing it costs one manifest read of the
source, never a wrong estimate.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from calve.state.store import StateStore


class LookbackStates:
    """The lookback states of one state store."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    def get(self, table_uuid: str, field_id: int) -> tuple[int, str] | None:
        """(snapshot id, state JSON) stored for the table and column, or None."""
        with self.state.transaction() as db:
            row = db.execute(
                "SELECT snapshot_id, state FROM lookback_state WHERE table_uuid = ? AND field_id = ?",
                (table_uuid, field_id),
            ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def put(self, table_uuid: str, field_id: int, snapshot_id: int, state: str) -> None:
        """Store `state`, valid at `snapshot_id`, for the table and column (replacing the one there)."""
        with self.state.transaction() as db:
            db.execute(
                """INSERT INTO lookback_state (table_uuid, field_id, snapshot_id, state, updated_at)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (table_uuid, field_id) DO UPDATE SET
                     snapshot_id = excluded.snapshot_id, state = excluded.state,
                     updated_at = excluded.updated_at""",
                (table_uuid, field_id, snapshot_id, state, time.time()),
            )

    def clear(self) -> int:
        """Forget every stored state (they are rebuilt from manifests when needed); returns how many."""
        with self.state.transaction() as db:
            return int(db.execute("DELETE FROM lookback_state").rowcount)
