"""What the web UI reads from the state store: runs, steps, checkpoints, triggers, locks, backfills.

Contract: every query here only reads, with its values bound as parameters (never pasted into the
SQL), on a connection that the database itself keeps read-only (SQLite's `PRAGMA query_only`, a
PostgreSQL session whose transactions are READ ONLY). Reads take no lock (SQLite's WAL mode,
PostgreSQL's MVCC), so a page being served never delays a run's records. The SQL is written once for
both (`?` placeholders, standard functions). Rows come back as
plain dicts, keyed by column name, with their JSON columns decoded defensively: a key the page asks
for may be absent (records written before a metric existed, or by a newer calve), never an error.

`StateStore` (calve.state.store) is the writer; its queries take the write lock up front, which a
web page must not do, hence this module of its own.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calve.state.backends import import_psycopg, is_postgresql_url

PAGE_SIZE = 50


@dataclass(frozen=True)
class RunFilter:
    """The run list's filters; None (or "") matches everything."""

    workflow: str | None = None
    status: str | None = None
    trigger: str | None = None  # a prefix: manual, cron, interval, incremental, recovery, retry, ...

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = ["1 = 1"], []
        if self.workflow:
            clauses.append("workflow = ?")
            params.append(self.workflow)
        if self.status:
            clauses.append("status = ?")
            params.append(self.status)
        if self.trigger:
            # a prefix match, with no LIKE escapes (CAST: PostgreSQL types the parameter for length)
            clauses.append("substr(trigger, 1, length(CAST(? AS TEXT))) = ?")
            params.extend([self.trigger, self.trigger])
        return " AND ".join(clauses), params


def decode_json(text: Any) -> dict[str, Any]:
    """A JSON object column as a dict; {} for NULL, malformed JSON or anything but an object."""
    if not isinstance(text, str | bytes):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class StateQueries:
    """Read-only queries on one state store (a SQLite file or a postgresql:// URL; one connection
    per server thread)."""

    def __init__(self, location: Path | str) -> None:
        self.location = location
        self.postgresql = is_postgresql_url(location)
        self._psycopg = import_psycopg("a PostgreSQL state store") if self.postgresql else None
        self._local = threading.local()

    def _db(self) -> Any:
        db = getattr(self._local, "db", None)
        if db is None or (self._psycopg is not None and db.closed):
            if self._psycopg is not None:
                from psycopg.rows import dict_row

                # autocommit: each read is its own snapshot, no transaction is left open between pages
                db = self._psycopg.connect(str(self.location), autocommit=True, row_factory=dict_row)
                db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            else:
                db = sqlite3.connect(self.location, timeout=10, isolation_level=None)
                db.execute("PRAGMA query_only = ON")  # SQLite refuses any write on this connection
                db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    def _all(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        if self._psycopg is not None:
            try:
                rows = self._db().execute(sql.replace("%", "%%").replace("?", "%s"), params).fetchall()
            except (self._psycopg.errors.UndefinedTable, self._psycopg.errors.UndefinedColumn):
                return []  # a store of an older version: that page shows nothing, not an error
            return [dict(row) for row in rows]
        try:
            return [dict(row) for row in self._db().execute(sql, params).fetchall()]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc) or "no such column" in str(exc):
                return []  # a store of an older version: that page shows nothing, not an error
            raise

    def _one(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> dict[str, Any] | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    # ---- runs -------------------------------------------------------------------------------

    def runs_page(
        self, where: RunFilter, page: int = 1, page_size: int = PAGE_SIZE
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of runs, newest first, with the total count of runs that pass the filter."""
        clause, params = where.where()
        total = self._one(f"SELECT count(*) AS n FROM runs WHERE {clause}", params)
        # the clause is built from fixed text only (RunFilter.where); its values are parameters
        rows = self._all(
            f"""SELECT run_id, workflow, trigger, trigger_slot, logical_date, status, created_at,
                       started_at, finished_at, error, restart_of, attempt,
                       (SELECT count(*) FROM step_runs s WHERE s.run_id = runs.run_id) AS steps
                FROM runs WHERE {clause}
                ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?""",
            [*params, page_size, (max(page, 1) - 1) * page_size],
        )
        return rows, int(total["n"]) if total else 0

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if row is not None:
            for name in ("params", "pins", "metrics"):
                row[name] = decode_json(row.get(name))
        return row

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT * FROM step_runs WHERE run_id = ? ORDER BY started_at, step_id, iteration", (run_id,)
        )
        for row in rows:
            row["metrics"] = decode_json(row.get("metrics"))
        return rows

    def restarts_of(self, run_id: str) -> list[dict[str, Any]]:
        return self._all(
            "SELECT run_id, status, created_at FROM runs WHERE restart_of = ? ORDER BY created_at", (run_id,)
        )

    def last_run(self, workflow: str) -> dict[str, Any] | None:
        return self._one(
            """SELECT run_id, status, trigger, created_at, started_at, finished_at, error FROM runs
               WHERE workflow = ? ORDER BY created_at DESC, run_id DESC LIMIT 1""",
            (workflow,),
        )

    def run_workflows(self) -> list[str]:
        """Every workflow id that has runs (workflows since deleted included), sorted."""
        return [row["workflow"] for row in self._all("SELECT DISTINCT workflow FROM runs ORDER BY workflow")]

    def cost_points(self, workflow: str, limit: int = 200) -> list[dict[str, Any]]:
        """The last `limit` finished runs of a workflow, oldest first, with what each cost.

        `cpu_s` and `rows_read` are the run's own metrics when recorded (runs.metrics), else the sums
        of its steps'; `lookback_rows_estimate` and `lookback_days` only exist in run metrics.
        """
        runs = self._all(
            """SELECT run_id, status, created_at, started_at, finished_at, metrics FROM runs
               WHERE workflow = ? AND finished_at IS NOT NULL
               ORDER BY created_at DESC, run_id DESC LIMIT ?""",
            (workflow, limit),
        )
        if not runs:
            return []
        marks = ", ".join("?" for _ in runs)
        by_run: dict[str, dict[str, float]] = {}
        for step in self._all(
            f"SELECT run_id, cpu_s, metrics FROM step_runs WHERE run_id IN ({marks})",
            [r["run_id"] for r in runs],
        ):
            sums = by_run.setdefault(step["run_id"], {"cpu_s": 0.0, "rows_read": 0.0})
            sums["cpu_s"] += _number(step.get("cpu_s")) or 0.0
            sums["rows_read"] += _number(decode_json(step.get("metrics")).get("rows_read")) or 0.0
        points = []
        for run in reversed(runs):
            metrics = decode_json(run.get("metrics"))
            steps = by_run.get(run["run_id"], {})
            cpu = _number(metrics.get("cpu_s"))
            rows_read = _number(metrics.get("rows_read"))
            points.append(
                {
                    "run_id": run["run_id"],
                    "status": run["status"],
                    "at": run["started_at"] or run["created_at"],
                    "cpu_s": cpu if cpu is not None else steps.get("cpu_s", 0.0),
                    "rows_read": rows_read if rows_read is not None else steps.get("rows_read", 0.0),
                    "lookback_rows_estimate": _number(metrics.get("lookback_rows_estimate")),
                    "lookback_days": _number(metrics.get("lookback_days")),
                    "wall_s": (run["finished_at"] - run["started_at"]) if run["started_at"] else None,
                }
            )
        return points

    # ---- triggers, locks, checkpoints -------------------------------------------------------

    def trigger_state(self, workflow: str) -> dict[str, dict[str, Any]]:
        rows = self._all("SELECT * FROM trigger_state WHERE workflow = ?", (workflow,))
        return {row["trigger"]: row for row in rows}

    def locks(self) -> dict[str, dict[str, Any]]:
        return {row["workflow"]: row for row in self._all("SELECT * FROM run_locks")}

    def checkpoints(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM consumer_checkpoints ORDER BY consumer, source_table, target_table")

    def step_commits(self, table_name: str) -> dict[int, dict[str, Any]]:
        """Which workflow step (run or backfill) committed each snapshot of a table, where recorded."""
        rows = self._all("SELECT * FROM step_commits WHERE table_name = ?", (table_name,))
        return {int(row["snapshot_id"]): row for row in rows}

    # ---- backfills --------------------------------------------------------------------------

    def backfills(self, limit: int = 200) -> list[dict[str, Any]]:
        """Backfills, newest first, each with its chunks counted by status (`chunks`, `done`)."""
        rows = self._all("SELECT * FROM backfills ORDER BY created_at DESC LIMIT ?", (limit,))
        if not rows:
            return rows
        marks = ", ".join("?" for _ in rows)
        counts: dict[str, dict[str, int]] = {}
        for row in self._all(
            f"""SELECT backfill_id, status, count(*) AS n FROM backfill_chunks
                WHERE backfill_id IN ({marks}) GROUP BY backfill_id, status""",
            [r["backfill_id"] for r in rows],
        ):
            counts.setdefault(row["backfill_id"], {})[row["status"]] = row["n"]
        for row in rows:
            by_status = counts.get(row["backfill_id"], {})
            row["chunk_statuses"] = by_status
            row["chunks"] = sum(by_status.values())
            row["done"] = by_status.get("succeeded", 0) + by_status.get("skipped", 0)
        return rows

    def backfill(self, backfill_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM backfills WHERE backfill_id = ?", (backfill_id,))

    def backfill_chunks(self, backfill_id: str) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM backfill_chunks WHERE backfill_id = ? ORDER BY chunk", (backfill_id,))
        for row in rows:
            row["metrics"] = decode_json(row.get("metrics"))
        return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
