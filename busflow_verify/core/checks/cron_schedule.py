"""Next run time (UTC) of a pg_cron job's schedule, for alerts such as "re-run pg_dump before
the next scrub: job `tenant-scrub` next runs 2026-11-21 04:00 UTC". Stdlib only.

Follows pg_cron 1.6, whose parser is Paul Vixie's cron (src/entry.c), evaluated in UTC
(`cron.timezone` defaults to GMT):

* five fields `minute hour day-of-month month day-of-week` with `*`, lists, ranges and steps
  (`*/15`, `1-30/5`, `5/10` = from 5 to the field's end in steps of 10), JAN-DEC and SUN-SAT
  names (any case), day-of-week 0-7 with 0 and 7 both Sunday;
* `$` in day-of-month for the month's last day;
* day-of-month vs day-of-week as Vixie cron: when either field begins with `*` (so `*/2` too,
  as in entry.c's DOM_STAR/DOW_STAR flags) a day must match both, otherwise either;
* `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`;
  `@reboot`/`@restart` never fire on a schedule (next run None);
* `'N seconds'` (N 1-59) interval jobs.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
from dataclasses import dataclass

UTC = dt.timezone.utc
HORIZON_MONTHS = 5 * 12 + 1  # "never" = nothing in the 61 calendar months from `after`

_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_MACROS = {
    "yearly": "0 0 1 1 *",
    "annually": "0 0 1 1 *",
    "monthly": "0 0 1 * *",
    "weekly": "0 0 * * 0",
    "daily": "0 0 * * *",
    "midnight": "0 0 * * *",
    "hourly": "0 * * * *",
    "reboot": None,
    "restart": None,
}
_INTERVAL = re.compile(r"\s*(\d+)\s*(seconds?)\s*", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")


class ScheduleError(ValueError):
    """A schedule this module (and pg_cron) does not understand."""


@dataclass(frozen=True)
class _Cron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    doms: frozenset[int]
    last_dom: bool  # `$`
    months: frozenset[int]
    dows: frozenset[int]  # 0 = Sunday
    dom_star: bool
    dow_star: bool


@dataclass(frozen=True)
class _Interval:
    seconds: int


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _DAYS),
)


def next_run(schedule: str, after: dt.datetime) -> dt.datetime | None:
    """The first run of `schedule` strictly after `after` (tz-aware), as tz-aware UTC; None
    when it never runs on a clock (`@reboot`) or not within HORIZON_MONTHS (`0 0 30 2 *`)."""
    if not isinstance(after, dt.datetime) or after.utcoffset() is None:
        raise ValueError(f"after must be a timezone-aware datetime, got {after!r}")
    after = after.astimezone(UTC)
    parsed = _parse(schedule)
    if parsed is None:
        return None
    if isinstance(parsed, _Interval):
        return after.replace(microsecond=0) + dt.timedelta(seconds=parsed.seconds)
    start = after.replace(second=0, microsecond=0, tzinfo=None) + dt.timedelta(minutes=1)
    return _next_cron(parsed, start)


def describe_next(jobs: list[dict], after: dt.datetime) -> list[dict]:
    """One row per cron.job row: its next run as "YYYY-MM-DDTHH:MM:SSZ" (None if inactive,
    unparseable or never), soonest first, the None rows last in input order."""
    rows = []
    for job in jobs:
        schedule, when, error = job.get("schedule"), None, None
        if not job.get("active", True):
            error = "inactive"
        else:
            try:
                when = next_run(schedule, after)
            except ScheduleError as exc:
                error = str(exc)
        rows.append(
            (
                when,
                {
                    "jobname": job.get("jobname"),
                    "schedule": schedule,
                    "next_run_utc": when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None,
                    "error": error,
                },
            )
        )
    rows.sort(key=lambda pair: (pair[0] is None, pair[0] or after))  # stable: ties keep order
    return [row for _, row in rows]


def _parse(schedule: str) -> _Cron | _Interval | None:
    """The parsed schedule; None for `@reboot`. Raises ScheduleError naming the schedule."""
    if not isinstance(schedule, str):  # before the cache, which would choke on a list
        raise ScheduleError(f"pg_cron schedule {schedule!r}: not a string")
    return _parse_text(schedule)


@functools.lru_cache(maxsize=256)  # describe_next sees the same few schedules every alert
def _parse_text(schedule: str) -> _Cron | _Interval | None:
    text = schedule.strip()
    if not text:
        raise ScheduleError(f"pg_cron schedule {schedule!r}: empty")
    if text.startswith("@"):
        macro = text[1:].lower()
        if macro not in _MACROS:
            raise ScheduleError(f"pg_cron schedule {schedule!r}: unknown macro {text!r}")
        return _parse_text(_MACROS[macro]) if _MACROS[macro] else None
    interval = _INTERVAL.fullmatch(text)
    if interval:
        seconds = int(interval[1])
        if not 1 <= seconds <= 59:
            raise ScheduleError(f"pg_cron schedule {schedule!r}: interval must be 1-59 seconds")
        return _Interval(seconds)
    try:
        return _parse_fields(text.split())
    except ScheduleError as exc:
        raise ScheduleError(f"pg_cron schedule {schedule!r}: {exc}") from None


def _parse_fields(fields: list[str]) -> _Cron:
    if len(fields) != 5:
        raise ScheduleError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    minute, hour, dom, month, dow = (
        _parse_field(text, spec, allow_last=spec.name == "day-of-month")
        for text, spec in zip(fields, _FIELDS)
    )
    dows = frozenset(d % 7 for d in dow)  # 7 is Sunday too
    return _Cron(
        minutes=tuple(sorted(minute)),
        hours=tuple(sorted(hour)),
        doms=frozenset(dom - {0}),
        last_dom=0 in dom,
        months=frozenset(month),
        dows=dows,
        dom_star=fields[2].startswith("*"),
        dow_star=fields[4].startswith("*"),
    )


def _parse_field(text: str, spec: _Field, allow_last: bool = False) -> set[int]:
    """The values of one field; `$` (day-of-month only) comes back as 0, a value no real
    day-of-month has."""
    values: set[int] = set()
    for part in text.split(","):
        if allow_last and part == "$":
            values.add(0)
        else:
            values |= _parse_part(part, spec)
    return values


def _parse_part(part: str, spec: _Field) -> set[int]:
    """One list element: `*`, `N`, `N-M`, each optionally `/STEP`; `N/STEP` runs to the end."""
    span, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
            raise ScheduleError(f"bad step {step_text!r} in {spec.name} field {part!r}")
        step = int(step_text)
    if span == "*":
        first, last = spec.low, spec.high
    elif "-" in span:
        low_text, _, high_text = span.partition("-")
        first, last = _value(low_text, spec, part), _value(high_text, spec, part)
        if first > last:
            raise ScheduleError(f"reversed range {part!r} in {spec.name} field")
    else:
        first = _value(span, spec, part)
        last = spec.high if slash else first
    return set(range(first, last + 1, step))


def _value(text: str, spec: _Field, part: str) -> int:
    if spec.names and text.upper() in spec.names:
        return spec.names[text.upper()]
    if not _NUMBER.fullmatch(text):
        raise ScheduleError(f"cannot read {text!r} in {spec.name} field {part!r}")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise ScheduleError(f"{value} out of range {spec.low}-{spec.high} in {spec.name} field")
    return value


def _next_cron(cron: _Cron, start: dt.datetime) -> dt.datetime | None:
    """First matching minute at or after naive-UTC `start`, stepping month by month, then
    day by day within a matching month, then hour and minute within a matching day."""
    year, month = start.year, start.month
    for _ in range(HORIZON_MONTHS):
        if month in cron.months:
            first_day = start.day if (year, month) == (start.year, start.month) else 1
            hit = _scan_month(cron, year, month, first_day, start)
            if hit:
                return hit
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None


def _scan_month(
    cron: _Cron, year: int, month: int, first_day: int, start: dt.datetime
) -> dt.datetime | None:
    days_in_month = calendar.monthrange(year, month)[1]
    for day in range(first_day, days_in_month + 1):
        if not _day_matches(cron, dt.date(year, month, day), days_in_month):
            continue
        today = (year, month, day) == (start.year, start.month, start.day)
        hit = _first_time(cron, start.hour if today else 0, start.minute if today else 0)
        if hit:
            return dt.datetime(year, month, day, *hit, tzinfo=UTC)
    return None


def _day_matches(cron: _Cron, day: dt.date, days_in_month: int) -> bool:
    """Vixie cron: both fields must match if either is `*`-led, else one is enough."""
    dom_ok = day.day in cron.doms or (cron.last_dom and day.day == days_in_month)
    dow_ok = (day.weekday() + 1) % 7 in cron.dows
    if cron.dom_star or cron.dow_star:
        return dom_ok and dow_ok
    return dom_ok or dow_ok


def _first_time(cron: _Cron, hour: int, minute: int) -> tuple[int, int] | None:
    """Earliest (hour, minute) of the schedule at or after hour:minute on one day."""
    for h in cron.hours:
        if h < hour:
            continue
        floor = minute if h == hour else 0
        for m in cron.minutes:
            if m >= floor:
                return h, m
    return None
