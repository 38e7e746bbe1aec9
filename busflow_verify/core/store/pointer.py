"""The `verified-latest` pointer the cutover runbook trusts (runbook F1 step 4).

`<BACKUP_PREFIX>verified-latest.json` in the primary bucket (mirrored to the fallback when it can
be reached): which dump was last verified, with its partition, size, row counts, when and by which
run. It moves only for a verified partition and only forward: a backfill of an older date never
moves it back. An S3 PUT replaces an object whole, so a reader sees the old pointer or the new
one, never half of one.

Two promotions at once (a backfill and the nightly run, two CLIs) must not interleave their
read, decide and write, or the older one could land last and move the pointer back. So a move is
a compare-and-swap (`advance_pointer`):

- where the store honours conditional writes (AWS S3, MinIO, recent Ceph RGW), the write is
  `If-Match: <the ETag read>` (`If-None-Match: *` when there is no pointer yet); a 412 means
  another promotion got there first: re-read, re-decide, bounded retries.
- where it ignores them (`rclone serve s3`, the tests' and the demo's server, answers 200 to
  both and gives no ETag on GET/HEAD), a lock under `<prefix>verified-latest.lock/` serialises
  read-decide-write (`pointer_lock`): Lamport's bakery over keys of their own, which needs
  only the store's list-after-write consistency; the clock only expires a crashed contender's
  keys. The lock is re-checked just before the pointer is written (lost: nothing is written,
  it is taken again).

Which one a store gets is probed once per endpoint and bucket (`supports_conditional_writes`).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Callable

from busflow_verify.core.failures import failure_label
from busflow_verify.core.verdict import Verdict

POINTER_NAME = "verified-latest.json"
LOCK_NAME = "verified-latest.lock"
PROBE_NAME = "verified-latest.cas-probe"
CONFLICT_CODES = ("PreconditionFailed", "ConditionalRequestConflict")
NOT_FOUND_CODES = ("NoSuchKey", "404", "NotFound")


class PointerConflict(Exception):
    """The store refused a conditional write: the pointer (or the lock) changed meanwhile."""


class PointerLockTimeout(Exception):
    """The pointer's lock object stayed held (and unexpired) for longer than the wait allowed."""


def pointer_key(prefix: str) -> str:
    return f"{prefix}{POINTER_NAME}"


def lock_key(prefix: str) -> str:
    return f"{prefix}{LOCK_NAME}"


def _error_code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _get_json(
    client, bucket: str, key: str, tries: int = 5
) -> tuple[dict[str, Any] | None, str | None]:
    """(the object's JSON or None, its ETag or None). A read that overlaps a write on a store
    that writes objects in place (rclone serve s3 does) can see half of one: botocore's checksum
    or the JSON parse catches it, and the object is read again."""
    from botocore.exceptions import ClientError, FlexibleChecksumError

    for attempt in range(1, tries + 1):
        try:
            answer = client.get_object(Bucket=bucket, Key=key)
            body = json.loads(answer["Body"].read())
        except ClientError as exc:
            if _error_code(exc) in NOT_FOUND_CODES:
                return None, None
            raise
        except (FlexibleChecksumError, ValueError):
            if attempt == tries:
                raise
            time.sleep(0.01 * attempt)
            continue
        etag = (answer.get("ETag") or "").strip() or None
        return body, None if etag in ('""', "''") else etag
    raise AssertionError("unreachable")


def read_pointer_state(
    client, bucket: str, prefix: str
) -> tuple[dict[str, Any] | None, str | None]:
    """(the pointer's record or None, its ETag or None when the store gives none)."""
    return _get_json(client, bucket, pointer_key(prefix))


def read_pointer(client, bucket: str, prefix: str) -> dict[str, Any] | None:
    return read_pointer_state(client, bucket, prefix)[0]


def pointer_record(verdict: Verdict) -> dict[str, Any]:
    """The pointer's record of a verified dump; with the key and SHA-256 of the run's signed
    evidence when it was written (the exact proof behind verified-latest)."""
    dump = verdict.dump
    record = {
        "key": dump["key"],
        "partition": verdict.partition,
        "size_bytes": dump["size_bytes"],
        "row_counts": verdict.row_counts,
        "verified_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": verdict.run_id,
    }
    evidence = verdict.evidence or {}
    if evidence.get("key") and evidence.get("sha256"):
        record["evidence"] = {"key": evidence["key"], "sha256": evidence["sha256"]}
    return record


def moves_forward(current: dict[str, Any] | None, candidate: dict[str, Any]) -> bool:
    """Forward: a later partition, or the same partition's newer dump (names sort by time)."""
    if current is None:
        return True
    return (candidate["partition"], candidate["key"]) > (current["partition"], current["key"])


def _put(client, bucket: str, key: str, body: bytes, if_match=None, if_none_match=None) -> None:
    from botocore.exceptions import ClientError

    conditions = {}
    if if_match:
        conditions["IfMatch"] = if_match
    if if_none_match:
        conditions["IfNoneMatch"] = if_none_match
    try:
        client.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType="application/json", **conditions
        )
    except ClientError as exc:
        if conditions and (_error_code(exc) in CONFLICT_CODES or _status(exc) in (409, 412)):
            raise PointerConflict(f"{key}: {_error_code(exc) or _status(exc)}") from None
        raise


def write_pointer(
    client,
    bucket: str,
    prefix: str,
    record: dict[str, Any],
    *,
    if_match: str | None = None,
    if_none_match: str | None = None,
) -> None:
    """PUT the pointer; with `if_match` (an ETag) or `if_none_match="*"` a conditional write
    that raises PointerConflict when the store refuses it (412/409)."""
    body = json.dumps(record, indent=2).encode()
    _put(client, bucket, pointer_key(prefix), body, if_match, if_none_match)


_CONDITIONAL: dict[tuple[str, str, str], bool] = {}


def supports_conditional_writes(client, bucket: str, prefix: str) -> bool:
    """Whether the store honours If-Match and If-None-Match on PUT and gives ETags, probed once
    per endpoint and bucket on `<prefix>verified-latest.cas-probe`: a store that honours them
    refuses both a create-only and a mismatched-ETag write of an existing object."""
    from botocore.exceptions import ClientError

    cache_key = (str(getattr(client.meta, "endpoint_url", "")), bucket, prefix)
    if cache_key in _CONDITIONAL:
        return _CONDITIONAL[cache_key]
    key = f"{prefix}{PROBE_NAME}"
    client.put_object(Bucket=bucket, Key=key, Body=b"{}", ContentType="application/json")
    etag = (client.head_object(Bucket=bucket, Key=key).get("ETag") or "").strip('"')
    honoured = bool(etag)
    for condition in ({"if_none_match": "*"}, {"if_match": '"busflow-no-such-etag"'}):
        if not honoured:
            break
        try:
            _put(client, bucket, key, b"{}", **condition)
            honoured = False  # accepted: the condition was ignored
        except PointerConflict:
            pass
        except ClientError:  # 400/501: the store does not know the header
            honoured = False
    _CONDITIONAL[cache_key] = honoured
    return honoured


@dataclass
class Advance:
    moved: bool
    why: str
    pointer: dict[str, Any] | None  # the pointer as it stands after this (ours when moved)
    method: str  # "conditional-write" or "lock-object"
    attempts: int = 1


# (current pointer) -> (move?, why, the record to write when moving)
Decide = Callable[[dict[str, Any] | None], tuple[bool, str, dict[str, Any] | None]]


def advance_pointer(
    client,
    bucket: str,
    prefix: str,
    decide: Decide,
    *,
    conditional: bool | None = None,
    attempts: int = 8,
    lock_expiry_seconds: float = 60.0,
    lock_wait_seconds: float = 120.0,
    sleep=time.sleep,
) -> Advance:
    """Read the pointer, decide, and write it only if nobody moved it meanwhile (module
    docstring). `conditional`: None probes the store."""
    if conditional is None:
        conditional = supports_conditional_writes(client, bucket, prefix)
    if not conditional:
        for attempt in range(1, 4):
            try:
                with pointer_lock(
                    client,
                    bucket,
                    prefix,
                    lock_expiry_seconds,
                    lock_wait_seconds,
                    sleep,
                ) as still_held:
                    current = read_pointer(client, bucket, prefix)
                    move, why, record = decide(current)
                    if not move:
                        return Advance(False, why, current, "lock-object", attempt)
                    still_held()
                    write_pointer(client, bucket, prefix, record)
                    return Advance(True, why, record, "lock-object", attempt)
            except PointerConflict:  # the lock was lost before the write: nothing written
                if attempt == 3:
                    raise
    for attempt in range(1, attempts + 1):
        current, etag = read_pointer_state(client, bucket, prefix)
        move, why, record = decide(current)
        if not move:
            return Advance(False, why, current, "conditional-write", attempt)
        try:
            if current is None:
                write_pointer(client, bucket, prefix, record, if_none_match="*")
            else:
                write_pointer(client, bucket, prefix, record, if_match=etag)
            return Advance(True, why, record, "conditional-write", attempt)
        except PointerConflict:
            sleep(random.uniform(0.01, 0.05) * attempt)  # another promotion won: re-read
    raise PointerConflict(
        f"{pointer_key(prefix)} changed under {attempts} attempts in a row: not moved"
    )


@contextmanager
def pointer_lock(
    client,
    bucket: str,
    prefix: str,
    expiry_seconds: float = 60.0,
    wait_seconds: float = 120.0,
    sleep=time.sleep,
):
    """The lock, for stores without conditional writes: Lamport's bakery over object keys under
    `<prefix>verified-latest.lock/`, which needs only read-after-write and list-after-write
    consistency (every S3 store since 2020, rclone's), never a clock for its order.

    A contender PUTs `choosing-<token>-<expires>`, lists the live tickets, PUTs its own
    `ticket-<1 + the highest number>-<token>-<expires>`, deletes its choosing key, and holds the
    lock once a listing shows no live choosing key and no live ticket ordered before its own
    (number, token). No two writers ever share a key (a store that writes in place could mix two
    PUTs of one object). A crashed contender's keys expire after `expiry_seconds`: the clock
    decides only that. Yields a function that raises PointerConflict when this holder's own
    ticket is about to expire."""
    folder = lock_key(prefix) + "/"
    token = uuid.uuid4().hex
    expires_ns = time.time_ns() + int(expiry_seconds * 1e9)
    choosing = f"{folder}choosing-{token}-{expires_ns:020d}"
    mine: str | None = None
    deadline = time.monotonic() + wait_seconds

    def put(key: str) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=b"{}", ContentType="application/json")

    def drop(key: str | None) -> None:
        if key:
            with suppress(Exception):
                client.delete_object(Bucket=bucket, Key=key)

    try:
        put(choosing)
        number = 1 + max((t[0] for t in _live_lock_keys(client, bucket, folder)[1]), default=0)
        mine = f"{folder}ticket-{number:012d}-{token}-{expires_ns:020d}"
        put(mine)
        drop(choosing)
        while True:
            waiting, tickets = _live_lock_keys(client, bucket, folder)
            if not waiting and min(tickets, default=(number, token)) >= (number, token):
                break
            if time.monotonic() > deadline:
                raise PointerLockTimeout(
                    f"{folder} held by another promotion for more than {wait_seconds:.0f} s"
                )
            sleep(random.uniform(0.02, 0.1))

        def still_held() -> None:
            if time.time_ns() > expires_ns - int(min(5.0, expiry_seconds / 4) * 1e9):
                raise PointerConflict(f"{folder}: this promotion's ticket expired: not moved")

        yield still_held
    finally:
        drop(choosing)
        drop(mine)


def _live_lock_keys(client, bucket: str, folder: str):
    """(live choosing tokens, live tickets as (number, token)) under the lock folder; expired
    keys (their contender is gone) are deleted on the way."""
    waiting, tickets, now = [], [], time.time_ns()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder)
    for page in pages:
        for obj in page.get("Contents", []):
            kind, _, rest = obj["Key"][len(folder) :].partition("-")
            parts = rest.split("-")
            try:
                expires = int(parts[-1])
            except ValueError:
                continue  # not a lock key
            if expires < now:
                with suppress(Exception):
                    client.delete_object(Bucket=bucket, Key=obj["Key"])
            elif kind == "choosing" and len(parts) == 2:
                waiting.append(parts[0])
            elif kind == "ticket" and len(parts) == 3 and parts[0].isdigit():
                tickets.append((int(parts[0]), parts[1]))
    return waiting, tickets


def promotion_decision(verdict: Verdict, current: dict[str, Any] | None) -> tuple[bool, str]:
    """(promote?, why) for a verdict against the pointer as it stands."""
    if not verdict.verified:
        failing = [failure_label(f) for f in verdict.failures] or ["checks missing"]
        return False, f"not verified ({', '.join(failing)}): the pointer stays where it is"
    candidate = {"partition": verdict.partition, "key": verdict.dump["key"]}
    if not moves_forward(current, candidate):
        return False, (
            f"the pointer is at {current['partition']} ({current['key']}), newer than "
            f"{candidate['partition']}: it never moves backwards"
        )
    return True, f"verified-latest -> {candidate['key']} ({candidate['partition']})"
