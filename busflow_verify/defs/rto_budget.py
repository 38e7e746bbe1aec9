"""The RTO budget check of restored_db: the restore time against verify.yaml's restore_budget
and the trailing verified runs' restore seconds (the judgement is core/checks/rto_budget.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from busflow_verify.core.checks.rto_budget import judge_restore
from busflow_verify.core.config import RestoreBudgetConfig
from busflow_verify.defs.checks import restore_budget_check
from busflow_verify.defs.findings import check_result
from busflow_verify.defs.run_history import RESTORE_SECONDS_KEY, VerifiedBefore


def restore_budget_result(
    context: dg.AssetExecutionContext,
    summary: Mapping[str, Any] | None,
    cfg: RestoreBudgetConfig,
    verified: VerifiedBefore,
) -> dg.AssetCheckResult:
    """The RTO budget check of this restore, at WARN severity (informational: never blocks),
    against the trailing runs among the `verified` partitions before this one (read once per run
    by size_check). Without a summary (the restore was skipped) there is nothing to time: no
    pass either."""
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
    result = judge_restore(seconds, verified.timed_restores[: cfg.trailing_runs], cfg)
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
