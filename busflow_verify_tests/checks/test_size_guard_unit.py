"""F1, the size guard, and F1's triage (steps 1-3) as plain functions: the floor and the trailing
median ratio at their boundaries, whether rows moved in proportion to the size, and the next
pg_cron scrub as the re-dump's deadline (from a fixed clock). No server, no S3."""

from __future__ import annotations

import datetime as dt

import pytest

from busflow_verify.core.checks.size_guard import evaluate, scrub_deadline, triage

KEY = "pg_dump_20261120_0100.dump"
MB = 1_000_000


def history(*sizes: int) -> dict[str, dict]:
    return {
        f"2026-11-{13 + i:02d}": {
            "key": f"pg_dump_202611{13 + i:02d}_0100.dump",
            "size_bytes": size,
        }
        for i, size in enumerate(sizes)
    }


# -- evaluate ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size, sizes, min_bytes, ratio_limit, findings, median, ratio",
    [
        # no history: only the floor applies
        (5 * MB, (), 1 * MB, 2.0, [], None, None),
        (1 * MB, (), 1 * MB, 2.0, ["SIZE_SHRUNK"], None, None),  # exactly the floor: shrunk
        (1 * MB + 1, (), 1 * MB, 2.0, [], None, None),  # one byte above it: passes
        (0, (), 1 * MB, 2.0, ["SIZE_SHRUNK"], None, None),
        (10**12, (), 1 * MB, 2.0, [], None, None),  # nothing to exceed without a median
        # the median of the trailing days (odd and even counts)
        (200 * MB, (100 * MB, 200 * MB, 300 * MB), 1 * MB, 2.0, [], 200 * MB, 1.0),
        (399_999_999, (100 * MB, 200 * MB, 300 * MB), 1 * MB, 2.0, [], 200 * MB, 1.999999995),
        (400 * MB, (100 * MB, 200 * MB, 300 * MB), 1 * MB, 2.0, ["SIZE_EXCEEDED"], 200 * MB, 2.0),
        (900 * MB, (100 * MB, 200 * MB, 300 * MB), 1 * MB, 2.0, ["SIZE_EXCEEDED"], 200 * MB, 4.5),
        (300 * MB, (100 * MB, 300 * MB), 1 * MB, 1.5, ["SIZE_EXCEEDED"], 200 * MB, 1.5),
        (299 * MB, (100 * MB, 300 * MB), 1 * MB, 1.5, [], 200 * MB, 1.495),
        (150 * MB, (150 * MB,), 1 * MB, 2.0, [], 150 * MB, 1.0),  # one day of history
        # shrinking far below the median is the floor's business only
        (2 * MB, (200 * MB,) * 7, 1 * MB, 2.0, [], 200 * MB, 0.01),
        (1 * MB, (200 * MB,) * 7, 1 * MB, 2.0, ["SIZE_SHRUNK"], 200 * MB, 0.005),
        # both at once: a floor above twice a tiny median
        (500, (100, 100, 100), 1000, 2.0, ["SIZE_SHRUNK", "SIZE_EXCEEDED"], 100, 5.0),
    ],
)
def test_evaluate_floor_and_median_ratio(
    size, sizes, min_bytes, ratio_limit, findings, median, ratio
):
    result = evaluate(KEY, size, history(*sizes), min_bytes=min_bytes, max_median_ratio=ratio_limit)
    assert [f.name for f in result.findings] == findings
    assert result.passed is (not findings)
    assert result.median_bytes == median
    assert result.ratio == (pytest.approx(ratio) if ratio is not None else None)
    for finding in result.findings:
        failure = finding.to_dict()
        assert (failure["code"], failure["severity"], failure["escalate_to"]) == (
            "F1",
            "P2",
            ["@data-oncall"],
        )
        assert failure["details"] == {
            "key": KEY,
            "size_bytes": size,
            "min_bytes": min_bytes,
            "median_bytes": median,
            "ratio": result.ratio,
            "max_median_ratio": ratio_limit,
            "history_days": len(sizes),
        }


@pytest.mark.parametrize(
    "size, sizes, min_bytes, says",
    [
        (999, (), 1000, f"{KEY} is 999 B, at or below the 1.00 KB floor: possible truncation"),
        (
            1 * MB,
            (),
            1 * MB,
            f"{KEY} is 1.00 MB, at or below the 1.00 MB floor: possible truncation",
        ),
        (
            450 * MB,
            (100 * MB, 200 * MB, 300 * MB),
            1 * MB,
            f"{KEY} is 450.00 MB, 2.25x the 3-day trailing median of 200.00 MB (limit 2.0x): "
            "possible runaway write",
        ),
        (
            25 * 10**9,
            (10 * 10**9,) * 7,
            1 * MB,
            f"{KEY} is 25.00 GB, 2.50x the 7-day trailing median of 10.00 GB (limit 2.0x): "
            "possible runaway write",
        ),
    ],
)
def test_evaluate_says_the_sizes_in_human_units(size, sizes, min_bytes, says):
    [finding] = evaluate(
        KEY, size, history(*sizes), min_bytes=min_bytes, max_median_ratio=2.0
    ).findings
    assert finding.summary == says


# -- triage ------------------------------------------------------------------------------------
LARGEST = ["commerce.bookings", "communications.messages", "operations.service_legs"]
BASE_COUNTS = {
    "commerce.bookings": 1000,
    "communications.messages": 3000,
    "operations.service_legs": 1000,
    "public.tenants": 10,
}


def scaled(factor: float, **overrides) -> dict[str, int]:
    counts = {t: int(n * factor) for t, n in BASE_COUNTS.items()}
    counts.update({t.replace("__", "."): n for t, n in overrides.items()})
    return counts


@pytest.mark.parametrize(
    "size, counts, base_size, base_counts, tolerance, proportional, size_ratio, rows_ratio",
    [
        # rows doubled with the size: real growth (F1 step 2)
        (2000, scaled(2), 1000, BASE_COUNTS, 0.25, True, 2.0, 2.0),
        # the size halved with the rows (a real mass delete)
        (500, scaled(0.5), 1000, BASE_COUNTS, 0.25, True, 0.5, 0.5),
        # the size doubled, the rows did not: corrupt (F1 step 3)
        (2000, scaled(1), 1000, BASE_COUNTS, 0.25, False, 2.0, 1.0),
        # the size halved, the rows did not
        (500, scaled(1), 1000, BASE_COUNTS, 0.25, False, 0.5, 1.0),
        # exactly at 1 +/- tolerance, and just past it (the counts are truncated to integers)
        (1000, scaled(1.25), 1000, BASE_COUNTS, 0.25, True, 1.0, 1.25),
        (1000, scaled(1.2504), 1000, BASE_COUNTS, 0.25, False, 1.0, 1.2502),
        (1000, scaled(0.75), 1000, BASE_COUNTS, 0.25, True, 1.0, 0.75),
        (1000, scaled(0.7496), 1000, BASE_COUNTS, 0.25, False, 1.0, 0.7492),
        # a small table's rows do not count: only the largest tables'
        (1000, scaled(1, public__tenants=10_000), 1000, BASE_COUNTS, 0.25, True, 1.0, 1.0),
    ],
)
def test_triage_compares_the_largest_tables_rows_with_the_size(
    size, counts, base_size, base_counts, tolerance, proportional, size_ratio, rows_ratio
):
    result = triage(size, counts, base_size, base_counts, LARGEST, tolerance)
    assert result["proportional"] is proportional
    assert (result["size_ratio"], result["rows_ratio"]) == (size_ratio, rows_ratio)
    assert sorted(result["tables"]) == LARGEST
    assert result["tables"]["commerce.bookings"] == {
        "previous": base_counts["commerce.bookings"],
        "current": counts["commerce.bookings"],
    }
    assert (result["baseline_size_bytes"], result["size_bytes"]) == (base_size, size)
    if proportional:
        assert result["conclusion"].startswith("rows moved in proportion to the size")
        assert "(F1 step 2)" in result["conclusion"]
    else:
        assert result["conclusion"].startswith("rows did not move in proportion to the size")
        assert "the dump is corrupt; re-run pg_dump" in result["conclusion"]
        assert "(F1 step 3)" in result["conclusion"]


@pytest.mark.parametrize(
    "base_size, base_counts",
    [
        (None, BASE_COUNTS),
        (0, BASE_COUNTS),
        (1000, None),
        (1000, {}),
    ],
)
def test_triage_without_a_verified_dump_says_to_compare_by_hand(base_size, base_counts):
    result = triage(1000, scaled(1), base_size, base_counts, LARGEST, 0.25)
    assert result == {
        "proportional": None,
        "conclusion": (
            "no verified dump to compare with: compare the largest tables' row counts on the "
            "source by hand (F1 step 1)"
        ),
    }


@pytest.mark.parametrize(
    "counts, base_counts, tables, rows_ratio, proportional",
    [
        # none of the runbook's tables: the three largest (by the baseline) that both dumps have
        (
            {"a.big": 2000, "a.mid": 1000, "a.small": 200, "a.tiny": 99999, "a.new": 5},
            {"a.big": 1000, "a.mid": 500, "a.small": 100, "a.tiny": 1},
            ["a.big", "a.mid", "a.small"],
            2.0,
            True,
        ),
        (
            {"a.big": 1000, "a.mid": 500},
            {"a.big": 1000, "a.mid": 500},
            ["a.big", "a.mid"],
            1.0,
            False,
        ),
        # one of the runbook's tables is there: it alone is compared
        (
            {"commerce.bookings": 2000, "a.big": 1},
            {"commerce.bookings": 1000, "a.big": 10**6},
            ["commerce.bookings"],
            2.0,
            True,
        ),
    ],
)
def test_triage_falls_back_to_the_largest_tables_there_are(
    counts, base_counts, tables, rows_ratio, proportional
):
    result = triage(2000, counts, 1000, base_counts, LARGEST, 0.25)
    assert list(result["tables"]) == tables
    assert result["rows_ratio"] == rows_ratio and result["proportional"] is proportional
    assert ", ".join(tables) in result["conclusion"]


def test_triage_with_no_rows_before_is_not_proportional():
    result = triage(2000, {"commerce.bookings": 5}, 1000, {"commerce.bookings": 0}, LARGEST, 0.25)
    assert (result["proportional"], result["rows_ratio"]) == (False, None)
    assert "size x2.00, no rows before" in result["conclusion"]


def test_triage_says_the_numbers():
    result = triage(2_000_000, scaled(1), 1_000_000, BASE_COUNTS, LARGEST, 0.25)
    assert (
        "size x2.00 (1,000,000 -> 2,000,000 bytes), rows of commerce.bookings, "
        "communications.messages, operations.service_legs x1.00 (5,000 -> 5,000)"
        in result["conclusion"]
    )


# -- scrub_deadline ----------------------------------------------------------------------------
AFTER = dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.timezone.utc)  # a Friday
SCRUB = {"jobname": "tenant-scrub-nightly", "schedule": "30 2 * * *", "active": True}
WEEKLY = {"jobname": "Weekly_SCRUB", "schedule": "0 4 * * 0", "active": True}
VACUUM = {"jobname": "vacuum-analyze", "schedule": "0 1 * * *", "active": True}
PAUSED = {"jobname": "tenant-scrub-paused", "schedule": "* * * * *", "active": False}
BROKEN = {"jobname": "scrub-broken", "schedule": "not a schedule", "active": True}
UNNAMED = {"jobname": None, "schedule": "* * * * *", "active": True}


@pytest.mark.parametrize(
    "jobs, pattern, next_run, jobnames",
    [
        ([SCRUB], "scrub", "2026-11-20T02:30:00Z", ["tenant-scrub-nightly"]),
        (
            [VACUUM, WEEKLY, SCRUB],
            "scrub",
            "2026-11-20T02:30:00Z",
            ["tenant-scrub-nightly", "Weekly_SCRUB"],
        ),  # soonest first; the name matched any case
        ([WEEKLY, VACUUM], "scrub", "2026-11-22T04:00:00Z", ["Weekly_SCRUB"]),
        ([VACUUM, WEEKLY], "^vacuum", "2026-11-21T01:00:00Z", ["vacuum-analyze"]),  # strictly after
        ([SCRUB, WEEKLY], "^weekly", "2026-11-22T04:00:00Z", ["Weekly_SCRUB"]),
        ([PAUSED, SCRUB], "scrub", "2026-11-20T02:30:00Z", ["tenant-scrub-nightly"]),
        ([BROKEN, SCRUB], "scrub", "2026-11-20T02:30:00Z", ["tenant-scrub-nightly"]),
        # nothing that will run
        ([VACUUM], "scrub", None, []),
        ([PAUSED], "scrub", None, []),
        ([BROKEN], "scrub", None, []),
        ([UNNAMED], "scrub", None, []),
        ([{"jobname": "scrub-on-boot", "schedule": "@reboot", "active": True}], "scrub", None, []),
        ([], "scrub", None, []),
    ],
)
def test_scrub_deadline_is_the_next_run_of_a_matching_job(jobs, pattern, next_run, jobnames):
    result = scrub_deadline(jobs, pattern, AFTER, "2026-11-19")
    assert result["next_run_utc"] == next_run
    assert [j["jobname"] for j in result["jobs"]] == jobnames
    if next_run:
        first = next(j for j in jobs if j["jobname"] == jobnames[0])
        assert result["text"] == (
            f"Re-run pg_dump before {next_run} (UTC): the next run of the pg_cron scrub job "
            f"{first['jobname']} ({first['schedule']}) recorded in the last verified dump "
            "(2026-11-19)."
        )
    else:
        assert result["text"] == (
            "No pg_cron scrub job is known from the last verified dump (2026-11-19): find the "
            "source's next scrub in its cron.job before re-running pg_dump."
        )


@pytest.mark.parametrize(
    "jobs, text",
    [
        (
            [SCRUB],
            "Re-run pg_dump before 2026-11-20T02:30:00Z (UTC): the next run of the pg_cron "
            "scrub job tenant-scrub-nightly (30 2 * * *) recorded in any verified dump (there "
            "is none yet).",
        ),
        (
            [],
            "No pg_cron scrub job is known from any verified dump (there is none yet): find the "
            "source's next scrub in its cron.job before re-running pg_dump.",
        ),
    ],
)
def test_scrub_deadline_without_a_baseline(jobs, text):
    assert scrub_deadline(jobs, "scrub", AFTER, None)["text"] == text


def test_scrub_deadline_reads_the_clock_it_is_given():
    later = AFTER + dt.timedelta(hours=2)  # 03:00: tonight's 02:30 has passed
    assert scrub_deadline([SCRUB], "scrub", later, "2026-11-19")["next_run_utc"] == (
        "2026-11-21T02:30:00Z"
    )
    cet = dt.timezone(dt.timedelta(hours=1))  # the same instant, in another zone
    assert scrub_deadline([SCRUB], "scrub", AFTER.astimezone(cet), None)["next_run_utc"] == (
        "2026-11-20T02:30:00Z"
    )
