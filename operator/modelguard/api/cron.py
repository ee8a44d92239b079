"""Cron schedules, as Kubernetes CronJobs write them, evaluated in UTC (pure, no pydantic: the
backup schedule of a ModelDeployment and the drills of a BackupStore are validated with it).

Five fields (minute hour day-of-month month day-of-week), each `*`, a number, a range `a-b`, a
step `*/n` or `a-b/n`, or a comma-separated list of those; month and weekday names (jan, mon);
0 and 7 are Sunday. When both day fields are restricted, a day matching either runs (as cron
does). Macros: @yearly (@annually), @monthly, @weekly, @daily (@midnight), @hourly.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing

MACROS: typing.Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS: typing.Final = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)
_DAYS: typing.Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names); names count from `lowest`.
_FIELDS: typing.Final = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
# Every day of a leap cycle is looked at most once: a schedule that never runs (31 February)
# is found out in bounded time.
_HORIZON_DAYS: typing.Final = 366 * 8
ACCEPTED: typing.Final = (
    'five fields (minute hour day-of-month month day-of-week), e.g. "0 3 * * *", or a macro '
    "(@hourly, @daily, @weekly, @monthly, @yearly)"
)


class InvalidSchedule(ValueError):
    """The text is not a schedule; the message says which field and what is accepted."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the values each field admits."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    """The day-of-month field is `*`."""
    any_weekday: bool
    """The day-of-week field is `*`."""

    def _day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        # isoweekday: Monday 1 .. Sunday 7; cron: Sunday 0 (or 7).
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return in_week
        if self.any_weekday:
            return in_month
        return in_month or in_week

    def next_after(self, moment: datetime.datetime) -> datetime.datetime:
        """The first time strictly after `moment` (UTC, whole minutes) the schedule runs."""
        start = moment.astimezone(datetime.UTC).replace(second=0, microsecond=0)
        start += datetime.timedelta(minutes=1)
        day = start.date()
        for offset in range(_HORIZON_DAYS):
            current = day + datetime.timedelta(days=offset)
            if not self._day_matches(current):
                continue
            first_day = offset == 0
            for hour in sorted(self.hours):
                if first_day and hour < start.hour:
                    continue
                for minute in sorted(self.minutes):
                    if first_day and hour == start.hour and minute < start.minute:
                        continue
                    return datetime.datetime(
                        current.year, current.month, current.day, hour, minute, tzinfo=datetime.UTC
                    )
        raise InvalidSchedule(f"{self.text!r} never runs")

    def due(self, *, last: datetime.datetime | None, now: datetime.datetime) -> bool:
        """Whether a run is due: the schedule passed a time since `last` (None: never run, and
        then not before its first time from `now`)."""
        if last is None:
            return False
        return self.next_after(last) <= now


def parse(text: str) -> Schedule:
    """The schedule `text` says; InvalidSchedule naming the field otherwise."""
    stripped = text.strip()
    expanded = MACROS.get(stripped.lower(), stripped)
    if expanded.startswith("@"):
        raise InvalidSchedule(f"{text!r}: unknown macro; accepted: {ACCEPTED}")
    fields = expanded.split()
    if len(fields) != len(_FIELDS):
        raise InvalidSchedule(f"{text!r} has {len(fields)} fields; accepted: {ACCEPTED}")
    values = [
        _field(value, name=name, low=low, high=high, names=names)
        for value, (name, low, high, names) in zip(fields, _FIELDS, strict=True)
    ]
    weekdays = frozenset(0 if day == 7 else day for day in values[4])
    schedule = Schedule(
        text=stripped,
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        any_day=fields[2] == "*",
        any_weekday=fields[4] == "*",
    )
    # A schedule that never runs (30 February) is refused now, not found out at run time.
    schedule.next_after(datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
    return schedule


def check(text: str) -> str:
    """`text` if it parses (a pydantic validator); ValueError otherwise."""
    parse(text)
    return text


def _field(
    text: str, *, name: str, low: int, high: int, names: typing.Sequence[str]
) -> frozenset[int]:
    found: set[int] = set()
    for part in text.split(","):
        if not part:
            raise InvalidSchedule(f"{name} {text!r}: an empty list item")
        spread, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise InvalidSchedule(f"{name} {text!r}: the step must be a whole number >= 1")
            step = int(step_text)
        if spread == "*":
            first, last = low, high
        elif "-" in spread:
            start, _, end = spread.partition("-")
            first = _value(start, name=name, low=low, high=high, names=names)
            last = _value(end, name=name, low=low, high=high, names=names)
            if first > last:
                raise InvalidSchedule(f"{name} {text!r}: the range {spread} runs backwards")
        else:
            first = _value(spread, name=name, low=low, high=high, names=names)
            # "5/15" means from 5 to the end, every 15 (as Kubernetes' parser reads it).
            last = high if step_text else first
        found.update(range(first, last + 1, step))
    return frozenset(found)


def _value(text: str, *, name: str, low: int, high: int, names: typing.Sequence[str]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + low
    if not text.isdigit():
        accepted = f"{low}-{high}" + (f" or {names[0]}..{names[-1]}" if names else "")
        raise InvalidSchedule(f"{name} {text!r}: not a number ({accepted})")
    value = int(text)
    if not low <= value <= high:
        raise InvalidSchedule(f"{name} {value} is outside {low}-{high}")
    return value
