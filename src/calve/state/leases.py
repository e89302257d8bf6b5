"""Scheduler leases: at most one scheduler process decides for a workflow (or maintains tables) at a time.

Several `calve scheduler` processes may share one state store (docs/deployment.md). Before it looks at
a workflow (recover its dead runs, retry, evaluate its triggers, start a run) a scheduler takes the
workflow's lease, a row naming its owner and an expiry; it keeps the lease while the run runs,
renewing it from a thread, and releases it when it is done with the workflow for this tick. Another
scheduler that finds the lease held skips that workflow until its next tick, then decides afresh
from what the holder recorded. So two schedulers never both decide that a slot is due, that
changes are pending, or that a dead run needs its restart.

A lease is stale, and is taken over, once its expiry has passed (its holder stopped renewing: killed,
frozen, cut off), or at once when its holder's process on this host is gone. The expiry is the
holder's clock plus `ttl_s`; the taker compares it with its own clock, so the machines' clocks must
agree to well within `ttl_s` (NTP does; the default, calve.yaml's `lock_stale_after`, is 10 minutes).

Taking a lease is one store transaction, serialized against every other (calve.state.backends): two
processes never both see it free.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from calve.state.records import pid_alive

if TYPE_CHECKING:
    from calve.state.store import StateStore


@dataclass(frozen=True)
class Lease:
    name: str  # workflow:ID, or maintenance
    owner: str  # HOST:PID:RANDOM, one per scheduler process
    host: str
    pid: int
    acquired_at: float
    expires_at: float

    def is_stale(self, now: float, host: str) -> bool:
        """Expired, or held by a process of this host that is gone."""
        if now >= self.expires_at:
            return True
        return self.host == host and self.pid != os.getpid() and not pid_alive(self.pid)


def new_owner() -> str:
    """An owner id for one scheduler: its host and pid (for people), and a random part (unique)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseBook:
    """The scheduler leases of one state store."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    def acquire(self, name: str, owner: str, ttl_s: float) -> Lease | None:
        """Take (or renew) lease `name` for `owner`; returns the live holder instead if another has it."""
        now = time.time()
        host = socket.gethostname()
        with self.state.transaction() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM scheduler_leases WHERE name = ?", (name,)).fetchone()
            if row is not None:
                holder = Lease(*row)
                if holder.owner != owner and not holder.is_stale(now, host):
                    return holder
            acquired = now if row is None or row[1] != owner else row[4]
            db.execute(
                """INSERT INTO scheduler_leases (name, owner, host, pid, acquired_at, expires_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, host = excluded.host,
                     pid = excluded.pid, acquired_at = excluded.acquired_at,
                     expires_at = excluded.expires_at""",
                (name, owner, host, os.getpid(), acquired, now + ttl_s),
            )
        return None

    def renew(self, owner: str, ttl_s: float) -> None:
        """Push back the expiry of every lease `owner` holds (its renewal thread calls this)."""
        with self.state.transaction() as db:
            db.execute(
                "UPDATE scheduler_leases SET expires_at = ? WHERE owner = ?", (time.time() + ttl_s, owner)
            )

    def release(self, name: str, owner: str) -> None:
        with self.state.transaction() as db:
            db.execute("DELETE FROM scheduler_leases WHERE name = ? AND owner = ?", (name, owner))

    def leases(self) -> list[Lease]:
        with self.state.transaction() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM scheduler_leases ORDER BY name").fetchall()
        return [Lease(*row) for row in rows]


_COLUMNS = "name, owner, host, pid, acquired_at, expires_at"

__all__ = ["Lease", "LeaseBook", "new_owner"]
