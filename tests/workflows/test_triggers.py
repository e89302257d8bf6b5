"""Cron expressions (Vixie semantics, by cronsim) and time slots."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from calve.errors import WorkflowError
from calve.workflows.loader import load_workflow
from calve.workflows.triggers import CronExpression, interval_slot, parse_slot, slot_key

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "moment", "matches"),
    [
        # */n in day-of-month starts with `*`: day-of-week alone restricts too (AND, not OR)
        ("0 0 */2 * mon", "2026-03-09T00:00", True),  # the 9th (odd: 1, 3, ...) and a Monday
        ("0 0 */2 * mon", "2026-03-16T00:00", False),  # a Monday, but the 16th
        ("0 0 */2 * mon", "2026-03-11T00:00", False),  # the 11th, but a Wednesday
        # both restricted: either matches (OR)
        ("0 0 1 * mon", "2026-03-09T00:00", True),  # a Monday
        ("0 0 1 * mon", "2026-04-01T00:00", True),  # the 1st (a Wednesday)
        ("0 0 1 * mon", "2026-03-10T00:00", False),
        # */n in day-of-week
        ("0 12 * * */2", "2026-03-08T12:00", True),  # Sunday (0)
        ("0 12 * * */2", "2026-03-10T12:00", True),  # Tuesday (2)
        ("0 12 * * */2", "2026-03-09T12:00", False),  # Monday (1)
        # names, ranges, 7 for Sunday
        ("30 6 * jan-mar mon-fri", "2026-02-02T06:30", True),
        ("30 6 * jan-mar mon-fri", "2026-04-01T06:30", False),
        ("30 6 * JAN-MAR Mon-Fri", "2026-02-02T06:30", True),
        ("0 3 * * 7", "2026-03-08T03:00", True),
        ("*/15 * * * *", "2026-03-02T09:45", True),
        ("*/15 * * * *", "2026-03-02T09:46", False),
        # aliases
        ("@daily", "2026-03-15T00:00", True),
        ("@daily", "2026-03-15T00:01", False),
        ("@hourly", "2026-03-15T07:00", True),
        ("@weekly", "2026-03-15T00:00", True),  # a Sunday
        ("@monthly", "2026-03-01T00:00", True),
        ("@yearly", "2026-01-01T00:00", True),
        ("@YEARLY", "2026-01-02T00:00", False),
    ],
)
def test_cron_matches(expression: str, moment: str, matches: bool) -> None:
    assert CronExpression.parse(expression).matches(at(moment)) is matches


def test_latest_at_or_before_includes_the_moment_itself() -> None:
    daily = CronExpression.parse("@daily")
    assert daily.latest_at_or_before(at("2026-03-15T00:00")) == at("2026-03-15T00:00")
    # seconds and microseconds within the matching minute still mean that minute
    assert daily.latest_at_or_before(at("2026-03-15T00:00:59.999999")) == at("2026-03-15T00:00")
    assert daily.latest_at_or_before(at("2026-03-14T23:59:59")) == at("2026-03-14T00:00")


def test_latest_at_or_before_crosses_month_and_year_boundaries() -> None:
    monthly = CronExpression.parse("0 0 31 * *")
    assert monthly.latest_at_or_before(at("2026-03-01T00:00")) == at("2026-01-31T00:00")  # no Feb 31st
    yearly = CronExpression.parse("0 0 29 2 *")
    assert yearly.latest_at_or_before(at("2026-03-01T00:00")) is None  # beyond the 366-day horizon
    assert yearly.latest_at_or_before(at("2026-03-01T00:00"), horizon_days=800) == at("2024-02-29T00:00")


def test_next_after_is_strictly_after_the_minute() -> None:
    daily = CronExpression.parse("30 2 * * *")
    assert daily.next_after(at("2026-03-02T02:29:59")) == at("2026-03-02T02:30")
    assert daily.next_after(at("2026-03-02T02:30")) == at("2026-03-03T02:30")
    assert daily.next_after(at("2026-03-02T02:30:30")) == at("2026-03-03T02:30")
    assert CronExpression.parse("0 0 1 1 *").next_after(at("2026-12-31T23:59")) == at("2027-01-01T00:00")


def test_a_moment_in_another_time_zone_is_taken_in_utc() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    moment = dt.datetime(2026, 3, 2, 4, 0, tzinfo=paris)  # 03:00 UTC
    assert CronExpression.parse("0 3 * * *").latest_at_or_before(moment) == at("2026-03-02T03:00")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * *", "needs 5 fields"),
        ("0 0 * * * *", "needs 5 fields"),  # no seconds field
        ("@reboot", "needs 5 fields"),
        ("0 25 * * *", "the hour field '25' is not valid (out of range"),
        ("61 * * * *", "it takes 0-59"),
        ("0 0 * 13 *", "the month field '13'"),
        ("0 0 * * funday", "or sun-sat"),
        ("0 0 30 2 *", "no February 30th"),
        ("*/0 * * * *", "the minute field '*/0'"),
    ],
)
def test_invalid_cron_says_which_field_and_what_it_takes(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match="cron") as caught:
        CronExpression.parse(expression)
    assert message in str(caught.value)


def test_invalid_cron_in_a_workflow_file_is_a_problem_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "timed.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            id: timed
            triggers:
              - interval: 15m
              - cron: "0 25 * * *"
            steps:
              - id: one
                sql: SELECT 1 AS x
                output: {table: db.out, mode: append}
            """
        )
    )
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path)
    (problem,) = caught.value.problems
    assert problem.startswith("timed.yaml:4: triggers[1].cron: cron '0 25 * * *': the hour field '25'")
    assert "it takes 0-23" in problem


def test_slots() -> None:
    now = at("2026-03-02T09:47:13")
    assert interval_slot(now, 900) == at("2026-03-02T09:45")
    assert slot_key(at("2026-03-02T09:45")) == "2026-03-02T09:45:00Z"
    assert parse_slot("2026-03-02T09:45:00Z") == at("2026-03-02T09:45")
