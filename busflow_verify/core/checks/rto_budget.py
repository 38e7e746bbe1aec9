"""The restore time is the RTO: judge one restore against verify.yaml's `restore_budget`.

The cutover runbook relies on the verified dump, so how long it takes to restore is the recovery
time. A restore fails the budget when it takes longer than `max_seconds`, or more than
`max_median_ratio` x the median restore seconds of the trailing verified runs (judged only once
the restore takes `growth_floor_seconds` or more: below that, the ratio is noise). Either is an
RTO_EXCEEDED finding, reported at WARN severity: informational, it never blocks the pointer.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from busflow_verify.core.config import RestoreBudgetConfig
from busflow_verify.core.failures import Finding


@dataclass
class BudgetResult:
    seconds: float
    max_seconds: float
    median_seconds: float | None  # of the trailing verified runs' restore seconds
    ratio: float | None  # seconds / median_seconds
    max_median_ratio: float
    history: dict[str, float]  # partition -> restore seconds of the verified runs used
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "findings"}


def judge_restore(
    seconds: float, history: Sequence[tuple[str, float]], cfg: RestoreBudgetConfig
) -> BudgetResult:
    """The budget's verdict on a restore of `seconds`, against `history`: (partition, restore
    seconds) of the trailing verified runs, newest first."""
    trailing = {p: s for p, s in history if s is not None}
    median = statistics.median(trailing.values()) if trailing else None
    ratio = round(seconds / median, 4) if median else None
    result = BudgetResult(seconds, cfg.max_seconds, median, ratio, cfg.max_median_ratio, trailing)
    over = []
    if seconds > cfg.max_seconds:
        over.append(
            f"{seconds - cfg.max_seconds:.1f} s over the {cfg.max_seconds:g} s budget "
            f"({seconds / cfg.max_seconds:.2f}x the budget)"
        )
    if ratio is not None and ratio > cfg.max_median_ratio and seconds >= cfg.growth_floor_seconds:
        limit = median * cfg.max_median_ratio
        over.append(
            f"{ratio:.2f}x the trailing median of {median:.1f} s over {len(trailing)} verified "
            f"run(s) (limit {cfg.max_median_ratio:g}x = {limit:.1f} s: {seconds - limit:.1f} s "
            "over)"
        )
    if over:
        result.findings.append(
            Finding(
                "RTO_EXCEEDED",
                f"restore took {seconds:.1f} s: " + "; ".join(over),
                result.to_dict(),
            )
        )
    return result
