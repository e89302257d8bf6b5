"""The embedded state store: a SQLite file that mirrors consumer checkpoints for listing.

The Iceberg commit of a consumer's output is the source of truth for its checkpoint; this store is
a mirror that `calve consumers` lists without loading every target table, and that later issues
extend with runs and locks. Its schema is versioned and migrated forward on open.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calve.catalog import calve_home


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE consumer_checkpoints (
               consumer TEXT NOT NULL,
               source_table TEXT NOT NULL,
               source_uuid TEXT NOT NULL,
               snapshot_id INTEGER,
               target_table TEXT NOT NULL,
               target_snapshot_id INTEGER,
               updated_at REAL NOT NULL,
               PRIMARY KEY (consumer, source_table, target_table)
           )"""
    )


# One function per version; version N's function migrates a store at N-1 to N.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1]
STATE_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class CheckpointRecord:
    consumer: str
    source_table: str
    source_uuid: str
    snapshot_id: int | None
    target_table: str
    target_snapshot_id: int | None
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class StateStore:
    """SQLite-backed mirror of consumer checkpoints (later: runs and locks)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or calve_home() / "state.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            self._migrate(db)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > STATE_VERSION:
            raise RuntimeError(
                f"state store version {version} is newer than this calve ({STATE_VERSION}); upgrade calve"
            )
        for number in range(version, STATE_VERSION):
            MIGRATIONS[number](db)
        db.execute(f"PRAGMA user_version = {STATE_VERSION}")  # an int constant, not user input

    def record_checkpoint(self, record: CheckpointRecord) -> None:
        with self._connect() as db:
            db.execute(
                """INSERT INTO consumer_checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (consumer, source_table, target_table) DO UPDATE SET
                     source_uuid = excluded.source_uuid, snapshot_id = excluded.snapshot_id,
                     target_snapshot_id = excluded.target_snapshot_id, updated_at = excluded.updated_at""",
                (
                    record.consumer,
                    record.source_table,
                    record.source_uuid,
                    record.snapshot_id,
                    record.target_table,
                    record.target_snapshot_id,
                    record.updated_at or time.time(),
                ),
            )

    def checkpoints(self, consumer: str | None = None) -> list[CheckpointRecord]:
        query = "SELECT * FROM consumer_checkpoints"
        params: tuple[str, ...] = ()
        if consumer is not None:
            query += " WHERE consumer = ?"
            params = (consumer,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY consumer, source_table, target_table", params).fetchall()
        return [CheckpointRecord(*row) for row in rows]
