"""After a run: its signed evidence, written to the bucket (docs/operating.md: Evidence).

`record_evidence` is a step of `finish_run` (defs/finish.py): the run's statement
(core/report/evidence.py) is built from the verdict and what the run recorded, signed with
BUSFLOW_EVIDENCE_SIGNING_KEY (core/report/signing.py) and created, never overwritten, under
`verify-evidence/` in the primary bucket and the mirror (core/store/evidence.py). Without a key
nothing is written and the verdict says why. A write that fails is EVIDENCE_NOT_WRITTEN in the
verdict (`verified` unchanged) and the run is kept in `$DAGSTER_HOME/busflow-evidence-pending/`
until `busflow-verify evidence write` (or `alerts repost`) writes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import dagster as dg

from busflow_verify.core import config as cfg
from busflow_verify.core.failures import Finding
from busflow_verify.core.report.evidence import (
    EvidenceFacts,
    ManifestFacts,
    Previous,
    RunTimes,
    statement,
)
from busflow_verify.core.report.signing import (
    SIGNING_KEY_ENV,
    KeyProblem,
    SigningKey,
    load_signing_key,
    sign_statement,
)
from busflow_verify.core.store.evidence import (
    EvidenceExists,
    EvidenceWriteError,
    create_only,
    evidence_key,
    previous_before,
)
from busflow_verify.core.verdict import Verdict
from busflow_verify.defs import environment
from busflow_verify.defs.checks import manifest_count_check
from busflow_verify.defs.resources import BackupStore
from busflow_verify.defs.run_history import recorded, verdict_for_run

PENDING_DIR = "busflow-evidence-pending"
NO_KEY = f"{SIGNING_KEY_ENV} is not set: no evidence is written"
UTC = dt.timezone.utc


@dataclass(frozen=True)
class EvidenceOutcome:
    """What writing one run's evidence did: the verdict's `evidence`."""

    written: bool
    key: str | None = None
    sha256: str | None = None
    reason: str | None = None  # why nothing was written
    details: dict[str, Any] = field(default_factory=dict)  # method, previous, mirror, retention
    finding: dict[str, Any] | None = None  # EVIDENCE_NOT_WRITTEN

    def to_json(self) -> dict[str, Any]:
        out = {"written": self.written, "key": self.key, "sha256": self.sha256, **self.details}
        return {**out, "reason": self.reason} if self.reason else out


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _verifier_version() -> str:
    try:
        return package_metadata.version("busflow-verify")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def evidence_facts(instance: dg.DagsterInstance, run_id: str, store: BackupStore):
    """(EvidenceFacts, the run's end) from what the run recorded in the instance."""
    record = instance.get_run_record_by_id(run_id)
    found = recorded(instance, run_id)
    dump_meta = found.assets.get("dump_object", {})
    restore = found.assets.get("restored_db", {}).get("restore") or {}
    manifest_check = found.check_metadata(manifest_count_check.key)
    served = restore.get("downloaded_from")
    signature = dump_meta.get("manifest_signature")
    if signature is None:  # a run that recorded no signature state: say what is known
        present = manifest_check.get("manifest") not in (None, "absent")
        signature = "not_checked" if present else "no_manifest"
    facts = EvidenceFacts(
        run=RunTimes(
            run_id, record.dagster_run.status.value, _iso(record.start_time), _iso(record.end_time)
        ),
        dump_sha256=restore.get("dump_sha256"),
        served_by=served,
        served_by_url=store.endpoint(served).endpoint_url if served else None,
        manifest=ManifestFacts(dump_meta.get("manifest_sha256"), signature),
        manifest_comparison=manifest_check.get("comparison"),
        check_severities={
            key.to_user_string(): ev.severity.value for key, ev in found.evaluations.items()
        },
        verifier_version=_verifier_version(),
    )
    ended = record.end_time or record.start_time
    return facts, dt.datetime.fromtimestamp(ended, UTC) if ended else dt.datetime.now(UTC)


def write_evidence(
    instance: dg.DagsterInstance, verdict: Verdict, store: BackupStore, log
) -> EvidenceOutcome:
    """Sign and write the run's evidence (module docstring); never raises for the store's or
    the key's faults: they are the outcome's EVIDENCE_NOT_WRITTEN."""
    value = environment.evidence_signing_key()
    if value is None:
        log(NO_KEY)
        return EvidenceOutcome(False, reason=NO_KEY)
    try:
        key = load_signing_key(value)
        return _write(instance, verdict, store, key, log)
    except EvidenceExists as exc:
        log(f"evidence of run {verdict.run_id} is already written: {exc.key}")
        PendingEvidence(instance.root_directory).done(verdict.run_id)
        return EvidenceOutcome(True, exc.key, exc.sha256, details={"already_written": True})
    except Exception as exc:  # the key, the store: named, and the run kept for a retry
        return _not_written(instance, verdict, exc, log)


def _write(instance, verdict: Verdict, store: BackupStore, key: SigningKey, log):
    facts, ended = evidence_facts(instance, verdict.run_id, store)
    client = store.primary.client()
    object_key = evidence_key(store.prefix, verdict.partition, ended, verdict.run_id)
    found = previous_before(client, store.bucket, store.prefix, verdict.partition, object_key)
    previous = Previous(*found) if found else None
    envelope = sign_statement(statement(verdict, facts, previous), key)
    days = cfg.load_verify_config(environment.config_dir()).evidence.retention_days
    written = create_only(client, store.bucket, store.prefix, object_key, envelope, days)
    log(f"evidence written: s3://{store.bucket}/{written.key} (sha256 {written.sha256})")
    PendingEvidence(instance.root_directory).done(verdict.run_id)
    details = {
        "keyid": key.keyid,
        "method": written.method,
        "retain_until": written.retain_until,
        "previous": dataclasses.asdict(previous) if previous else None,
        "mirrored": _mirror(store, object_key, envelope, days, log),
    }
    return EvidenceOutcome(True, written.key, written.sha256, details=details)


def _mirror(store: BackupStore, key: str, envelope: bytes, days: int, log) -> bool | None:
    """The same object on the mirror, best effort (None: no mirror configured)."""
    if store.fallback is None:
        return None
    try:
        create_only(store.fallback.client(), store.bucket, store.prefix, key, envelope, days)
        return True
    except EvidenceExists:
        return True
    except Exception as exc:
        log(f"evidence not mirrored to the fallback ({type(exc).__name__})")
        return False


def _not_written(instance, verdict: Verdict, exc: Exception, log) -> EvidenceOutcome:
    ours = isinstance(exc, (KeyProblem, EvidenceWriteError))
    why = str(exc) if ours else f"{type(exc).__name__}: {str(exc)[:300]}"
    retry = f"busflow-verify evidence write --date {verdict.partition} --run {verdict.run_id}"
    finding = Finding(
        "EVIDENCE_NOT_WRITTEN",
        f"the signed evidence of run {verdict.run_id} ({verdict.partition}) was not written: "
        f"{why}. The backup verdict is unaffected.",
        {"run_id": verdict.run_id, "partition": verdict.partition, "error": type(exc).__name__},
        next_step=f"Fix the cause named, then `{retry}` (or `busflow-verify alerts repost`, which "
        "retries every run kept as pending).",
    )
    log(f"EVIDENCE_NOT_WRITTEN {finding.summary}")
    PendingEvidence(instance.root_directory).keep(verdict.partition, verdict.run_id, why)
    return EvidenceOutcome(False, reason=why, details={"pending": True}, finding=finding.to_dict())


def record_evidence(
    instance: dg.DagsterInstance, verdict: Verdict, store: BackupStore, log
) -> Verdict:
    """The verdict with its `evidence`, and EVIDENCE_NOT_WRITTEN in `failures` when the write
    failed; `verified` stays what the checks said."""
    outcome = write_evidence(instance, verdict, store, log)
    verdict = dataclasses.replace(verdict, evidence=outcome.to_json())
    return verdict.with_failure(outcome.finding) if outcome.finding else verdict


class PendingEvidence:
    """Runs whose evidence could not be written, one JSON file each, until it is."""

    def __init__(self, dagster_home: str | Path):
        self.folder = Path(dagster_home) / PENDING_DIR

    def keep(self, partition: str, run_id: str, reason: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f"{run_id}.tmp"
        tmp.write_text(json.dumps({"partition": partition, "run_id": run_id, "reason": reason}))
        tmp.rename(self.folder / f"{run_id}.json")

    def done(self, run_id: str) -> None:
        (self.folder / f"{run_id}.json").unlink(missing_ok=True)

    def pending(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.exists() else []:
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return found


def write_for_run(
    instance: dg.DagsterInstance, run_id: str, store: BackupStore, log
) -> EvidenceOutcome:
    """Write (again) the evidence of one completed run, its statement rebuilt from the instance
    (`busflow-verify evidence write`): the verdict as the run recorded it."""
    return write_evidence(instance, verdict_for_run(instance, run_id), store, log)


def write_pending(instance: dg.DagsterInstance, store: BackupStore, log) -> list[dict[str, Any]]:
    """Write the evidence of every run kept as pending; what each write did."""
    results = []
    for entry in PendingEvidence(instance.root_directory).pending():
        if instance.get_run_by_id(entry["run_id"]) is None:
            PendingEvidence(instance.root_directory).done(entry["run_id"])
            continue
        outcome = write_for_run(instance, entry["run_id"], store, log)
        results.append(
            {"partition": entry["partition"], "run_id": entry["run_id"], **outcome.to_json()}
        )
    return results


def evidence_state(dagster_home: str) -> dict[str, Any]:
    """Whether this deployment signs evidence (the key's id, or why not) and the runs pending."""
    value = environment.evidence_signing_key()
    state: dict[str, Any] = {"signing": False, "keyid": None, "problem": None}
    if value is None:
        state["problem"] = NO_KEY
    else:
        try:
            state.update(signing=True, keyid=load_signing_key(value).keyid)
        except KeyProblem as exc:
            state["problem"] = str(exc)
    pending = PendingEvidence(dagster_home).pending()
    return {**state, "pending": [{k: p.get(k) for k in ("partition", "run_id")} for p in pending]}
