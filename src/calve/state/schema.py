"""The state store's schema: one migration function per version, applied forward on open.

Version N's function migrates a store at version N-1 to N, on either backend (calve.state.backends):
the DDL is written once with SQLite's types and `_ddl` turns them into the backend's (INTEGER is
BIGINT on PostgreSQL: snapshot ids are 64-bit). The version is `PRAGMA user_version` on SQLite and
the `calve_schema` table on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

from calve.state.backends import Transaction


class _Ddl:
    """A migration's view of its transaction: each statement in the backend's types."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def execute(self, sql: str) -> None:
        self.tx.execute(self.tx.backend.ddl(sql))


def _v1(tx: Transaction) -> None:
    db = _Ddl(tx)
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


def _v2(tx: Transaction) -> None:
    db = _Ddl(tx)
    db.execute(
        """CREATE TABLE runs (
               run_id TEXT PRIMARY KEY,
               workflow TEXT NOT NULL,
               workflow_version TEXT NOT NULL,
               trigger TEXT NOT NULL,
               trigger_slot TEXT,
               logical_date TEXT NOT NULL,
               params TEXT NOT NULL,
               status TEXT NOT NULL,
               created_at REAL NOT NULL,
               started_at REAL,
               finished_at REAL,
               pins TEXT NOT NULL DEFAULT '{}',
               restart_of TEXT,
               host TEXT,
               pid INTEGER,
               error TEXT,
               UNIQUE (workflow, trigger, trigger_slot)
           )"""
    )
    db.execute("CREATE INDEX runs_by_workflow ON runs (workflow, created_at)")
    db.execute(
        """CREATE TABLE step_runs (
               run_id TEXT NOT NULL REFERENCES runs (run_id),
               step_id TEXT NOT NULL,
               iteration INTEGER NOT NULL DEFAULT -1,
               iteration_value TEXT,
               status TEXT NOT NULL,
               started_at REAL,
               finished_at REAL,
               cpu_s REAL,
               metrics TEXT NOT NULL DEFAULT '{}',
               error TEXT,
               PRIMARY KEY (run_id, step_id, iteration)
           )"""
    )
    db.execute(
        """CREATE TABLE run_locks (
               workflow TEXT PRIMARY KEY,
               run_id TEXT NOT NULL,
               host TEXT NOT NULL,
               pid INTEGER NOT NULL,
               acquired_at REAL NOT NULL,
               heartbeat_at REAL NOT NULL
           )"""
    )
    db.execute(
        """CREATE TABLE trigger_state (
               workflow TEXT NOT NULL,
               trigger TEXT NOT NULL,
               last_slot TEXT,
               last_fired_at REAL,
               PRIMARY KEY (workflow, trigger)
           )"""
    )


def _v3(tx: Transaction) -> None:
    db = _Ddl(tx)
    db.execute("ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1")
    db.execute("ALTER TABLE runs ADD COLUMN transient INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX runs_by_restart ON runs (restart_of)")


def _v4(tx: Transaction) -> None:
    """Backfills and their chunks; what each commit wrote (for stale-range reports); run metrics."""
    db = _Ddl(tx)
    db.execute("ALTER TABLE runs ADD COLUMN metrics TEXT NOT NULL DEFAULT '{}'")
    db.execute(
        """CREATE TABLE backfills (
               backfill_id TEXT PRIMARY KEY,
               workflow TEXT NOT NULL,
               workflow_version TEXT NOT NULL,
               steps TEXT NOT NULL,
               range_column TEXT NOT NULL,
               range_from TEXT NOT NULL,
               range_to TEXT NOT NULL,
               chunk TEXT NOT NULL,
               propagate INTEGER NOT NULL DEFAULT 0,
               status TEXT NOT NULL,
               created_at REAL NOT NULL,
               started_at REAL,
               finished_at REAL,
               host TEXT,
               pid INTEGER,
               error TEXT
           )"""
    )
    db.execute("CREATE INDEX backfills_by_workflow ON backfills (workflow, created_at)")
    db.execute(
        """CREATE TABLE backfill_chunks (
               backfill_id TEXT NOT NULL REFERENCES backfills (backfill_id),
               chunk INTEGER NOT NULL,
               range_lo TEXT NOT NULL,
               range_hi TEXT NOT NULL,
               status TEXT NOT NULL,
               started_at REAL,
               finished_at REAL,
               cpu_s REAL,
               metrics TEXT NOT NULL DEFAULT '{}',
               error TEXT,
               PRIMARY KEY (backfill_id, chunk)
           )"""
    )
    db.execute(
        """CREATE TABLE step_commits (
               table_name TEXT NOT NULL,
               snapshot_id INTEGER NOT NULL,
               workflow TEXT NOT NULL,
               step_id TEXT NOT NULL,
               workflow_version TEXT NOT NULL,
               run_id TEXT,
               backfill_id TEXT,
               range_column TEXT,
               range_lo TEXT,
               range_hi TEXT,
               complete INTEGER NOT NULL DEFAULT 0,
               committed_at REAL NOT NULL,
               PRIMARY KEY (table_name, snapshot_id)
           )"""
    )
    if tx.backend.insertion_order != "rowid":  # PostgreSQL has no rowid: the order of insertion
        db.execute(f"ALTER TABLE step_commits ADD COLUMN {tx.backend.insertion_order} BIGSERIAL")
    db.execute("CREATE INDEX step_commits_by_step ON step_commits (workflow, step_id, committed_at)")


def _v5(tx: Transaction) -> None:
    """Scheduler leases: which scheduler process decides for a workflow (or runs maintenance) now."""
    db = _Ddl(tx)
    db.execute(
        """CREATE TABLE scheduler_leases (
               name TEXT PRIMARY KEY,
               owner TEXT NOT NULL,
               host TEXT NOT NULL,
               pid INTEGER NOT NULL,
               acquired_at REAL NOT NULL,
               expires_at REAL NOT NULL
           )"""
    )


def _v6(tx: Transaction) -> None:
    """The lookback estimate's state per source table and column, kept between processes
    (calve.state.lookback; plain SQL that PostgreSQL reads the same)."""
    db = _Ddl(tx)
    db.execute(
        """CREATE TABLE lookback_state (
               table_uuid TEXT NOT NULL,
               field_id INTEGER NOT NULL,
               snapshot_id BIGINT NOT NULL,
               state TEXT NOT NULL,
               updated_at REAL NOT NULL,
               PRIMARY KEY (table_uuid, field_id)
           )"""
    )


def _v7(tx: Transaction) -> None:
    """A backfill's params; runs listed newest first without a sort of the whole history (web UI)."""
    db = _Ddl(tx)
    db.execute("ALTER TABLE backfills ADD COLUMN params TEXT NOT NULL DEFAULT '{}'")
    db.execute("CREATE INDEX runs_by_time ON runs (created_at)")


MIGRATIONS: list[Callable[[Transaction], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7]
STATE_VERSION = len(MIGRATIONS)
