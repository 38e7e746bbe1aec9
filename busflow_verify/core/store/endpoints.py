"""The backup store's endpoints (the offsite primary, the on-site MinIO mirror) and the faults
that are theirs rather than the dump's: unreachable or failing is F5, rejected credentials or a
missing bucket are a configuration fault; an outage another endpoint covered is informational
(F5 step 1), none left to serve the dump is F5 P1 (step 2)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from busflow_verify.core.failures import Finding


@dataclass
class Endpoint:
    name: str  # "primary" | "fallback"
    url: str
    client: Any


def store_error_finding(exc: Exception, endpoint: str, bucket: str) -> Finding | None:
    """A finding for an S3 error that is about the endpoint rather than the dump, else None.

    Unreachable (connection refused, timeout, 5xx) is the runbook's F5; 403 is a credential
    problem, not an outage, and says so.
    """
    from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    details = {"endpoint": endpoint, "bucket": bucket, "error": type(exc).__name__}
    if isinstance(exc, (BotoConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return Finding(
            "OFFSITE_ENDPOINT_DOWN",
            f"the {endpoint} backup endpoint cannot be reached ({type(exc).__name__}): "
            "the dump is inaccessible",
            {**details, "cause": "unreachable"},
        )
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        details.update(http_status=status, s3_error=code)
        if status >= 500:
            return Finding(
                "OFFSITE_ENDPOINT_DOWN",
                f"the {endpoint} backup endpoint answers HTTP {status} ({code}): "
                "the dump is inaccessible",
                {**details, "cause": "server_error"},
            )
        if status in (401, 403):
            return Finding(
                "VERIFY_JOB_ERROR",
                f"the {endpoint} backup endpoint rejected the credentials for bucket "
                f"{bucket!r} (HTTP {status} {code}): check BACKUP_ACCESS_KEY_ID / "
                "BACKUP_SECRET_ACCESS_KEY (rotated?); this is not an outage",
                {**details, "cause": "credentials_rejected"},
            )
        if code == "NoSuchBucket":
            return Finding(
                "VERIFY_JOB_ERROR",
                f"bucket {bucket!r} does not exist at the {endpoint} endpoint: check BACKUP_BUCKET",
                {**details, "cause": "no_such_bucket"},
            )
    return None


def covered_by_mirror(fault: Finding, served_by: str, what: str = "outage") -> Finding:
    """F5 step 1: an endpoint's fault that another endpoint covered is informational."""
    fault.severity = "info"
    fault.next_step = (
        f"Informational: the {served_by} endpoint served the dump. Log the Hetzner {what}; "
        "past 24 h it needs a DPIA note (F5 steps 1 and 3)."
    )
    return fault


def dump_inaccessible(
    names: list[str], outages: list[Finding], bucket: str, date: dt.date | str
) -> Finding:
    """F5, P1: no endpoint could serve the dump (unreachable, or every transfer failed)."""
    return Finding(
        "OFFSITE_ENDPOINT_DOWN",
        f"dump inaccessible: the {' and '.join(names)} endpoint(s) cannot serve it "
        f"({'; '.join(o.summary for o in outages)}). This is not an unverified day: halt any "
        "pending cutover work until a verified dump is produced",
        {
            "cause": "all_endpoints_down",
            "endpoints": [o.details for o in outages],
            "bucket": bucket,
            "date": str(date),
        },
        severity="P1",
        next_step="Page @infra-oncall; halt pending cutover work until a verified dump exists "
        "(F5 step 2). A Hetzner outage over 24 h needs a DPIA note (F5 step 3).",
    )
