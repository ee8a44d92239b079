"""Backup and drill schedules: cron as Kubernetes CronJobs write it, in UTC, as table cases."""

from __future__ import annotations

import datetime

import pytest

from modelguard.api import cron

T = datetime.datetime(2026, 6, 1, 12, 30, 15, tzinfo=datetime.UTC)  # a Monday


def at(day: int, hour: int, minute: int, month: int = 6, year: int = 2026) -> datetime.datetime:
    return datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        ("* * * * *", T, at(1, 12, 31)),
        ("0 3 * * *", T, at(2, 3, 0)),
        ("@daily", T, at(2, 0, 0)),
        ("@hourly", T, at(1, 13, 0)),
        ("@weekly", T, at(7, 0, 0)),
        ("@monthly", T, at(1, 0, 0, month=7)),
        ("@yearly", T, at(1, 0, 0, month=1, year=2027)),
        ("*/15 * * * *", T, at(1, 12, 45)),
        ("5/15 * * * *", T, at(1, 12, 35)),
        ("0 9-17/4 * * mon-fri", T, at(1, 13, 0)),
        ("0 0 * * 7", T, at(7, 0, 0)),
        ("0 0 13 * fri", T, at(5, 0, 0)),
        ("0 0 29 feb *", T, at(29, 0, 0, month=2, year=2028)),
        ("30 12 1 jun *", T, at(1, 12, 30, year=2027)),
    ],
    ids=[
        "every minute",
        "daily at three",
        "@daily",
        "@hourly",
        "@weekly on Sunday",
        "@monthly",
        "@yearly",
        "a step",
        "a step from a start",
        "a stepped range of weekdays",
        "7 is Sunday",
        "either day field matches",
        "a leap day",
        "the same minute is never the next",
    ],
)
def test_next_run(text: str, after: datetime.datetime, expected: datetime.datetime) -> None:
    assert cron.parse(text).next_after(after) == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "0 fields"),
        ("* * * *", "4 fields"),
        ("@sometimes", "unknown macro"),
        ("60 * * * *", "minute 60 is outside 0-59"),
        ("* 24 * * *", "hour 24"),
        ("* * 0 * *", "day of month 0"),
        ("* * * 13 *", "month 13"),
        ("* * * * 8", "day of week 8"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "step must be"),
        ("a * * * *", "not a number"),
        ("1,,2 * * * *", "empty list item"),
        ("0 0 31 2 *", "never runs"),
    ],
    ids=str,
)
def test_refusals_name_the_field(text: str, named: str) -> None:
    with pytest.raises(cron.InvalidSchedule, match=named):
        cron.parse(text)


def test_due_counts_from_the_last_run() -> None:
    daily = cron.parse("0 3 * * *")
    last = at(1, 3, 0)
    assert not daily.due(last=last, now=at(2, 2, 59))
    assert daily.due(last=last, now=at(2, 3, 0))
    # Never run: the rollout takes the first backup, not the schedule.
    assert not daily.due(last=None, now=at(2, 3, 0))
