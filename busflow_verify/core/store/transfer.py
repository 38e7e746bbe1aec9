"""The dump's one download, with the endpoint's faults blamed on the endpoint (runbook F5).

A download that cannot complete from the endpoint that listed the dump (every part's retries
spent, the endpoint gone mid-transfer, a digest that differs twice) is the endpoint's fault,
not the backup's: the same key is fetched from the next endpoint (the on-site MinIO mirror),
as an unreachable primary is at locate time (F5 step 1: informational when the mirror serves
it). When no endpoint can deliver it, it is F5's both-down path: the dump is inaccessible;
unless every endpoint that delivered bytes delivered the same bytes at every attempt and the
manifest's SHA-256 refused them: then the stored object is not the producer's (F2
STORED_OBJECT_MISMATCH, core/store/integrity.py), not an outage.
A full local disk on the way is the host's (core/hostfaults.py), and nothing else is tried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from busflow_verify.core.failures import Finding, FindingError
from busflow_verify.core.hostfaults import host_fault
from busflow_verify.core.store.download import DownloadError, Expected, IntegrityError, download
from busflow_verify.core.store.endpoints import Endpoint, dump_inaccessible, store_error_finding
from busflow_verify.core.store.integrity import mismatch_finding
from busflow_verify.core.store.listing import DumpObject, head_dump

INTEGRITY_ATTEMPTS = 2  # a digest mismatch is retried once on the same endpoint
STORED_DIGEST = "stored_digest_mismatch"  # the same bytes twice, not the manifest's
STORED_CAUSES = {STORED_DIGEST, "size_mismatch"}  # the stored object is not the producer's
TRANSIT_CAUSES = {"integrity_mismatch", "transfer_incomplete"}  # bytes that differed on the way


@dataclass
class Transfer:
    dump: DumpObject  # as the endpoint that served it describes it
    seconds: float
    digests: dict[str, str]  # the digests the bytes were checked against
    faults: list[Finding] = field(default_factory=list)  # endpoints that could not deliver
    sha256: str | None = None  # of the bytes downloaded, checked against something or not


def fetch_dump(
    dump: DumpObject,
    endpoints: list[Endpoint],
    dest: Path,
    expected_for: Callable[[DumpObject], list[Expected]],
    report=None,
    expected_size: int | None = None,
) -> Transfer:
    """Download `dump` to `dest` from the endpoint that located it, else from the endpoints
    after it in order (the mirror). `expected_size`: the producer's manifest's, when an object
    of another size is not the dump it wrote. Raises FindingError: HOST_OUT_OF_SPACE (or another
    host fault), the store's own non-outage findings (credentials), or F5 dump inaccessible."""
    log = report or (lambda line: None)
    names = [e.name for e in endpoints]
    tried = endpoints[names.index(dump.endpoint) :] if dump.endpoint in names else endpoints
    faults: list[Finding] = []
    for endpoint in tried:
        candidate = dump if endpoint.name == dump.endpoint else _on(endpoint, dump, faults)
        if candidate is None:
            continue
        if expected_size is not None and candidate.size_bytes != expected_size:
            why = f"it is {candidate.size_bytes:,} bytes, the manifest says {expected_size:,}"
            faults.append(_transfer_fault(candidate, why, "size_mismatch"))
            log(f"F5 {faults[-1].summary}; trying the next endpoint")
            continue
        started = time.monotonic()
        expected = expected_for(candidate)
        try:
            digests = _download_checked(endpoint, candidate, dest, expected, log)
        except _EndpointFault as fault:
            faults.append(fault.finding)
            log(f"F5 {fault.finding.summary}; trying the next endpoint")
            continue
        checked = {e.algorithm for e in expected}
        return Transfer(
            candidate,
            round(time.monotonic() - started, 3),
            {a: d for a, d in digests.items() if a in checked},
            faults,
            digests.get("sha256"),
        )
    raise FindingError(_unavailable(dump, tried, faults))


class _EndpointFault(Exception):
    def __init__(self, finding: Finding):
        super().__init__(finding.summary)
        self.finding = finding


def _download_checked(endpoint, dump, dest, expected, log) -> dict[str, str]:
    delivered: set[str | None] = set()  # the bytes' SHA-256 at each attempt the manifest refused
    for attempt in range(1, INTEGRITY_ATTEMPTS + 1):
        try:
            return download(endpoint.client, dump, dest, report=log, expected=expected)
        except IntegrityError as exc:
            manifest = exc.expected.from_manifest
            delivered.add(exc.computed.get("sha256") if manifest else None)
            if attempt == INTEGRITY_ATTEMPTS:
                raise _EndpointFault(_integrity_fault(dump, exc, delivered)) from None
            log(f"{exc}; downloading it once more")
        except DownloadError as exc:
            raise _EndpointFault(_transfer_fault(dump, str(exc), "transfer_incomplete")) from None
        except Exception as exc:
            raise _classified(exc, dump, dest) from None
    raise AssertionError("unreachable")


def _classified(exc: Exception, dump: DumpObject, dest: Path) -> Exception:
    """The host's fault, the endpoint's (an outage mid-transfer) or the store's own finding."""
    if isinstance(exc, (OSError, MemoryError)) and not isinstance(exc, ConnectionError):
        if finding := host_fault(exc, "the download", dest.parent, dump.size_bytes):
            return FindingError(finding)
    finding = store_error_finding(exc, dump.endpoint, dump.bucket)
    if finding is None:
        return exc
    if finding.name == "OFFSITE_ENDPOINT_DOWN":
        return _EndpointFault(_transfer_fault(dump, finding.summary, finding.details["cause"]))
    return FindingError(finding)


def _on(endpoint: Endpoint, dump: DumpObject, faults: list[Finding]) -> DumpObject | None:
    """The same key on another endpoint (the mirror), or None (recorded as its fault)."""
    try:
        return head_dump(
            endpoint.client, dump.bucket, dump.key, endpoint.name, endpoint.url, dump.taken_at
        )
    except Exception as exc:
        finding = store_error_finding(exc, endpoint.name, dump.bucket)
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if finding is None and status != 404:
            raise
        why = finding.summary if finding else "the object is not there (HTTP 404)"
        faults.append(
            Finding(
                "OFFSITE_ENDPOINT_DOWN",
                f"the {endpoint.name} endpoint cannot serve {dump.key}: {why}",
                {"cause": "not_mirrored", "endpoint": endpoint.name, "key": dump.key},
            )
        )
        return None


def _integrity_fault(dump: DumpObject, exc: IntegrityError, delivered: set) -> Finding:
    """The same bytes at every attempt, refused by the manifest's SHA-256: the stored object is
    not the producer's (`stored_digest_mismatch`); else damaged in transit."""
    if len(delivered) == 1 and None not in delivered:
        fault = _transfer_fault(dump, str(exc), STORED_DIGEST)
        fault.details["sha256"] = next(iter(delivered))
        return fault
    return _transfer_fault(dump, str(exc), "integrity_mismatch")


def _unavailable(dump: DumpObject, tried: list[Endpoint], faults: list[Finding]) -> Finding:
    """Why no endpoint delivered the dump: the stored object's fault when every endpoint that
    delivered bytes delivered the same bytes twice and the manifest refused them (or its copy
    has another size), with no fault of the transit; else F5, the dump inaccessible."""
    causes = {f.details.get("cause") for f in faults}
    if causes & STORED_CAUSES and not causes & TRANSIT_CAUSES:
        stored = [f for f in faults if f.details.get("cause") in STORED_CAUSES]
        seen = "; ".join(f.summary for f in stored)
        return mismatch_finding(
            dump,
            f"was delivered whole, and alike at every attempt, with another content than its "
            f"manifest's ({seen})",
            "sha256_mismatch" if STORED_DIGEST in causes else "size_mismatch",
            [{**f.details, "summary": f.summary} for f in faults if f not in stored],
        )
    return dump_inaccessible([e.name for e in tried], faults, dump.bucket, dump.taken_at[:10])


def _transfer_fault(dump: DumpObject, why: str, cause: str) -> Finding:
    return Finding(
        "OFFSITE_ENDPOINT_DOWN",
        f"the {dump.endpoint} endpoint could not deliver {dump.key} intact: {why}",
        {"cause": cause, "endpoint": dump.endpoint, "key": dump.key},
    )
