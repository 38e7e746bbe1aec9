"""F1, the size guard: a dump must be > min_bytes and < max_median_ratio x the trailing median."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

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


def evaluate(key: str, size_bytes: int, history: dict[str, dict[str, Any]], *, min_bytes: int,
             max_median_ratio: float) -> SizeGuardResult:
    """SIZE_SHRUNK at or below the floor; SIZE_EXCEEDED at or above ratio x median.

    The median is over the newest dump of each trailing day that has one; with no history only
    the floor applies.
    """
    sizes = [h["size_bytes"] for h in history.values()]
    median = float(statistics.median(sizes)) if sizes else None
    ratio = size_bytes / median if median else None
    result = SizeGuardResult(size_bytes, min_bytes, max_median_ratio, history, median, ratio)
    common = {"key": key, "size_bytes": size_bytes, "min_bytes": min_bytes,
              "median_bytes": median, "ratio": ratio, "max_median_ratio": max_median_ratio,
              "history_days": len(sizes)}
    if size_bytes <= min_bytes:
        result.findings.append(Finding(
            "SIZE_SHRUNK",
            f"{key} is {_human(size_bytes)}, at or below the {_human(min_bytes)} floor: possible "
            "truncation",
            common,
        ))
    if median and size_bytes >= max_median_ratio * median:
        result.findings.append(Finding(
            "SIZE_EXCEEDED",
            f"{key} is {_human(size_bytes)}, {ratio:.2f}x the {len(sizes)}-day trailing median of "
            f"{_human(median)} (limit {max_median_ratio}x): possible runaway write",
            common,
        ))
    return result


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n}"
