"""The runbook's failure catalogue and escalation matrix, in one place.

Every check, the JSON verdict and the #ops message take code, name, severity, who to page
and the runbook step from here. The runbook's appendix:

| Failure | Default severity | Escalate to |
| F1 (size) | P2 | @data-oncall |
| F2 (restore) | P1 if corruption suspected | @infra-oncall + @data-oncall |
| F3 (orphan-FK surge) | P2, P1 if tenant-spanning | @data-oncall + @security-oncall |
| F4 (Slack) | P3 | @platform-oncall |
| F5 (offsite) | P1 if both endpoints down | @infra-oncall |

Codes the runbook does not have, with their documented rows:
- DUMP_MISSING: no dump of that date in the bucket. P1, @infra-oncall + @data-oncall: a night
  without a backup is an outage of the backup producer, and nothing else can be verified.
- ROW_COUNT_DRIFT: a table's row count moved beyond verify.yaml's tolerances against the last
  verified dump. P2, @data-oncall (the same evidence the runbook's F1 step 1 asks for).
- VERIFY_JOB_ERROR: a step of the verify job itself crashed (not a finding about the dump).
  P2, @data-oncall; the day is not verified until a run completes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FailureMode:
    code: str
    name: str
    severity: str
    escalate_to: tuple[str, ...]
    runbook_section: str
    next_step: str


RUNBOOK = "Runbook: Daily Backup Verify Triage"


def failure_label(failure: dict[str, Any]) -> str:
    """How a failure is named to people: "F3 ORPHAN_FK_SURGE"; a code the runbook does not number
    (DUMP_MISSING, ROW_COUNT_DRIFT, VERIFY_JOB_ERROR) is its own name, said once."""
    code, name = failure["code"], failure["name"]
    return name if code == name else f"{code} {name}"


_MODES = [
    FailureMode(
        "F1",
        "SIZE_SHRUNK",
        "P2",
        ("@data-oncall",),
        "F1 — SIZE_EXCEEDED or SIZE_SHRUNK",
        "Compare row counts of commerce.bookings, communications.messages, operations.service_legs "
        "with last night's verified dump (F1 step 1); if disproportionate the dump is corrupt: "
        "re-run pg_dump before the next pg_cron scrub cycle (F1 step 3). Never promote it.",
    ),
    FailureMode(
        "F1",
        "SIZE_EXCEEDED",
        "P2",
        ("@data-oncall",),
        "F1 — SIZE_EXCEEDED or SIZE_SHRUNK",
        "Compare row counts of the largest tables with last night's verified dump (F1 step 1); "
        "raise the median tolerance only with evidence in the PR (F1 step 2). Never promote it.",
    ),
    FailureMode(
        "F2",
        "RESTORE_FAILED",
        "P2",
        ("@infra-oncall", "@data-oncall"),
        "F2 — RESTORE_FAILED",
        "Walk F2: check the object's format (HTML error page → credentials), a CREATE EXTENSION "
        "failure → docker/backup/producer.env, a COPY failure → snapshot the source (PITR via "
        "Ubicloud) before touching anything else.",
    ),
    FailureMode(
        "F3",
        "ORPHAN_FK_SURGE",
        "P2",
        ("@data-oncall", "@security-oncall"),
        "F3 — ORPHAN_FK_SURGE",
        "Triage each surge in config/backup-verify/soft-fk-allowlist.yaml: expected (scrub "
        "tombstoned rows; raise only with tenant_scrub_logs UUIDs) or unexpected (open a P2 issue "
        "and pin the FK). Never blanket-raise a tolerance.",
    ),
    FailureMode(
        "F4",
        "SLACK_NOTIFICATION_FAILURE",
        "P3",
        ("@platform-oncall",),
        "F4 — SLACK_NOTIFICATION_FAILURE",
        "4xx: rotate SLACK_OPS_WEBHOOK and re-post to #ops manually; 5xx: Slack outage, post "
        "manually, no rotation.",
    ),
    FailureMode(
        "F5",
        "OFFSITE_ENDPOINT_DOWN",
        "P1",
        ("@infra-oncall",),
        "F5 — OFFSITE_ENDPOINT_DOWN → MinIO fallback",
        "The dump is inaccessible: page @infra-oncall and halt pending cutover work until a "
        "verified dump is produced.",
    ),
    FailureMode(
        "DUMP_MISSING",
        "DUMP_MISSING",
        "P1",
        ("@infra-oncall", "@data-oncall"),
        "Workflow step (1): stream the latest pg_dump_YYYYMMDD_HHMM.dump",
        "Check that the nightly pg_dump ran and uploaded; re-run it, then verify this date again.",
    ),
    FailureMode(
        "ROW_COUNT_DRIFT",
        "ROW_COUNT_DRIFT",
        "P2",
        ("@data-oncall",),
        "Workflow step (4): assert row-count deltas are within tolerance",
        "Compare the drifting tables on the source with the dump; if the source agrees, the change "
        "is real (adjust verify.yaml with evidence), else re-run pg_dump.",
    ),
    FailureMode(
        "VERIFY_JOB_ERROR",
        "VERIFY_JOB_ERROR",
        "P2",
        ("@data-oncall",),
        "Workflow (the verify job itself)",
        "Read the failed step's error in the Dagster run, fix the cause, re-run the date.",
    ),
]

CATALOGUE: dict[str, FailureMode] = {m.name: m for m in _MODES}


@dataclass
class Finding:
    """One failure found by a check: the catalogue entry plus what was seen."""

    name: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None  # overrides the default (e.g. F2 P1 when corruption is suspected)
    next_step: str | None = None  # overrides the mode's step where the cause says more
    escalate_to: tuple[str, ...] | None = None  # overrides the matrix (a security event)

    @property
    def mode(self) -> FailureMode:
        return CATALOGUE[self.name]

    def to_dict(self) -> dict[str, Any]:
        mode = self.mode
        return {
            "code": mode.code,
            "name": mode.name,
            "severity": self.severity or mode.severity,
            "escalate_to": list(self.escalate_to or mode.escalate_to),
            "summary": self.summary,
            "details": self.details,
            "runbook_section": mode.runbook_section,
            "next_step": self.next_step or mode.next_step,
        }


class FindingError(Exception):
    """Raised by core code when a stage cannot go on; carries the finding to report."""

    def __init__(self, finding: Finding):
        super().__init__(finding.summary)
        self.finding = finding
