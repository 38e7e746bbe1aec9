"""Turning the core's findings into check results and step failures, catalogue metadata included."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from busflow_verify.core.failures import CATALOGUE, Finding, failure_label
from busflow_verify.defs.partitions import nightly_dump_partitions

FINDING_KEY = "finding"
FINDINGS_KEY = "findings"


def check_spec(
    name: str, asset: str, failure_names: Iterable[str], description: str, *, blocking: bool = False
) -> dg.AssetCheckSpec:
    """A partitioned check carrying the runbook code, name(s), severity, escalation and section."""
    modes = [CATALOGUE[n] for n in failure_names]
    with warnings.catch_warnings():  # partitioned check specs are "preview" in dagster 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return _spec(name, asset, modes, description, blocking)


def _spec(name, asset, modes, description, blocking) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name,
        asset=asset,
        description=description,
        blocking=blocking,
        partitions_def=nightly_dump_partitions,
        metadata={
            "runbook_code": modes[0].code,
            "runbook_name": " or ".join(m.name for m in modes),
            "severity": modes[0].severity,
            "escalate_to": ", ".join(modes[0].escalate_to),
            "runbook_section": modes[0].runbook_section,
        },
    )


def check_result(
    spec: dg.AssetCheckSpec,
    findings: list[Finding],
    metadata: Mapping[str, Any] | None = None,
    passed_note: str = "",
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
    """Passed when there are no findings; else failed at `severity` with every finding attached.

    WARN is informational (an outage the fallback covered): it does not stand in the way of
    verification. ERROR is a failure of the dump.
    """
    first = findings[0].to_dict() if findings else None
    meta: dict[str, Any] = {
        "runbook_code": spec.metadata["runbook_code"],
        "runbook_section": spec.metadata["runbook_section"],
        **(metadata or {}),
    }
    if first:
        meta.update(
            {
                "runbook_name": first["name"],
                "severity": first["severity"],
                "escalate_to": ", ".join(first["escalate_to"]),
                "summary": "\n".join(f.summary for f in findings),
                "next_step": first["next_step"],
                FINDINGS_KEY: dg.MetadataValue.json([f.to_dict() for f in findings]),
            }
        )
    return dg.AssetCheckResult(
        check_name=spec.name,
        asset_key=spec.asset_key,
        passed=not findings,
        severity=severity,
        description=meta.get("summary") or passed_note or None,
        metadata=meta,
    )


def fail_step(finding: Finding) -> dg.Failure:
    """A step failure carrying the finding, for stages that cannot produce their asset at all."""
    as_dict = finding.to_dict()
    return dg.Failure(
        description=f"{failure_label(as_dict)}: {finding.summary}. Next: {as_dict['next_step']}",
        metadata={FINDING_KEY: dg.MetadataValue.json(as_dict)},
        allow_retries=False,
    )
