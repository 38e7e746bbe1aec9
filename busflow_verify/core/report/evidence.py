"""A run's evidence: what one verify run found, as one in-toto Statement v1 an auditor can check
(docs/operating.md: Evidence).

Built from the run's verdict and what the run recorded (defs/evidence.py reads them from the
Dagster instance): the partition, the run and its times; the dump's key, size and SHA-256 and the
endpoint that served it; the producer's manifest (its digest and whether its signature was
checked); each check and its result; the row counts, the orphans and the manifest's comparison;
the restore server, the timings, the verdict; and the digest of the date's previous evidence,
which chains a date's runs. Signing is core/report/signing.py; where the objects go,
core/store/evidence.py.

The statement's subject is the dump object (name: its key in the bucket, digest: the SHA-256 of
the bytes the run downloaded). A run that downloaded no dump (none that date, the size guard
stopped it, the endpoints were down) has the run itself as subject: `run/<run_id>`, with the
SHA-256 of the predicate's canonical JSON as its digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from busflow_verify.core.report.signing import STATEMENT_TYPE, canonical_json
from busflow_verify.core.verdict import Verdict

PREDICATE_TYPE = "https://busflow.example/verify-evidence/v1"


@dataclass(frozen=True)
class RunTimes:
    """The run as the instance recorded it."""

    run_id: str
    status: str
    started_at: str | None  # ISO 8601, UTC
    ended_at: str | None


@dataclass(frozen=True)
class ManifestFacts:
    """The producer's manifest as the run read it: its SHA-256 and signature state ("verified",
    "not_signed", "not_checked" or "no_manifest"), None / "no_manifest" when there was none."""

    sha256: str | None = None
    signature: str = "no_manifest"


@dataclass(frozen=True)
class EvidenceFacts:
    """What the verdict does not carry, read from the run's metadata."""

    run: RunTimes
    dump_sha256: str | None = None  # of the bytes the run downloaded (restored_db)
    served_by: str | None = None  # the endpoint the bytes came from
    served_by_url: str | None = None
    manifest: ManifestFacts = ManifestFacts()
    manifest_comparison: list[dict[str, Any]] | None = None  # the manifest check's rows
    check_severities: dict[str, str] = field(default_factory=dict)  # check -> ERROR / WARN
    verifier_version: str = "unknown"


@dataclass(frozen=True)
class Previous:
    """The date's previous evidence object: its key and the SHA-256 of its bytes."""

    key: str
    sha256: str


def _failure(f: dict[str, Any]) -> dict[str, Any]:
    return {k: f.get(k) for k in ("code", "name", "severity", "escalate_to", "summary")}


def _restore(restore: dict[str, Any] | None) -> dict[str, Any] | None:
    if not restore:
        return None
    server = restore.get("server") or {}
    return {
        "server_version": server.get("version"),
        "postgres_major": restore.get("postgres_major"),
        "target": restore.get("restore_target"),
        "format": restore.get("format"),
        "download_seconds": restore.get("download_seconds"),
        "restore_seconds": restore.get("restore_seconds"),
        "sections": [
            {k: s.get(k) for k in ("section", "seconds", "ok")}
            for s in restore.get("sections") or []
        ],
        "digests_checked": restore.get("digests_checked"),
    }


def predicate(verdict: Verdict, facts: EvidenceFacts, previous: Previous | None) -> dict[str, Any]:
    """The evidence body: what the run found, in the words of the verdict."""
    dump = verdict.dump or {}
    return {
        "partition": verdict.partition,
        "verified": verdict.verified,
        "run": asdict(facts.run),
        "dump": {
            "bucket": dump.get("bucket"),
            "key": dump.get("key"),
            "size_bytes": dump.get("size_bytes"),
            "sha256": facts.dump_sha256,
            "last_modified": dump.get("last_modified"),
            "endpoint": facts.served_by or dump.get("endpoint"),
            "endpoint_url": facts.served_by_url,
        }
        if dump
        else None,
        "manifest": asdict(facts.manifest),
        "checks": [
            {**c, "severity": facts.check_severities.get(c["check"], "ERROR")}
            for c in verdict.checks
        ],
        "failures": [_failure(f) for f in verdict.failures],
        "notices": [_failure(n) for n in verdict.notices],
        "row_counts": verdict.row_counts,
        "row_count_baseline": verdict.row_count_baseline,
        "row_count_deltas": list(verdict.row_count_deltas),
        "orphans": list(verdict.orphans),
        "manifest_comparison": facts.manifest_comparison,
        "size_guard": verdict.size_guard,
        "restore": _restore(verdict.restore),
        "verifier": {"name": "busflow-verify", "version": facts.verifier_version},
        "previous": asdict(previous) if previous else None,
    }


def subject(body: dict[str, Any]) -> dict[str, Any]:
    """The statement's subject: the dump object, or the run when no dump bytes were read."""
    dump = body.get("dump") or {}
    if dump.get("sha256"):
        return {"name": dump["key"], "digest": {"sha256": dump["sha256"]}}
    digest = hashlib.sha256(canonical_json(body)).hexdigest()
    return {"name": f"run/{body['run']['run_id']}", "digest": {"sha256": digest}}


def statement(
    verdict: Verdict, facts: EvidenceFacts, previous: Previous | None = None
) -> dict[str, Any]:
    """The in-toto Statement v1 of one run."""
    body = predicate(verdict, facts, previous)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [subject(body)],
        "predicateType": PREDICATE_TYPE,
        "predicate": body,
    }
