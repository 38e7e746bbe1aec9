"""F1, the size guard: a dump must be > min_bytes and < max_median_ratio x the trailing median."""

from __future__ import annotations

import datetime as dt
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from busflow_verify.core.checks.cron_schedule import describe_next
from busflow_verify.core.failures import Finding


@dataclass
class SizeGuardResult:
    size_bytes: int
    min_bytes: int
    max_median_ratio: float
    history: dict[str, dict[str, Any]]  # {date: {key, size_bytes}} of the trailing days
    median_bytes: float | None
    ratio: float | None  # size / median
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings


def evaluate(
    key: str,
    size_bytes: int,
    history: dict[str, dict[str, Any]],
    *,
    min_bytes: int,
    max_median_ratio: float,
) -> SizeGuardResult:
    """SIZE_SHRUNK at or below the floor; SIZE_EXCEEDED at or above ratio x median.

    The median is over the newest dump of each trailing day that has one; with no history only
    the floor applies.
    """
    sizes = [h["size_bytes"] for h in history.values()]
    median = float(statistics.median(sizes)) if sizes else None
    ratio = size_bytes / median if median else None
    result = SizeGuardResult(size_bytes, min_bytes, max_median_ratio, history, median, ratio)
    common = {
        "key": key,
        "size_bytes": size_bytes,
        "min_bytes": min_bytes,
        "median_bytes": median,
        "ratio": ratio,
        "max_median_ratio": max_median_ratio,
        "history_days": len(sizes),
    }
    if size_bytes <= min_bytes:
        result.findings.append(
            Finding(
                "SIZE_SHRUNK",
                f"{key} is {_human(size_bytes)}, at or below the {_human(min_bytes)} floor: possible "
                "truncation",
                common,
            )
        )
    if median and size_bytes >= max_median_ratio * median:
        result.findings.append(
            Finding(
                "SIZE_EXCEEDED",
                f"{key} is {_human(size_bytes)}, {ratio:.2f}x the {len(sizes)}-day trailing median of "
                f"{_human(median)} (limit {max_median_ratio}x): possible runaway write",
                common,
            )
        )
    return result


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n}"


def triage(
    current_size: int,
    current_counts: dict[str, int],
    baseline_size: int | None,
    baseline_counts: dict[str, int] | None,
    largest_tables: list[str],
    tolerance: float,
    source_counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """F1 steps 1-3: did the largest tables' rows move in proportion to the dump's size?

    Compared with the last verified dump: size_ratio = size / its size, rows_ratio = the largest
    tables' rows / theirs. Proportional (within 1 +/- tolerance of each other): the growth or
    shrinkage is real; widen the tolerance only with evidence (step 2). Not proportional: the dump
    is corrupt; re-run pg_dump before the next scrub cycle (step 3).

    With `source_counts` (the exact counts of the producer's manifest, taken in pg_dump's
    snapshot) step 1 is done literally: the rows compared with the last verified dump are the
    source's, and a largest table whose restored rows differ from the source's is named: the dump
    lost rows, whatever the proportions say.
    """
    if source_counts:
        return _triage_with_source(
            current_size,
            current_counts,
            baseline_size,
            baseline_counts,
            largest_tables,
            tolerance,
            source_counts,
        )
    if not baseline_size or not baseline_counts:
        return {
            "proportional": None,
            "conclusion": (
                "no verified dump to compare with: compare the largest tables' row counts on the "
                "source by hand (F1 step 1)"
            ),
        }
    tables = [t for t in largest_tables if t in current_counts and t in baseline_counts]
    if not tables:  # none of the runbook's tables exists: take the three largest there are
        tables = sorted(
            set(current_counts) & set(baseline_counts), key=lambda t: -baseline_counts[t]
        )[:3]
    return _proportions(
        current_size, current_counts, baseline_size, baseline_counts, tables, tolerance
    )


def _proportions(
    current_size: int,
    current_counts: dict[str, int],
    baseline_size: int,
    baseline_counts: dict[str, int],
    tables: list[str],
    tolerance: float,
) -> dict[str, Any]:
    """F1 steps 2-3 for `tables`: the size's ratio and their rows' ratio to the last verified
    dump's, and what follows from them."""
    before = sum(baseline_counts[t] for t in tables)
    after = sum(current_counts[t] for t in tables)
    size_ratio = current_size / baseline_size
    rows_ratio = after / before if before else None
    proportional = rows_ratio is not None and abs(rows_ratio / size_ratio - 1) <= tolerance
    per_table = {t: {"previous": baseline_counts[t], "current": current_counts[t]} for t in tables}
    numbers = (
        f"size x{size_ratio:.2f} ({baseline_size:,} -> {current_size:,} bytes), rows of "
        f"{', '.join(tables)} x{rows_ratio:.2f} ({before:,} -> {after:,})"
        if rows_ratio is not None
        else f"size x{size_ratio:.2f}, no rows before"
    )
    conclusion = (
        f"rows moved in proportion to the size ({numbers}): the change looks real; raise the "
        "median tolerance only with evidence in the PR (F1 step 2)"
        if proportional
        else f"rows did not move in proportion to the size ({numbers}): the dump is corrupt; re-run "
        "pg_dump from the source before the next pg_cron scrub cycle, and if the new dump also "
        "fails the size guard open a P1 incident (F1 step 3)"
    )
    return {
        "proportional": proportional,
        "size_ratio": round(size_ratio, 4),
        "rows_ratio": round(rows_ratio, 4) if rows_ratio is not None else None,
        "baseline_size_bytes": baseline_size,
        "size_bytes": current_size,
        "tables": per_table,
        "conclusion": conclusion,
    }


def _triage_with_source(
    current_size, current_counts, baseline_size, baseline_counts, largest_tables, tolerance, source
) -> dict[str, Any]:
    """F1 step 1 with the source's own counts (the manifest) in place of the restored ones."""
    tables = [t for t in largest_tables if t in source] or sorted(source, key=lambda t: -source[t])[
        :3
    ]
    lost = {
        t: {"source": source[t], "restored": current_counts.get(t)}
        for t in tables
        if current_counts.get(t) != source[t]
    }
    found = triage(
        current_size,
        {**current_counts, **{t: source[t] for t in tables}},
        baseline_size,
        baseline_counts,
        tables,
        tolerance,
    )
    prefix = (
        "compared the source's own row counts (the producer's manifest, taken in pg_dump's "
        "snapshot) with the last verified dump: "
    )
    if baseline_size and baseline_counts:
        conclusion = prefix + found["conclusion"]
    else:
        counted = ", ".join(f"{t} {source[t]:,}" for t in tables)
        conclusion = (
            f"the source's own row counts (the producer's manifest): {counted}; no verified dump "
            "to compare them with (F1 step 1)"
        )
    if lost:
        named = "; ".join(
            f"{t}: source {v['source']:,}, restored "
            + (f"{v['restored']:,}" if v["restored"] is not None else "absent")
            for t, v in lost.items()
        )
        conclusion += (
            f". The dump itself lacks rows the source had ({named}): it is corrupt; re-run pg_dump "
            "from the source before the next pg_cron scrub cycle (F1 step 3)"
        )
        found["proportional"] = False
    return {
        **found,
        "conclusion": conclusion,
        "compared": "source (manifest) vs last verified dump",
        "source_counts": {t: source[t] for t in tables},
        "restored_differs_from_source": lost,
    }


def scrub_deadline(
    cron_jobs: list[dict[str, Any]],
    pattern: str,
    after: dt.datetime,
    baseline_partition: str | None,
) -> dict[str, Any]:
    """F1 step 3's deadline: a re-run of pg_dump must land before the next pg_cron scrub cycle,
    i.e. the next run (UTC) of the scrub jobs recorded with the last verified dump (their names
    match `pattern`, verify.yaml size_guard.scrub_job_pattern)."""
    scrubs = [j for j in cron_jobs if re.search(pattern, j.get("jobname") or "", re.I)]
    runs = [r for r in describe_next(scrubs, after) if r["next_run_utc"]]
    where = (
        f"the last verified dump ({baseline_partition})"
        if baseline_partition
        else "any verified dump (there is none yet)"
    )
    if not runs:
        return {
            "next_run_utc": None,
            "jobs": runs,
            "text": (
                f"No pg_cron scrub job is known from {where}: find the source's next scrub in its "
                "cron.job before re-running pg_dump."
            ),
        }
    first = runs[0]
    return {
        "next_run_utc": first["next_run_utc"],
        "jobs": runs,
        "text": (
            f"Re-run pg_dump before {first['next_run_utc']} (UTC): the next run of the pg_cron scrub "
            f"job {first['jobname']} ({first['schedule']}) recorded in {where}."
        ),
    }
