"""What an auditor runs: `busflow-verify evidence verify` (docs/operating.md: Evidence).

One run's evidence object is checked against the public keys the auditor configured (never a key
the evidence carries): the DSSE envelope and its signature, the in-toto statement and our
predicate, the chain back through the date's earlier evidence (each link there, unaltered,
signed), and the dump object as the bucket holds it now (the size and SHA-256 the evidence
names: a dump replaced after it was verified is named).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from busflow_verify.core.report.evidence import PREDICATE_TYPE
from busflow_verify.core.report.signing import EvidenceInvalid, verify_envelope
from busflow_verify.core.store.evidence import (
    dump_now,
    folder,
    list_evidence,
    read_evidence,
    run_id_of,
    sha256_hex,
)

MAX_CHAIN = 1000


@dataclass
class Audit:
    """The outcome of checking one evidence object: it holds when `problems` is empty."""

    partition: str
    key: str | None = None
    run_id: str | None = None
    keyid: str | None = None
    predicate: dict[str, Any] | None = None
    chain: list[str] = field(default_factory=list)  # the earlier evidence reached, newest first
    unchained: list[str] = field(default_factory=list)  # the date's evidence not in the chain
    dump: dict[str, Any] | None = None  # the dump as the bucket holds it now
    problems: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        predicate = self.predicate or {}
        return {
            "partition": self.partition,
            "holds": self.holds,
            "key": self.key,
            "run_id": self.run_id,
            "keyid": self.keyid,
            "verified": predicate.get("verified"),
            "run": predicate.get("run"),
            "evidence_dump": predicate.get("dump"),
            "dump_now": self.dump,
            "chain": self.chain,
            "unchained": self.unchained,
            "problems": self.problems,
        }


def _checked(client, bucket: str, key: str, keys: list, partition: str):
    """(the predicate, the key id that verified it) of the evidence object at `key`, once its
    signature and statement hold. Raises EvidenceInvalid."""
    where = f"s3://{bucket}/{key}"
    data = read_evidence(client, bucket, key)
    if data is None:
        raise EvidenceInvalid(f"{where} does not exist")
    verified = verify_envelope(data, keys, where)
    statement = verified.statement
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise EvidenceInvalid(f"{where}: predicateType is not {PREDICATE_TYPE}")
    predicate = statement["predicate"]
    run = predicate.get("run") or {}
    if predicate.get("partition") != partition or run.get("run_id") != run_id_of(key):
        raise EvidenceInvalid(
            f"{where} is the evidence of run {run.get('run_id')} ({predicate.get('partition')}), "
            f"not of the run its key names: it was copied or moved"
        )
    return predicate, verified.keyid


def audit(
    client, bucket: str, prefix: str, partition: str, keys: list, run_id: str | None = None
) -> Audit:
    """Check the date's newest evidence (or run `run_id`'s): module docstring."""
    result = Audit(partition)
    listed = [o.key for o in list_evidence(client, bucket, prefix, partition)]
    chosen = [k for k in listed if run_id is None or run_id_of(k) == run_id]
    if not chosen:
        which = f"of run {run_id} " if run_id else ""
        result.problems.append(
            f"no evidence {which}for {partition} under s3://{bucket}/{folder(prefix, partition)}"
        )
        return result
    result.key, result.run_id = chosen[-1], run_id_of(chosen[-1])
    try:
        result.predicate, result.keyid = _checked(client, bucket, result.key, keys, partition)
    except EvidenceInvalid as exc:
        result.problems.append(str(exc))
        return result
    _walk_chain(client, bucket, keys, result)
    result.unchained = [k for k in listed if k != result.key and k not in result.chain]
    _check_dump(client, bucket, result)
    return result


def _walk_chain(client, bucket: str, keys: list, result: Audit) -> None:
    """Each `previous` link back: there, unaltered since the next was written, signed."""
    newer, link = result.key, (result.predicate or {}).get("previous")
    while link and len(result.chain) < MAX_CHAIN:
        key, recorded = link.get("key"), link.get("sha256")
        data = read_evidence(client, bucket, key) if key else None
        if data is None:
            result.problems.append(
                f"the chain is broken: {newer} names {key} as the previous evidence, which is "
                "gone (deleted: Object Lock would have refused that)"
            )
            return
        if sha256_hex(data) != recorded:
            result.problems.append(
                f"the chain is broken: s3://{bucket}/{key} has SHA-256 {sha256_hex(data)}, "
                f"{newer} recorded {recorded}: it was replaced after the next evidence was written"
            )
            return
        try:
            predicate, _ = _checked(client, bucket, key, keys, result.partition)
        except EvidenceInvalid as exc:
            result.problems.append(f"the chain is broken: {exc}")
            return
        result.chain.append(key)
        newer, link = key, predicate.get("previous")


def _check_dump(client, bucket: str, result: Audit) -> None:
    """The dump object now against the size and SHA-256 the evidence names."""
    dump = (result.predicate or {}).get("dump") or {}
    if not dump.get("sha256"):
        return  # the run downloaded no dump: there are no bytes to compare
    where_bucket = dump.get("bucket") or bucket
    now = dump_now(client, where_bucket, dump["key"])
    result.dump = {"size_bytes": now.size_bytes, "sha256": now.sha256}
    where = f"s3://{where_bucket}/{dump['key']}"
    run = (result.predicate or {}).get("run") or {}
    if now.size_bytes is None:
        result.problems.append(
            f"{where} is gone: the dump run {run.get('run_id')} verified no longer exists"
        )
    elif (now.size_bytes, now.sha256) != (dump.get("size_bytes"), dump["sha256"]):
        result.problems.append(
            f"{where} was replaced after it was verified: it is now {now.size_bytes:,} bytes "
            f"with SHA-256 {now.sha256}; the evidence of run {run.get('run_id')} (ended "
            f"{run.get('ended_at')}) names {dump.get('size_bytes'):,} bytes with SHA-256 "
            f"{dump['sha256']}"
        )
