"""The numbers Dagster plots over partitions (an asset's *Plots* tab), named in one place.

Dagster draws int and float metadata of a partitioned asset's materializations as a line over
the partitions, one plot per key; the keys are the same every day (and on failure paths, where
the value is known) so the plots line up. Each asset adds its numbers with one line:

| asset | keys |
|---|---|
| `restored_db` | `dump_bytes`, `restored_bytes` (pg_database_size), `download_seconds`, `restore_seconds` (set by the asset), `restore_pre_data_seconds`, `restore_data_seconds`, `restore_post_data_seconds` (`restore_plain_seconds` for a plain dump) |
| `row_count_report` | `vacuum_analyze_seconds`, `count_seconds`, `vacuum_and_count_seconds`, `rows.<schema.table>` for each of size_guard.largest_tables |
| `orphan_report` | `orphans.<schema.table.column>` per soft FK, `run_seconds` (the run's start to the sweep's end) |

The restore seconds are also judged here: the RTO budget check (core/checks/rto_budget.py) against
the trailing verified runs' `restore_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from busflow_verify.core.checks.row_counts import database_bytes
from busflow_verify.core.checks.rto_budget import judge_restore
from busflow_verify.core.config import RestoreBudgetConfig
from busflow_verify.core.store.listing import DumpObject
from busflow_verify.defs.checks import restore_budget_check
from busflow_verify.defs.findings import check_result
from busflow_verify.defs.run_history import DUMP_BYTES_KEY, RESTORED_BYTES_KEY, last_verified

RESTORE_SECONDS_KEY = "restore_seconds"
RUN_SECONDS_KEY = "run_seconds"


def section_key(section: str) -> str:
    return f"restore_{section.replace('-', '_')}_seconds"


def rows_key(table: str) -> str:
    return f"rows.{table}"


def orphans_key(child: str) -> str:
    return f"orphans.{child}"


def numbers(values: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """Int and float metadata values (what the Plots tab draws); unknown values are left out."""
    out: dict[str, dg.MetadataValue] = {}
    for key, value in values.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            out[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[key] = dg.MetadataValue.float(round(value, 3))
    return out


def restored_bytes(session) -> int:
    """pg_database_size of the database restored in this run (its RestoreSession)."""
    return database_bytes(session.connect)


def restore_plots(dump: DumpObject, summary: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """restored_db's numbers (download and total restore seconds are already its own keys)."""
    return numbers(
        {
            DUMP_BYTES_KEY: dump.size_bytes,
            RESTORED_BYTES_KEY: summary.get(RESTORED_BYTES_KEY),
            **{section_key(s["section"]): float(s["seconds"]) for s in summary["sections"]},
        }
    )


def row_count_plots(
    counts: Mapping[str, int], largest_tables: Iterable[str], timings: Mapping[str, float]
) -> dict[str, dg.MetadataValue]:
    """row_count_report's numbers: VACUUM ANALYZE and count seconds, the largest tables' rows."""
    return numbers({**timings, **{rows_key(t): counts.get(t) for t in largest_tables}})


def orphan_plots(
    context: dg.AssetExecutionContext, rows: Iterable[Mapping[str, Any]]
) -> dict[str, dg.MetadataValue]:
    """orphan_report's numbers: orphans per soft FK (a failed sweep has none) and the run's
    seconds so far: the sweep is the last stage."""
    record = context.instance.get_run_record_by_id(context.run_id)
    started = record.start_time if record else None
    return numbers(
        {
            **{orphans_key(r["child"]): r["orphans"] for r in rows},
            RUN_SECONDS_KEY: time.time() - started if started else None,
        }
    )


def trailing_restore_seconds(
    instance: dg.DagsterInstance, before_partition: str, runs: int
) -> list[tuple[str, float]]:
    """(partition, restore seconds) of the `runs` newest verified partitions before this one,
    newest first: the RTO budget's history (run_history.py `last_verified`, walked back)."""
    history: list[tuple[str, float]] = []
    while len(history) < runs:
        facts = last_verified(instance, before_partition)
        if facts is None:
            break
        seconds = (facts.restore or {}).get(RESTORE_SECONDS_KEY)
        if isinstance(seconds, (int, float)) and seconds > 0:
            history.append((facts.partition, float(seconds)))
        before_partition = facts.partition
    return history


def restore_budget_result(
    context: dg.AssetExecutionContext, summary: Mapping[str, Any] | None, cfg: RestoreBudgetConfig
) -> dg.AssetCheckResult:
    """The RTO budget check of this restore, at WARN severity (informational: never blocks).
    Without a summary (the restore was skipped) there is nothing to time: no pass either."""
    if summary is None:
        return dg.AssetCheckResult(
            check_name=restore_budget_check.name,
            asset_key=restore_budget_check.asset_key,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="not restored: no restore time to judge",
            metadata={"skipped": True},
        )
    seconds = float(summary.get(RESTORE_SECONDS_KEY) or 0.0)
    history = trailing_restore_seconds(context.instance, context.partition_key, cfg.trailing_runs)
    result = judge_restore(seconds, history, cfg)
    if result.findings:
        context.log.warning(result.findings[0].summary)
    return check_result(
        restore_budget_check,
        result.findings,
        {
            RESTORE_SECONDS_KEY: seconds,
            "max_seconds": cfg.max_seconds,
            "trailing_median_seconds": result.median_seconds or 0.0,
            "ratio_to_median": result.ratio or 0.0,
            "max_median_ratio": cfg.max_median_ratio,
            "trailing_verified_runs": len(result.history),
        },
        passed_note=f"restored in {seconds:.1f} s, within the {cfg.max_seconds:g} s budget"
        + (
            f" and {result.ratio:.2f}x the trailing median of {result.median_seconds:.1f} s"
            if result.ratio is not None
            else " (no verified run to compare with yet)"
        ),
        severity=dg.AssetCheckSeverity.WARN,
    )
