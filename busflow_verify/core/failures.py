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
- HOST_OUT_OF_SPACE: the verify host (or the restore server) ran out of disk at the download,
  initdb, CREATE DATABASE, a restore section or VACUUM, or the free-space check refused before
  the download. P2, @infra-oncall: free space or move the scratch dir; never F2, never
  "snapshot the source".
- VERIFY_HOST_FAULT: another fault of the verify host (permission denied on its scratch dir, out
  of memory, the disposable server not starting). P2, @infra-oncall.
- RTO_EXCEEDED: the restore took longer than verify.yaml's restore_budget (max_seconds, or
  max_median_ratio x the trailing verified runs' median): the cutover's recovery time grew. P3,
  @infra-oncall; a WARN check, informational: it never blocks the pointer.
- SCHEMA_DRIFT: a table appeared, or a table's columns (name, type) changed, since the last
  verified dump. P3, @data-oncall; a WARN check (a table that disappeared is ROW_COUNT_DRIFT).
- DUMP_INCOMPLETE (code F2): a restored table's rows differ from the exact count the producer's
  manifest took in pg_dump's own snapshot, or a table is in one and not the other: the dump is
  missing data. P1, @infra-oncall + @data-oncall (F2, corruption suspected: snapshot first).
- DUMP_CONTENT_DIFFERS (code F2): a restored table has the row count the producer's manifest
  took in pg_dump's snapshot but not its content (the fingerprint of its rows' text form
  differs): a value truncated, changed or a row swapped. P1, @infra-oncall + @data-oncall, like
  DUMP_INCOMPLETE.
- MANIFEST_SIGNATURE_INVALID (code F2): a public key is configured and the manifest beside the
  dump is unsigned, its signature malformed or not verifying (or there is no manifest). P1,
  @infra-oncall + @data-oncall + @security-oncall: nothing is downloaded or restored.
- STORED_OBJECT_MISMATCH (code F2): the object in the bucket is not the one the producer wrote:
  its size (HEAD) or SHA-256 differs from the manifest's while the endpoints answered normally.
  P1, @infra-oncall + @security-oncall; never F5 (no outage), never the cutover halt.
- SEQUENCE_BEHIND: after the restore, a sequence owned by a column would hand out a value the
  column already has (its last_value is below the column's max): the first inserts after a
  cutover would fail on duplicate keys. P2, @data-oncall; a WARN check, it never blocks the
  pointer.
- VERIFICATION_STALE: the dead-man's switch (core/report/deadman.py): no dump verified for
  longer than verify.yaml's deadman.max_age_hours (default 26 h) — runs failed, never started
  (daemon down, queue stuck) or hang. P1, @infra-oncall; posted once, and once more on recovery.
- EVIDENCE_NOT_WRITTEN: the run's signed evidence (core/report/evidence.py) could not be written to
  the bucket. P2, @platform-oncall: the audit record of a verification is missing, the backup is
  not implicated; like F4 it never changes `verified` and never decides the CLI's exit status.
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
    FailureMode(
        "HOST_OUT_OF_SPACE",
        "HOST_OUT_OF_SPACE",
        "P2",
        ("@infra-oncall",),
        "Workflow step (3): the verify host (not the backup)",
        "Free space on the verify host where the summary says (the download's scratch dir or "
        "the disposable cluster's data dir), or move the scratch dir to a bigger disk (TMPDIR, "
        "restore_target.scratch_dir), then re-run the date. The backup is not implicated.",
    ),
    FailureMode(
        "VERIFY_HOST_FAULT",
        "VERIFY_HOST_FAULT",
        "P2",
        ("@infra-oncall",),
        "Workflow step (3): the verify host (not the backup)",
        "Fix the verify host's fault the summary names (permissions of the scratch dir, memory, "
        "a server that will not start), then re-run the date. The backup is not implicated.",
    ),
    FailureMode(
        "RTO_EXCEEDED",
        "RTO_EXCEEDED",
        "P3",
        ("@infra-oncall",),
        "Workflow step (3): the restore time is the cutover's RTO",
        "Informational: the dump still verifies. Tell the cutover owners the recovery time grew; "
        "look at the restored_db Plots (restore seconds per section) for where, then add restore "
        "capacity or raise verify.yaml restore_budget with the evidence in the PR.",
    ),
    FailureMode(
        "SCHEMA_DRIFT",
        "SCHEMA_DRIFT",
        "P3",
        ("@data-oncall",),
        "Workflow step (4): row counts vs the last verified dump (schema)",
        "Informational: confirm the new tables and changed columns match a migration that "
        "shipped since the last verified dump; one that did not is a finding for the data team.",
    ),
    FailureMode(
        "F2",
        "DUMP_INCOMPLETE",
        "P1",
        ("@infra-oncall", "@data-oncall"),
        "F2 — RESTORE_FAILED",
        "Re-run pg_dump, snapshot the source first (PITR via Ubicloud): the restored tables lack "
        "rows the source had in pg_dump's own snapshot. Never promote this dump.",
    ),
    FailureMode(
        "F2",
        "DUMP_CONTENT_DIFFERS",
        "P1",
        ("@infra-oncall", "@data-oncall"),
        "F2 — RESTORE_FAILED",
        "Re-run pg_dump, snapshot the source first (PITR via Ubicloud): the restored table has "
        "the source's row count but other content (a value truncated or changed, a row "
        "swapped). Compare the named table on the source with a restore of this dump to find the "
        "rows; suspect the dump's path (encoding, a faulty pipe). Never promote this dump.",
    ),
    FailureMode(
        "F2",
        "MANIFEST_SIGNATURE_INVALID",
        "P1",
        ("@infra-oncall", "@data-oncall", "@security-oncall"),
        "F2 — RESTORE_FAILED",
        "Treat it as a security event: nothing was restored. Ask the producer's owners whether "
        "the manifest was re-written or the signing key rotated (BUSFLOW_MANIFEST_PUBLIC_KEY "
        "must hold the new public key); if neither, someone with write access to the bucket "
        "replaced it: compare with the mirror's copy, re-run pg_dump with --signing-key, and "
        "never promote this dump.",
    ),
    FailureMode(
        "F2",
        "STORED_OBJECT_MISMATCH",
        "P1",
        ("@infra-oncall", "@security-oncall"),
        "F2 — RESTORE_FAILED",
        "The object in the bucket is not the one the producer wrote (not an outage: the "
        "endpoints answered). Compare it with the mirror's copy (HEAD both: the sizes are in "
        "the summary), re-run pg_dump and upload it again, and treat it as a security event "
        "if nobody re-uploaded it. Never promote this dump.",
    ),
    FailureMode(
        "SEQUENCE_BEHIND",
        "SEQUENCE_BEHIND",
        "P2",
        ("@data-oncall",),
        "Workflow step (4): the restored database is what a cutover gets (sequences)",
        "Informational: the dump still verifies. Check the sequence on the source (was it "
        "setval'd below its column's max?) and fix it there; before a cutover to this dump run "
        "SELECT setval('<sequence>', max(<column>)) FROM <table>, or the first inserts fail on "
        "duplicate keys.",
    ),
    FailureMode(
        "VERIFICATION_STALE",
        "VERIFICATION_STALE",
        "P1",
        ("@infra-oncall",),
        "Dead-man's switch — VERIFICATION_STALE",
        "Check that dagster-daemon runs and the schedule backup_verify_daily_0300_utc is on "
        "(busflow-verify status), unstick the run queue, then verify the missing date "
        "(busflow-verify verify --date YYYY-MM-DD --promote); cutover must not rely on an "
        "unverified dump meanwhile.",
    ),
    FailureMode(
        "EVIDENCE_NOT_WRITTEN",
        "EVIDENCE_NOT_WRITTEN",
        "P2",
        ("@platform-oncall",),
        "Evidence — EVIDENCE_NOT_WRITTEN",
        "The backup verdict is unaffected. Fix what the summary names (the bucket's credentials "
        "or reachability, the signing key), then write the run's evidence again: "
        "busflow-verify evidence write --date YYYY-MM-DD --run RUN_ID (or alerts repost).",
    ),
]

CATALOGUE: dict[str, FailureMode] = {m.name: m for m in _MODES}

# Failures of the verifier and its host, not of the backup: a day that has only these (and F4)
# is "the verifier broke" (CLI exit 3), and nothing was learnt about the dump.
VERIFIER_FAULTS = frozenset({"VERIFY_JOB_ERROR", "HOST_OUT_OF_SPACE", "VERIFY_HOST_FAULT"})


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
