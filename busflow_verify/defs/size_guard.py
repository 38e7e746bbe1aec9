"""Runbook step 2 and F1: the size guard, from listing/HEAD sizes only.

size_check also reads the verified runs before this date from the instance, once for the run:
its output already flows to restored_db (the RTO budget's trailing runs) and row_count_report
(the baseline), and it needs the baseline itself when the guard fails (F1's scrub deadline).
"""

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from busflow_verify.core.checks.size_guard import SizeGuardResult, evaluate, scrub_deadline
from busflow_verify.core.store.listing import DumpObject, trailing_history
from busflow_verify.core.verdict import RunFacts
from busflow_verify.defs.checks import size_guard_check
from busflow_verify.defs.descriptions import describe
from busflow_verify.defs.findings import check_result
from busflow_verify.defs.locate import partition_date
from busflow_verify.defs.metadata_tables import table
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.resources import BackupStore, VerifySettings
from busflow_verify.defs.run_history import VerifiedBefore, verified_before

HISTORY_COLUMNS = [
    ("date", "string", "the dump's date (UTC)"),
    ("key", "string", "object key"),
    ("size_bytes", "int", "size from HEAD/listing"),
    ("dump", "string", "trailing: an input of the median; this dump: the one guarded"),
]


@dataclass(frozen=True)
class SizeGuardOutcome(Mapping[str, Any]):
    """size_check's output: the guard's summary, read as a mapping (its keys are those of the
    `size_guard` metadata the verdict reads), and the verified partitions before this date."""

    summary: dict[str, Any]
    verified: VerifiedBefore

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.summary)

    def __len__(self) -> int:
        return len(self.summary)


@dg.asset(
    partitions_def=nightly_dump_partitions,
    group_name="backup_verify",
    check_specs=[size_guard_check],
    description=describe(
        2,
        "size guard",
        "The dump must be > size_guard.min_bytes (10 GB) and < max_median_ratio (2x) the median "
        "of the newest dump of each of the previous trailing_days (7) days. Sizes from "
        "HEAD/listing only; the history table lists the median's inputs.",
        ["SIZE_SHRUNK", "SIZE_EXCEEDED"],
    ),
)
def size_check(
    context: dg.AssetExecutionContext,
    dump_object: DumpObject,
    backup_store: BackupStore,
    verify_settings: VerifySettings,
):
    config = verify_settings.verify_config()
    guard = config.size_guard
    client = backup_store.endpoint(dump_object.endpoint).client()  # where the dump was found
    history = trailing_history(
        client,
        dump_object.bucket,
        backup_store.prefix,
        partition_date(context),
        guard.trailing_days,
    )
    result = evaluate(
        dump_object.key,
        dump_object.size_bytes,
        history,
        min_bytes=guard.min_bytes,
        max_median_ratio=guard.max_median_ratio,
    )
    verified = verified_before(
        context.instance, context.partition_key, config.restore_budget.trailing_runs
    )
    summary = _summary(result)
    if result.findings:
        _name_the_deadline(result.findings, guard, verified.baseline)
    yield dg.Output(
        SizeGuardOutcome(summary, verified), metadata=_metadata(result, summary, dump_object)
    )
    yield check_result(
        size_guard_check,
        result.findings,
        {
            "size_bytes": result.size_bytes,
            "min_bytes": result.min_bytes,
            "median_bytes": result.median_bytes or 0.0,
            "ratio": result.ratio or 0.0,
        },
        passed_note="size within the floor and the trailing-median ratio",
    )


def _summary(result: SizeGuardResult) -> dict[str, Any]:
    return {
        "size_bytes": result.size_bytes,
        "min_bytes": result.min_bytes,
        "median_bytes": result.median_bytes,
        "ratio": result.ratio,
        "max_median_ratio": result.max_median_ratio,
        "history": result.history,
        "passed": result.passed,
    }


def _metadata(result: SizeGuardResult, summary: dict[str, Any], dump: DumpObject) -> dict:
    return {
        "size_bytes": result.size_bytes,
        "median_bytes": dg.MetadataValue.float(result.median_bytes)
        if result.median_bytes
        else "no trailing history: only the floor applies",
        "ratio_to_median": dg.MetadataValue.float(round(result.ratio, 4))
        if result.ratio
        else "n/a",
        "history": _history_table(result.history, dump),
        "size_guard": dg.MetadataValue.json(summary),
    }


def _name_the_deadline(findings: list, guard, baseline: RunFacts | None) -> None:
    """F1 step 3: the next step says before when the new pg_dump must land (the next scrub run
    of the last verified dump's pg_cron jobs), or that none is known."""
    jobs = ((baseline.restore or {}).get("cron_jobs") or []) if baseline else []
    deadline = scrub_deadline(
        jobs,
        guard.scrub_job_pattern,
        dt.datetime.now(dt.timezone.utc),
        baseline.partition if baseline else None,
    )
    for finding in findings:
        finding.next_step = f"{finding.mode.next_step} {deadline['text']}"
        finding.details["scrub_deadline"] = deadline


def _history_table(history: dict, dump: DumpObject) -> dg.TableMetadataValue:
    """The trailing days' newest dumps (the median's inputs), then this dump."""
    rows = [
        {"date": day, "key": h["key"], "size_bytes": h["size_bytes"], "dump": "trailing"}
        for day, h in history.items()
    ]
    rows.append(
        {
            "date": dump.taken_at[:10],
            "key": dump.key,
            "size_bytes": dump.size_bytes,
            "dump": "this dump",
        }
    )
    return table(HISTORY_COLUMNS, rows)
