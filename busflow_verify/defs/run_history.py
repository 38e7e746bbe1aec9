"""Reading what runs recorded in the Dagster instance: check evaluations, metadata, verdicts.

The instance is the record of truth: the verified runs before a date (the row-count baseline and
the RTO budget's trailing runs), the CLI's JSON verdict, the #ops alerts, promotion, the dead-man's
switch and `busflow-verify status` all read it here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType

from busflow_verify.core.failures import Finding
from busflow_verify.core.hostfaults import host_fault
from busflow_verify.core.report.cutover import CutoverHalt
from busflow_verify.core.verdict import CheckOutcome, RunFacts, Verdict, build_verdict, is_verified
from busflow_verify.defs.checks import EXPECTED_CHECK_KEYS
from busflow_verify.defs.findings import FINDING_KEY, FINDINGS_KEY

JOB_NAME = "backup_verify_job"
PARTITION_TAG = "dagster/partition"
COMPLETED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
_BLOCKED_BY_CHECK = "DagsterAssetCheckFailedError"
_INTERRUPTED = "DagsterExecutionInterruptedError"
COLUMN_SIGNATURE_KEY = "column_signature"  # row_count_report's: the next run's schema baseline


def _plain(metadata: dict) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


@dataclass(frozen=True)
class Recorded:
    """What one run recorded, as read from its event log."""

    evaluations: dict[dg.AssetCheckKey, Any]  # the check evaluations, by check
    assets: dict[str, dict[str, Any]]  # each materialized asset's metadata (plain values)
    failures: list[dict[str, Any] | None]  # each failed step's finding (None: a blocked step)

    def check_metadata(self, key: dg.AssetCheckKey) -> dict[str, Any]:
        evaluation = self.evaluations.get(key)
        return _plain(evaluation.metadata) if evaluation else {}


def recorded(instance: dg.DagsterInstance, run_id: str) -> Recorded:
    """The run's check evaluations, its assets' metadata and its step failures."""
    events = instance.all_logs(
        run_id,
        of_type={
            DagsterEventType.ASSET_CHECK_EVALUATION,
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.STEP_FAILURE,
        },
    )
    evaluations, assets, failures = {}, {}, []
    for entry in events:
        event = entry.dagster_event
        data = event.event_specific_data
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluations[data.asset_check_key] = data
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            assets[data.materialization.asset_key.to_user_string()] = _plain(
                data.materialization.metadata
            )
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            failures.append(_step_failure(event.step_key, data))
    return Recorded(evaluations, assets, failures)


def run_facts(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunFacts:
    """What `run` recorded: its check evaluations, its assets' metadata and its step failures."""
    run_id = run.run_id
    found = recorded(instance, run_id)
    evaluations, assets, failures = found.evaluations, found.assets, found.failures
    checks = []
    for key in EXPECTED_CHECK_KEYS:
        ev = evaluations.get(key)
        findings = _plain(ev.metadata).get(FINDINGS_KEY, []) if ev else []
        checks.append(
            CheckOutcome(
                key.to_user_string(),
                ev.passed if ev else None,
                findings,
                ev.description if ev else None,
                ev.severity.value if ev else "ERROR",
            )
        )
    rows = assets.get("row_count_report", {})
    return RunFacts(
        partition=run.tags.get(PARTITION_TAG, ""),
        run_id=run_id,
        run_status=run.status.value,
        checks=checks,
        step_failures=[f for f in failures if f is not None],
        dump=assets.get("dump_object", {}).get("dump"),
        row_counts=rows.get("row_counts"),
        row_count_deltas=rows.get("deltas"),
        baseline_partition=rows.get("baseline", {}).get("partition") if rows else None,
        orphans=assets.get("orphan_report", {}).get("orphans"),
        restore=assets.get("restored_db", {}).get("restore"),
        size_guard=assets.get("size_check", {}).get("size_guard"),
        f1_triage=rows.get("f1_triage"),
        column_signature=rows.get(COLUMN_SIGNATURE_KEY),
    )


def _step_failure(step_key: str, data) -> dict[str, Any] | None:
    """The finding a step failed with; None when a blocking check failed (reported by the check)."""
    user = data.user_failure_data
    if user and FINDING_KEY in user.metadata:
        return user.metadata[FINDING_KEY].value
    error = data.error
    if error and error.cls_name == _BLOCKED_BY_CHECK:
        return None
    if error and error.cls_name == _INTERRUPTED:
        return Finding(
            "VERIFY_JOB_ERROR",
            f"step {step_key} was interrupted (the run was terminated): the day is not "
            "verified; re-run the date",
            {"step": step_key, "error": error.cls_name},
        ).to_dict()
    root = error
    while root is not None and root.cause is not None:  # the user code's error, not Dagster's wrap
        root = root.cause
    message = (root.message.strip().splitlines() or [""])[0] if root else "unknown error"
    text = f"{root.cls_name}: {root.message}" if root else ""
    if fault := host_fault(text, f"step {step_key}", where="the host of the restored database"):
        return fault.to_dict()  # a full disk at VACUUM, a count, the sweep: the host's
    return Finding(
        "VERIFY_JOB_ERROR",
        f"step {step_key} crashed: {message[:500]}",
        {"step": step_key, "error": error.cls_name if error else None},
    ).to_dict()


def verdict_for_run(instance: dg.DagsterInstance, run_id: str) -> Verdict:
    """The run's verdict from what it recorded, the cutover halt and the primary's outage."""
    facts = run_facts(instance, instance.get_run_by_id(run_id))
    return verdict_from_facts(instance, facts, CutoverHalt(instance.root_directory).get())


def verdict_from_facts(
    instance: dg.DagsterInstance, facts: RunFacts, halt: dict[str, Any] | None
) -> Verdict:
    """The verdict of a run whose facts are read, with the cutover halt as it stands."""
    down = _primary_down(facts)
    return build_verdict(
        facts,
        halt=halt,
        primary_down=down,
        primary_down_since=_primary_down_since(instance, facts) if down else None,
    )


def _primary_down(facts: RunFacts) -> bool:
    """Did this run find the offsite primary unreachable (fallback used, or both down)?"""
    offsite = next((c for c in facts.checks if c.check.startswith("dump_object:")), None)
    return bool(
        (offsite and offsite.informational) or any(f["code"] == "F5" for f in facts.step_failures)
    )


def _primary_down_since(
    instance: dg.DagsterInstance, facts: RunFacts, limit: int = 200
) -> dt.datetime | None:
    """When the primary started failing: the start of the oldest run in the unbroken series of
    runs (up to the run of `facts`) that found it unreachable. Remembered across runs by the
    instance."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=JOB_NAME, statuses=COMPLETED),
        limit=limit,
        order_by="create_timestamp",
        ascending=False,
    )
    ids = [r.dagster_run.run_id for r in records]
    since = None
    for record in records[ids.index(facts.run_id) if facts.run_id in ids else 0 :]:
        run = record.dagster_run
        if not _primary_down(facts if run.run_id == facts.run_id else run_facts(instance, run)):
            break
        since = record.create_timestamp
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.timezone.utc)
    return since


@dataclass(frozen=True)
class NewestRun:
    """The job's newest run (in any state) and, once it completed, its verdict."""

    record: dg.RunRecord
    verdict: Verdict | None  # None while the run has not completed

    @property
    def run(self) -> dg.DagsterRun:
        return self.record.dagster_run

    @property
    def verified(self) -> bool:
        return self.verdict.verified if self.verdict else False

    @property
    def failure_codes(self) -> tuple[str, ...]:
        """The verdict's failure codes, each once, in the verdict's order."""
        failures = self.verdict.failures if self.verdict else ()
        return tuple(dict.fromkeys(f["code"] for f in failures))


def newest_run(instance: dg.DagsterInstance, halt: dict[str, Any] | None) -> NewestRun | None:
    """The job's newest run and its verdict (built with the cutover `halt` as read), or None."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=JOB_NAME), limit=1, order_by="create_timestamp"
    )
    if not records:
        return None
    run = records[0].dagster_run
    completed = run.status in COMPLETED
    verdict = verdict_from_facts(instance, run_facts(instance, run), halt) if completed else None
    return NewestRun(records[0], verdict)


def latest_completed_runs(
    instance: dg.DagsterInstance, limit: int = 1000
) -> dict[str, dg.RunRecord]:
    """{partition: the record of its latest completed run}, newest partition first.

    A partition's state is its latest completed run: a later failed re-run of a date un-verifies
    it (it cannot serve as the row-count baseline, nor as the dead-man's last verified dump).
    """
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=JOB_NAME, statuses=COMPLETED),
        limit=limit,
        order_by="create_timestamp",
        ascending=False,
    )
    latest: dict[str, dg.RunRecord] = {}
    for record in records:  # newest first
        partition = record.dagster_run.tags.get(PARTITION_TAG)
        if partition and partition not in latest:
            latest[partition] = record
    return {p: latest[p] for p in sorted(latest, reverse=True)}


def verified_runs(
    instance: dg.DagsterInstance, before_partition: str | None = None
) -> Iterator[tuple[dg.RunRecord, RunFacts]]:
    """The partitions (before `before_partition`, when given) whose latest completed run verified
    them, newest first: that run's record and facts. One query for the runs; each run's facts
    are read as the walk reaches it."""
    for partition, record in latest_completed_runs(instance).items():
        if before_partition is None or partition < before_partition:
            facts = run_facts(instance, record.dagster_run)
            if is_verified(facts):
                yield record, facts


RESTORE_SECONDS_KEY = "restore_seconds"
RESTORED_BYTES_KEY, DUMP_BYTES_KEY = "restored_bytes", "dump_bytes"


def restore_seconds(facts: RunFacts) -> float | None:
    """The seconds the run's restore took, when it timed one."""
    seconds = (facts.restore or {}).get(RESTORE_SECONDS_KEY)
    return float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None


@dataclass(frozen=True)
class VerifiedBefore:
    """The verified partitions before one date, as far back as they are used: the newest is the
    baseline, and the newest that timed their restore are the RTO budget's trailing runs."""

    baseline: RunFacts | None  # the last verified dump: row counts, schema and F1 compare with it
    timed_restores: tuple[tuple[str, float], ...]  # (partition, restore seconds), newest first


def verified_before(
    instance: dg.DagsterInstance, partition: str, timed_restores: int
) -> VerifiedBefore:
    """The verified partitions before `partition`, walked once: to the baseline and to
    `timed_restores` runs that timed their restore."""
    baseline, timed = None, []
    for _, facts in verified_runs(instance, partition):
        if baseline is None:
            baseline = facts
        if (seconds := restore_seconds(facts)) is not None:
            timed.append((facts.partition, seconds))
        if len(timed) >= timed_restores:
            break
    return VerifiedBefore(baseline, tuple(timed))


def restored_size_history(
    instance: dg.DagsterInstance, before_partition: str, limit: int = 14
) -> list[tuple[int, int]]:
    """(dump bytes, restored bytes) of the latest restores of earlier partitions that measured
    both (the free-space estimate's history, core/diskspace.py)."""
    records = instance.fetch_materializations(dg.AssetKey("restored_db"), limit=limit * 3).records
    found: dict[str, tuple[int, int]] = {}
    for record in records:  # newest first
        materialization = record.asset_materialization
        partition = materialization.partition if materialization else None
        if not partition or partition >= before_partition or partition in found:
            continue
        meta = _plain(materialization.metadata)
        dumped, restored = meta.get(DUMP_BYTES_KEY), meta.get(RESTORED_BYTES_KEY)
        if isinstance(dumped, (int, float)) and isinstance(restored, (int, float)):
            found[partition] = (int(dumped), int(restored))
    return [found[p] for p in sorted(found, reverse=True)[:limit]]
