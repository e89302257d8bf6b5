"""Triggers: when a workflow is due. Time based (cron, interval) and incremental (new snapshots).

Time-based triggers fire once per **slot**: an interval's slots are the multiples of the interval
since the epoch (UTC), a cron expression's slots are the minutes it matches. The scheduler records
the slot with the run it creates, in one transaction, so that a restarted scheduler neither fires a
slot twice nor forgets it: slots missed while it was down are caught up by one run (incremental
steps process everything pending anyway), and the run says how many slots it covered.

Cron expressions are evaluated by `cronsim`, with Vixie (Debian) cron semantics: 5 fields in UTC,
names (`mon`, `jan`), `a-b`, `*/n`, lists, 7 for Sunday, and day-of-month OR day-of-week when both
are restricted (a field that starts with `*`, as `*/2` does, is not a restriction). The aliases
`@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly` and `@yearly` (`@annually`) are expanded
here. Matching minutes are found by jumping field by field, never by a search minute by minute.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cronsim import CronSim, CronSimError

UTC = dt.UTC
_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
# (name in cronsim's messages, our name, range) per field, for errors that say what to write
_FIELDS = (
    ("minute", "minute", "0-59"),
    ("hour", "hour", "0-23"),
    ("day-of-month", "day of month", "1-31, on days that its months have (no February 30th)"),
    ("month", "month", "1-12 or jan-dec"),
    ("day-of-week", "day of week", "0-7 (0 and 7 are Sunday) or sun-sat"),
)


@dataclass(frozen=True)
class CronExpression:
    """A standard 5-field cron expression (minute hour day-of-month month day-of-week), in UTC."""

    text: str  # as written in the workflow file
    expanded: str  # the 5 fields (an alias replaced by its fields)

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse and validate `text`; a ValueError says which field is wrong and what it accepts."""
        expanded = _ALIASES.get(text.strip().lower(), text.strip())
        parts = expanded.split()
        if len(parts) != 5 or expanded.startswith("@"):
            raise ValueError(
                f"cron {text!r} needs 5 fields (minute hour day-of-month month day-of-week), as in "
                f"'*/15 * * * *' or '0 3 * * mon-fri', or an alias: {', '.join(_ALIASES)}"
            )
        try:
            CronSim(expanded, dt.datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ValueError(_explain(text, parts, str(exc))) from None
        return cls(text, expanded)

    def matches(self, moment: dt.datetime) -> bool:
        """Whether the minute of `moment` (UTC) is one of this expression's."""
        minute = _minute(moment)
        return self.latest_at_or_before(minute) == minute

    def latest_at_or_before(self, moment: dt.datetime, horizon_days: int = 366) -> dt.datetime | None:
        """The latest matching minute at or before `moment` (UTC), within `horizon_days`."""
        start = _minute(moment)
        # cronsim steps one second before it looks, so start one second after the minute itself
        found = self._first(start + dt.timedelta(seconds=1), reverse=True)
        if found is None or found < start - dt.timedelta(days=horizon_days):
            return None
        return found

    def next_after(self, moment: dt.datetime, horizon_days: int = 366) -> dt.datetime | None:
        """The first matching minute after the minute of `moment` (UTC), within `horizon_days`."""
        start = _minute(moment)
        found = self._first(start, reverse=False)
        if found is None or found > start + dt.timedelta(days=horizon_days):
            return None
        return found

    def _first(self, start: dt.datetime, reverse: bool) -> dt.datetime | None:
        try:
            return next(CronSim(self.expanded, start, reverse=reverse))
        except StopIteration:  # cronsim gives up after 50 years without a match (February 30th)
            return None


def _minute(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _explain(text: str, parts: list[str], message: str) -> str:
    for index, (cronsim_name, name, accepted) in enumerate(_FIELDS):
        if cronsim_name in message:
            return (
                f"cron {text!r}: the {name} field {parts[index]!r} is not valid (out of range, or not a "
                f"number, a-b, */n or a list): it takes {accepted}"
            )
    return f"cron {text!r} is not valid: {message}"


def interval_slot(now: dt.datetime, seconds: int) -> dt.datetime:
    """The start of the interval slot that `now` falls in (slots are aligned to the epoch, UTC)."""
    epoch = int(now.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def slot_key(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_slot(key: str) -> dt.datetime:
    return dt.datetime.strptime(key, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
