"""The `verified-latest` pointer the cutover runbook trusts (runbook F1 step 4).

`<BACKUP_PREFIX>verified-latest.json` in the primary bucket (mirrored to the fallback when it can
be reached): which dump was last verified, with its partition, size, row counts, when and by which
run. It moves only for a verified partition and only forward: a backfill of an older date never
moves it back. An S3 PUT replaces an object whole, so a reader sees the old pointer or the new
one, never half of one.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from busflow_verify.core.failures import failure_label
from busflow_verify.core.verdict import Verdict

POINTER_NAME = "verified-latest.json"


def pointer_key(prefix: str) -> str:
    return f"{prefix}{POINTER_NAME}"


def read_pointer(client, bucket: str, prefix: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=pointer_key(prefix))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(body)


def pointer_record(verdict: Verdict) -> dict[str, Any]:
    dump = verdict.dump
    return {
        "key": dump["key"],
        "partition": verdict.partition,
        "size_bytes": dump["size_bytes"],
        "row_counts": verdict.row_counts,
        "verified_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": verdict.run_id,
    }


def moves_forward(current: dict[str, Any] | None, candidate: dict[str, Any]) -> bool:
    """Forward: a later partition, or the same partition's newer dump (names sort by time)."""
    if current is None:
        return True
    return (candidate["partition"], candidate["key"]) > (current["partition"], current["key"])


def write_pointer(client, bucket: str, prefix: str, record: dict[str, Any]) -> None:
    client.put_object(
        Bucket=bucket,
        Key=pointer_key(prefix),
        Body=json.dumps(record, indent=2).encode(),
        ContentType="application/json",
    )


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
