"""pg_cron schedule -> next run (UTC). Pure computation: no servers."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from busflow_verify.core.checks import cron_schedule as cronschedule
from busflow_verify.core.checks.cron_schedule import ScheduleError, describe_next, next_run

UTC = dt.timezone.utc


def at(year, month, day, hour=0, minute=0, second=0, micro=0, tz=UTC):
    return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)


FRI = at(2026, 11, 20, 12, 0)  # Friday 2026-11-20 12:00 UTC

NEXT_RUN_CASES = [
    # the alert's example, and "strictly after"
    ("0 4 * * *", FRI, at(2026, 11, 21, 4, 0)),
    ("* * * * *", FRI, at(2026, 11, 20, 12, 1)),
    ("* * * * *", at(2026, 11, 20, 12, 0, 30), at(2026, 11, 20, 12, 1)),
    ("0 12 * * *", FRI, at(2026, 11, 21, 12, 0)),
    ("0 12 * * *", at(2026, 11, 20, 11, 59, 59, 999999), FRI),
    # lists, ranges, steps
    ("10,20 * * * *", at(2026, 11, 20, 12, 15), at(2026, 11, 20, 12, 20)),
    ("0,30 9-17 * * *", at(2026, 11, 20, 17, 30), at(2026, 11, 21, 9, 0)),
    ("*/15 * * * *", at(2026, 11, 20, 12, 7), at(2026, 11, 20, 12, 15)),
    ("*/15 * * * *", at(2026, 11, 20, 23, 45), at(2026, 11, 21, 0, 0)),
    ("1-30/5 * * * *", at(2026, 11, 20, 12, 27), at(2026, 11, 20, 13, 1)),
    ("1-30/5 * * * *", at(2026, 11, 20, 12, 21), at(2026, 11, 20, 12, 26)),
    ("5/10 * * * *", at(2026, 11, 20, 12, 50), at(2026, 11, 20, 12, 55)),
    ("5/10 * * * *", at(2026, 11, 20, 12, 56), at(2026, 11, 20, 13, 5)),
    ("0 */6 * * *", at(2026, 11, 20, 18, 0), at(2026, 11, 21, 0, 0)),
    ("0 0 1 */5 *", FRI, at(2027, 1, 1)),  # months 1, 6, 11: November's 1st is past
    # month and weekday names, any case
    ("0 0 1 jan *", FRI, at(2027, 1, 1)),
    ("0 0 1 Mar-May *", FRI, at(2027, 3, 1)),
    ("0 0 1 NOV,dec *", FRI, at(2026, 12, 1)),
    ("0 9 * * MON-FRI", FRI, at(2026, 11, 23, 9, 0)),
    ("0 9 * * mon-fri", at(2026, 11, 20, 8, 0), at(2026, 11, 20, 9, 0)),
    ("0 9 * * Sat", FRI, at(2026, 11, 21, 9, 0)),
    # Sunday is 0, 7 and SUN
    ("0 6 * * 0", FRI, at(2026, 11, 22, 6, 0)),
    ("0 6 * * 7", FRI, at(2026, 11, 22, 6, 0)),
    ("0 6 * * SUN", FRI, at(2026, 11, 22, 6, 0)),
    ("0 6 * * 6-7", FRI, at(2026, 11, 21, 6, 0)),
    ("0 6 * * 7", at(2026, 11, 22, 6, 0), at(2026, 11, 29, 6, 0)),
    # day-of-month vs day-of-week (Vixie): both restricted -> either matches
    ("0 0 1 * 3", FRI, at(2026, 11, 25)),  # Wednesday comes first
    ("0 0 1 * 3", at(2026, 11, 26), at(2026, 12, 1)),  # then the 1st (a Tuesday)
    ("0 0 13 * FRI", at(2026, 11, 21), at(2026, 11, 27)),
    # ... one of them `*` -> both must match
    ("0 0 13 * *", FRI, at(2026, 12, 13)),
    ("0 0 * * 5", at(2026, 11, 21), at(2026, 11, 27)),
    ("0 0 * 2 1", FRI, at(2027, 2, 1)),  # Mondays in February only
    # ... and a `*`-led field (`*/10`) counts as `*`, as pg_cron's DOM_STAR flag does:
    # Mondays on the 1st/11th/21st/31st, not "the 21st (a Saturday) or any Monday"
    ("0 0 */10 * 1", FRI, at(2026, 12, 21)),
    ("0 0 1-31/10 * 1", FRI, at(2026, 11, 21)),  # range-led: restricted, so OR
    # `$`: last day of the month
    ("0 3 $ * *", FRI, at(2026, 11, 30, 3, 0)),
    ("0 3 $ * *", at(2026, 11, 30, 3, 0), at(2026, 12, 31, 3, 0)),
    ("0 3 $ 2 *", at(2026, 3, 1), at(2027, 2, 28, 3, 0)),
    ("0 3 $ 2 *", at(2027, 3, 1), at(2028, 2, 29, 3, 0)),
    ("0 0 1,$ * *", FRI, at(2026, 11, 30)),
    ("0 0 1,$ * *", at(2026, 11, 30), at(2026, 12, 1)),
    ("0 0 $ * MON", FRI, at(2026, 11, 23)),  # `$` is a restriction: OR with Mondays
    # year and month rollover
    ("59 23 31 12 *", at(2026, 12, 31, 23, 59), at(2027, 12, 31, 23, 59)),
    ("0 0 1 1 *", at(2026, 12, 31, 23, 59, 59), at(2027, 1, 1)),
    ("0 0 31 * *", FRI, at(2026, 12, 31)),  # November has no 31st
    ("0 0 31 * *", at(2027, 1, 31), at(2027, 3, 31)),  # nor February
    ("30 * * * *", at(2026, 11, 30, 23, 45), at(2026, 12, 1, 0, 30)),
    # leap day
    ("0 0 29 2 *", FRI, at(2028, 2, 29)),
    ("0 0 29 2 *", at(2028, 2, 29), at(2032, 2, 29)),
    ("0 0 29 feb *", at(2028, 2, 28, 23, 59), at(2028, 2, 29)),
    # never
    ("0 0 30 2 *", FRI, None),
    ("0 0 31 4 *", FRI, None),
    ("0 0 31 2,4,6,9,11 *", FRI, None),
    # macros
    ("@yearly", FRI, at(2027, 1, 1)),
    ("@annually", FRI, at(2027, 1, 1)),
    ("@monthly", FRI, at(2026, 12, 1)),
    ("@weekly", FRI, at(2026, 11, 22)),  # Sunday midnight
    ("@daily", FRI, at(2026, 11, 21)),
    ("@midnight", FRI, at(2026, 11, 21)),
    ("@hourly", FRI, at(2026, 11, 20, 13, 0)),
    ("@DAILY", FRI, at(2026, 11, 21)),
    ("@reboot", FRI, None),
    ("@restart", FRI, None),
    # interval jobs: after + N seconds, microseconds dropped
    ("30 seconds", at(2026, 11, 20, 12, 0, 0, 250000), at(2026, 11, 20, 12, 0, 30)),
    ("1 second", FRI, at(2026, 11, 20, 12, 0, 1)),
    ("59 seconds", at(2026, 11, 20, 23, 59, 30), at(2026, 11, 21, 0, 0, 29)),
    (" 5  Seconds ", FRI, at(2026, 11, 20, 12, 0, 5)),
    # whitespace between fields, leading zeros
    ("  00\t04  *  * * ", FRI, at(2026, 11, 21, 4, 0)),
    # a non-UTC `after` is converted: 13:30+02:00 is 11:30 UTC
    ("0 12 * * *", at(2026, 11, 20, 13, 30, tz=dt.timezone(dt.timedelta(hours=2))), FRI),
]


@pytest.mark.parametrize(
    "schedule, after, expected",
    NEXT_RUN_CASES,
    ids=[f"{c[0]!r}@{c[1]:%Y%m%dT%H%M%S}" for c in NEXT_RUN_CASES],
)
def test_next_run(schedule, after, expected):
    got = next_run(schedule, after)
    assert got == expected
    if got is not None:
        assert got.tzinfo is UTC and got > after


BAD_SCHEDULES = [
    ("0 0 * * * *", "expected 5 fields"),
    ("0 0 * * * /usr/bin/pg_dump", "got 6"),
    ("0 0 * *", "got 4"),
    ("", "empty"),
    ("   ", "empty"),
    ("garbage", "expected 5 fields"),
    ("60 * * * *", "out of range 0-59"),
    ("* 24 * * *", "out of range 0-23"),
    ("* * 0 * *", "out of range 1-31"),
    ("* * 32 * *", "out of range 1-31"),
    ("* * * 13 *", "out of range 1-12"),
    ("* * * 0 *", "out of range 1-12"),
    ("* * * * 8", "out of range 0-7"),
    ("0-60 * * * *", "out of range"),
    ("*/0 * * * *", "bad step"),
    ("*/x * * * *", "bad step"),
    ("5-1 * * * *", "reversed range"),
    ("1,,2 * * * *", "cannot read"),
    ("1, * * * *", "cannot read"),
    ("-5 * * * *", "cannot read"),
    ("a-b * * * *", "cannot read"),
    ("5x * * * *", "cannot read"),
    ("* * * JANUARY *", "cannot read"),
    ("* * * * MONDAY", "cannot read"),
    ("* JAN * * *", "cannot read"),  # names only where they belong
    ("$ * * * *", "cannot read"),  # `$` only in day-of-month
    ("0 0 $/2 * *", "cannot read"),
    ("0 0 1-$ * *", "cannot read"),
    ("@fortnightly", "unknown macro"),
    ("@daily 0", "unknown macro"),
    ("0 seconds", "1-59 seconds"),
    ("60 seconds", "1-59 seconds"),
    ("30 minutes", "expected 5 fields"),
    ("1.5 seconds", "expected 5 fields"),
]


@pytest.mark.parametrize(
    "schedule, message", BAD_SCHEDULES, ids=[repr(c[0]) for c in BAD_SCHEDULES]
)
def test_bad_schedule_raises_naming_it(schedule, message):
    with pytest.raises(ScheduleError) as caught:
        next_run(schedule, FRI)
    assert repr(schedule) in str(caught.value)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("schedule", [None, 5, ["0", "4", "*", "*", "*"]])
def test_non_string_schedule_raises(schedule):
    with pytest.raises(ScheduleError, match="not a string"):
        next_run(schedule, FRI)


@pytest.mark.parametrize("after", [dt.datetime(2026, 11, 20, 12, 0), dt.date(2026, 11, 20)])
def test_after_must_be_aware_datetime(after):
    with pytest.raises(ValueError, match="timezone-aware") as caught:
        next_run("0 4 * * *", after)
    assert not isinstance(caught.value, ScheduleError)


def _brute_force(schedule, after, max_minutes):
    """Minute-by-minute reference over a short window, using the module's day rule."""
    cron = cronschedule._parse(schedule)
    t = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    for _ in range(max_minutes):
        last = (t.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
        if (
            t.minute in cron.minutes
            and t.hour in cron.hours
            and t.month in cron.months
            and cronschedule._day_matches(cron, t.date(), last.day)
        ):
            return t
        t += dt.timedelta(minutes=1)
    raise AssertionError("no run within the brute-force window")


@pytest.mark.parametrize(
    "schedule",
    [
        "*/7 */5 * * *",
        "13 2,14 * * *",
        "0 0 $,1,5,10,15,20,25 * *",
        "45 23 * * 0",
        "0 12 1,15 * WED",
        "*/20 3-5 */3 * *",
        "59 23 * * *",
        "0 0 * * 1-5",
    ],
)
@pytest.mark.parametrize(
    "after",
    [
        at(2026, 11, 20, 12, 0),
        at(2027, 2, 27, 23, 58, 59),
        at(2028, 2, 28, 4, 59, 1),
        at(2026, 12, 31, 23, 59),
    ],
)
def test_stepping_agrees_with_brute_force(schedule, after):
    assert next_run(schedule, after) == _brute_force(schedule, after, 8 * 24 * 60)


@pytest.mark.parametrize(
    "schedule", ["0 0 29 2 *", "0 0 30 2 *", "0 0 31 2,4,6,9,11 *", "0 0 $ 2 MON"]
)
def test_worst_cases_are_fast(schedule):
    next_run(schedule, FRI)  # parse once (cached)
    best = min(_timed(lambda: next_run(schedule, FRI)) for _ in range(5))
    assert best < 0.005, f"{schedule!r} took {best * 1000:.2f} ms"


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


JOBS = [
    {
        "jobname": "tenant-scrub",
        "schedule": "0 4 * * *",
        "database": "busflow",
        "active": True,
        "command": "CALL scrub_tenants()",
    },
    {
        "jobname": "vacuum-hourly",
        "schedule": "@hourly",
        "database": "busflow",
        "active": True,
        "command": "VACUUM",
    },
    {
        "jobname": "old-purge",
        "schedule": "*/5 * * * *",
        "database": "busflow",
        "active": False,
        "command": "DELETE FROM old",
    },
    {
        "jobname": "broken",
        "schedule": "0 0 * * * *",
        "database": "busflow",
        "active": True,
        "command": "SELECT 1",
    },
    {
        "jobname": "heartbeat",
        "schedule": "30 seconds",
        "database": "postgres",
        "active": True,
        "command": "SELECT 1",
    },
    {
        "jobname": "on-boot",
        "schedule": "@reboot",
        "database": "postgres",
        "active": True,
        "command": "SELECT 1",
    },
    {
        "jobname": "payroll",
        "schedule": "0 12 $ * *",
        "database": "busflow",
        "active": True,
        "command": "CALL payroll()",
    },
]


def test_describe_next_orders_by_next_run_with_none_last():
    rows = describe_next(JOBS, FRI)
    assert [(r["jobname"], r["next_run_utc"], r["error"]) for r in rows] == [
        ("heartbeat", "2026-11-20T12:00:30Z", None),
        ("vacuum-hourly", "2026-11-20T13:00:00Z", None),
        ("tenant-scrub", "2026-11-21T04:00:00Z", None),
        ("payroll", "2026-11-30T12:00:00Z", None),
        ("old-purge", None, "inactive"),
        (
            "broken",
            None,
            "pg_cron schedule '0 0 * * * *': expected 5 fields "
            "(minute hour day-of-month month day-of-week), got 6",
        ),
        ("on-boot", None, None),
    ]
    assert all(set(r) == {"jobname", "schedule", "next_run_utc", "error"} for r in rows)
    assert rows[0]["schedule"] == "30 seconds"


@pytest.mark.parametrize(
    "jobs, expected",
    [
        ([], []),
        ([{"jobname": "a", "schedule": "0 0 30 2 *", "active": True}], [("a", None, None)]),
        ([{"jobname": "b", "schedule": "@daily"}], [("b", "2026-11-21T00:00:00Z", None)]),
        ([{"jobname": "c", "schedule": "not a cron", "active": False}], [("c", None, "inactive")]),
        (
            [{"jobname": "d", "schedule": None, "active": True}],
            [("d", None, "pg_cron schedule None: not a string")],
        ),
        (
            [
                {"jobname": "x", "schedule": "0 5 * * *"},
                {"jobname": "y", "schedule": "0 5 * * *"},
                {"jobname": "z", "schedule": "0 4 * * *"},
            ],
            [
                ("z", "2026-11-21T04:00:00Z", None),
                ("x", "2026-11-21T05:00:00Z", None),
                ("y", "2026-11-21T05:00:00Z", None),
            ],
        ),
    ],
)
def test_describe_next_edge_rows(jobs, expected):
    rows = describe_next(jobs, FRI)
    assert [(r["jobname"], r["next_run_utc"], r["error"]) for r in rows] == expected
