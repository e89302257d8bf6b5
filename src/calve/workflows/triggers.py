"""Triggers: when a workflow is due. Time based (cron, interval) and incremental (new snapshots).

Time-based triggers fire once per **slot**: an interval's slots are the multiples of the interval
since the epoch (UTC), a cron expression's slots are the minutes it matches. The scheduler records
the slot with the run it creates, in one transaction, so that a restarted scheduler neither fires a
slot twice nor forgets it: slots missed while it was down are caught up by one run (incremental
steps process everything pending anyway), and the run says how many slots it covered.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

UTC = dt.UTC
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)
_NAMES = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
    "sun": 0,
    "mon": 1,
    "tue": 2,
    "wed": 3,
    "thu": 4,
    "fri": 5,
    "sat": 6,
}
_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@dataclass(frozen=True)
class CronExpression:
    """A standard 5-field cron expression (minute hour day-of-month month day-of-week), in UTC."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        expanded = _ALIASES.get(text.strip().lower(), text)
        parts = expanded.split()
        if len(parts) != 5:
            raise ValueError(
                f"cron {text!r} needs 5 fields (minute hour day-of-month month day-of-week), as in "
                "'*/15 * * * *' or '0 3 * * *', or an alias such as @daily"
            )
        sets = [_field(part, name, low, high) for part, (name, low, high) in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])  # 7 is Sunday too
        return cls(text, sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")

    def matches(self, moment: dt.datetime) -> bool:
        if (
            moment.minute not in self.minutes
            or moment.hour not in self.hours
            or moment.month not in self.months
        ):
            return False
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # as in cron: both restricted means either may match
            return day_ok and weekday_ok
        return day_ok or weekday_ok

    def latest_at_or_before(self, moment: dt.datetime, horizon_days: int = 366) -> dt.datetime | None:
        """The latest matching minute at or before `moment` (UTC), within `horizon_days`."""
        current = moment.astimezone(UTC).replace(second=0, microsecond=0)
        stop = current - dt.timedelta(days=horizon_days)
        while current > stop:
            if current.month not in self.months:
                current = current.replace(day=1, hour=0, minute=0) - dt.timedelta(minutes=1)
                continue
            if current.hour not in self.hours:
                current = current.replace(minute=0) - dt.timedelta(minutes=1)
                continue
            if self.matches(current):
                return current
            current -= dt.timedelta(minutes=1)
        return None

    def next_after(self, moment: dt.datetime, horizon_days: int = 366) -> dt.datetime | None:
        current = moment.astimezone(UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        stop = current + dt.timedelta(days=horizon_days)
        while current < stop:
            if self.matches(current):
                return current
            current += dt.timedelta(minutes=1)
        return None


def _field(part: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in part.lower().split(","):
        step = 1
        if "/" in item:
            item, _, step_text = item.partition("/")
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"cron {name} step {step_text!r} is not a positive number")
            step = int(step_text)
        if item == "*":
            start, end = low, high
        elif "-" in item:
            a, _, b = item.partition("-")
            start, end = _number(a, name), _number(b, name)
        else:
            start = _number(item, name)
            end = high if step > 1 else start
        top = 7 if name == "day of week" else high
        if not (low <= start <= top and low <= end <= top and start <= end):
            raise ValueError(f"cron {name} {item!r} is out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _number(text: str, name: str) -> int:
    if text in _NAMES:
        return _NAMES[text]
    if not text.isdigit():
        raise ValueError(f"cron {name} {text!r} is not a number")
    return int(text)


def interval_slot(now: dt.datetime, seconds: int) -> dt.datetime:
    """The start of the interval slot that `now` falls in (slots are aligned to the epoch, UTC)."""
    epoch = int(now.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def slot_key(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_slot(key: str) -> dt.datetime:
    return dt.datetime.strptime(key, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
