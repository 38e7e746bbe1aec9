"""Where the evidence lives: `<BACKUP_PREFIX>verify-evidence/<date>/<ended>-<run_id>.dsse.json`
in the primary bucket (and the mirror, best effort), never overwritten.

- Each run's object has a key of its own: the run's end (UTC, to the second: keys sort in the
  order the runs ended) and its id.
- It is created only if absent: `If-None-Match: *` where the store honours conditional writes
  (probed once per endpoint, as the pointer's are: core/store/pointer.py), else a HEAD for
  absence, the PUT, and a read back whose SHA-256 must be the bytes written (a concurrent writer
  of the same key is caught, not hidden).
- On a bucket with Object Lock enabled and `evidence.retention_days` > 0, the object is PUT with
  COMPLIANCE retention until then: nobody, the bucket's root included, can delete or shorten it
  before (GOVERNANCE could be lifted by whoever holds s3:BypassGovernanceRetention).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from busflow_verify.core.store.pointer import NOT_FOUND_CODES, supports_conditional_writes

FOLDER = "verify-evidence"
SUFFIX = ".dsse.json"
LOCK_MODE = "COMPLIANCE"


class EvidenceExists(Exception):
    """The key already holds evidence: it is never overwritten."""

    def __init__(self, key: str, sha256: str | None):
        super().__init__(f"{key} already exists: evidence is never overwritten")
        self.key, self.sha256 = key, sha256


class EvidenceWriteError(Exception):
    """The object written is not the one read back (another writer of the same key)."""


def folder(prefix: str, partition: str) -> str:
    return f"{prefix}{FOLDER}/{partition}/"


def evidence_key(prefix: str, partition: str, ended: dt.datetime, run_id: str) -> str:
    stamp = ended.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{folder(prefix, partition)}{stamp}-{run_id}{SUFFIX}"


def run_id_of(key: str) -> str:
    """The run id in an evidence key."""
    return key.rsplit("/", 1)[-1].removesuffix(SUFFIX).split("-", 1)[-1]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _code(exc) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class Listed:
    key: str
    size_bytes: int
    last_modified: str


def list_evidence(client, bucket: str, prefix: str, partition: str) -> list[Listed]:
    """The date's evidence objects, oldest first (by key: the runs' ends)."""
    found = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=folder(prefix, partition)
    )
    for page in pages:
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(SUFFIX):
                modified = obj["LastModified"]
                found.append(Listed(obj["Key"], int(obj["Size"]), modified.isoformat()))
    return sorted(found, key=lambda o: o.key)


def read_evidence(client, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if _code(exc) in NOT_FOUND_CODES:
            return None
        raise


def previous_before(client, bucket: str, prefix: str, partition: str, key: str):
    """(key, SHA-256 of its bytes) of the date's newest evidence before `key`, or None."""
    earlier = [o.key for o in list_evidence(client, bucket, prefix, partition) if o.key < key]
    for candidate in reversed(earlier):
        data = read_evidence(client, bucket, candidate)
        if data is not None:
            return candidate, sha256_hex(data)
    return None


def object_lock_enabled(client, bucket: str) -> bool:
    """Whether the bucket has Object Lock enabled (a store without it, rclone's, says no)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = client.get_object_lock_configuration(Bucket=bucket)
    except (ClientError, BotoCoreError):
        return False
    return answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


@dataclass(frozen=True)
class Written:
    key: str
    sha256: str
    method: str  # "conditional-write" or "read-back"
    retain_until: str | None  # ISO 8601, when Object Lock retention was set


def _retention(client, bucket: str, days: int, now: dt.datetime) -> dict:
    if days <= 0 or not object_lock_enabled(client, bucket):
        return {}
    until = now.astimezone(dt.timezone.utc) + dt.timedelta(days=days)
    return {"ObjectLockMode": LOCK_MODE, "ObjectLockRetainUntilDate": until}


def create_only(
    client,
    bucket: str,
    prefix: str,
    key: str,
    body: bytes,
    retention_days: int = 0,
    now: dt.datetime | None = None,
) -> Written:
    """PUT `body` at `key` only if nothing is there (module docstring). Raises EvidenceExists
    when the key holds an object already, EvidenceWriteError when the read back differs."""
    from botocore.exceptions import ClientError

    lock = _retention(client, bucket, retention_days, now or dt.datetime.now(dt.timezone.utc))
    digest = sha256_hex(body)
    put = dict(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **lock)
    if supports_conditional_writes(client, bucket, prefix):
        try:
            client.put_object(IfNoneMatch="*", **put)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                409,
                412,
            ):
                raise EvidenceExists(key, _digest_of(client, bucket, key)) from None
            raise
        method = "conditional-write"
    else:
        if (existing := read_evidence(client, bucket, key)) is not None:
            raise EvidenceExists(key, sha256_hex(existing))
        client.put_object(**put)
        method = "read-back"
    back = read_evidence(client, bucket, key)
    if back is None or sha256_hex(back) != digest:
        raise EvidenceWriteError(
            f"{key}: the object read back is not the one written (another writer of the same "
            "key?); write the run's evidence again"
        )
    until = lock.get("ObjectLockRetainUntilDate")
    return Written(key, digest, method, until.isoformat(timespec="seconds") if until else None)


def _digest_of(client, bucket: str, key: str) -> str | None:
    data = read_evidence(client, bucket, key)
    return sha256_hex(data) if data is not None else None


@dataclass(frozen=True)
class DumpNow:
    """The dump object as the bucket holds it now."""

    size_bytes: int | None  # None: the object is gone
    sha256: str | None


def dump_now(client, bucket: str, key: str, chunk: int = 8 * 1024 * 1024) -> DumpNow:
    """The dump's size (HEAD) and the SHA-256 of its bytes, read through once."""
    from botocore.exceptions import ClientError

    try:
        size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if _code(exc) in NOT_FOUND_CODES or status == 404:
            return DumpNow(None, None)
        raise
    digest = hashlib.sha256()
    with body:
        for part in body.iter_chunks(chunk):
            digest.update(part)
    return DumpNow(size, digest.hexdigest())
