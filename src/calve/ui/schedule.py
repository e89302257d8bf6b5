"""When each trigger of a workflow is next due, in words and as a time, for the workflows page.

The same rules as the scheduler's (calve.workflows.scheduler), read-only: a cron trigger is due at
its next matching minute, an interval trigger at the start of its next slot (or at the scheduler's
next tick, if the current slot has no run yet), an incremental trigger when a source gets new
snapshots, not before `min_interval` after it last fired. Due times assume a scheduler is running.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from calve.workflows.model import TriggerKind, TriggerSpec
from calve.workflows.triggers import CronExpression, interval_slot, parse_slot

UTC = dt.UTC


@dataclass(frozen=True)
class Due:
    trigger: str  # the trigger's key, as in runs' `trigger`
    next_at: dt.datetime | None  # None: not time-based, or never
    note: str  # what the time means, or when an incremental trigger fires
    last_fired_at: float | None


def next_due(trigger: TriggerSpec, state: dict[str, Any] | None, now: dt.datetime) -> Due:
    """When `trigger` is next due, given its trigger_state row (last slot, last fired) and `now`."""
    last_slot = state.get("last_slot") if state else None
    last_fired = state.get("last_fired_at") if state else None
    if trigger.kind is TriggerKind.CRON:
        assert trigger.cron is not None
        expression = CronExpression.parse(trigger.cron)
        latest = expression.latest_at_or_before(now)
        if latest is not None and (last_slot is None or parse_slot(last_slot) < latest):
            return Due(trigger.key, latest, "slot not run yet: at the scheduler's next tick", last_fired)
        upcoming = expression.next_after(now)
        return Due(trigger.key, upcoming, "next slot" if upcoming else "no slot within a year", last_fired)
    if trigger.kind is TriggerKind.INTERVAL:
        assert trigger.interval_s is not None
        current = interval_slot(now, trigger.interval_s)
        if last_slot is None or parse_slot(last_slot) < current:
            return Due(trigger.key, current, "slot not run yet: at the scheduler's next tick", last_fired)
        return Due(trigger.key, current + dt.timedelta(seconds=trigger.interval_s), "next slot", last_fired)
    sources = ", ".join(trigger.sources)
    words = "all of" if trigger.when == "all" and len(trigger.sources) > 1 else "any of"
    note = f"when {words} {sources} gets new snapshots"
    if trigger.min_interval_s and last_fired is not None:
        earliest = dt.datetime.fromtimestamp(last_fired + trigger.min_interval_s, UTC)
        if earliest > now:
            return Due(trigger.key, earliest, note + ", not before", last_fired)
    return Due(trigger.key, None, note, last_fired)
