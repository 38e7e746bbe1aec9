"""The stored dump against its manifest, before and during the download: is the manifest signed
by a key we trust, and is the object in the bucket the one the producer wrote?

- With public keys configured (BUSFLOW_MANIFEST_PUBLIC_KEY), a manifest that is missing, unsigned
  or whose signature is malformed or does not verify is F2 MANIFEST_SIGNATURE_INVALID (P1, a
  security event): the dump is not downloaded.
- An object whose size (HEAD) or full-object SHA-256 (HEAD's x-amz-checksum-sha256) differs from
  the manifest's, or whose bytes, delivered whole and alike twice by every endpoint that
  delivered them, have another SHA-256 than the manifest's, is F2 STORED_OBJECT_MISMATCH (P1):
  the object in the bucket is not the one the producer wrote. The endpoints answered: it is not
  F5 and does not halt cutover work. Bytes that differ only in transit (a retry or the mirror
  delivers the right ones) stay transfer faults (core/store/transfer.py).

Plain Python, no Dagster.
"""

from __future__ import annotations

from typing import Any

from busflow_verify.core.failures import Finding
from busflow_verify.core.store import signature as sig
from busflow_verify.core.store.endpoints import Endpoint
from busflow_verify.core.store.listing import DumpObject, head_dump
from busflow_verify.core.store.manifest import Manifest, ManifestRead

_CAUSES = {
    sig.NOT_SIGNED: "signature_missing",
    "malformed": "signature_malformed",
    "mismatch": "signature_mismatch",
}


def signature_finding(dump: DumpObject, read: ManifestRead | None) -> Finding | None:
    """MANIFEST_SIGNATURE_INVALID when public keys are configured and the manifest beside `dump`
    is absent, unsigned, or its signature malformed or failing; None when it verified. (An
    endpoint that failed while reading it is the endpoint's finding, not this one.)"""
    obj = f"s3://{dump.bucket}/{dump.key}"
    if read is not None and read.signature == sig.VERIFIED:
        return None
    if read is None or read.sha256 is None:
        where = read.where if read else "(not looked for)"
        why, cause = f"has no manifest beside it ({where} does not exist)", "no_manifest"
    else:
        why = f"has a manifest ({read.where}) that is refused: {read.signature_problem}"
        cause = _CAUSES.get(read.signature, "signature_mismatch")
    return Finding(
        "MANIFEST_SIGNATURE_INVALID",
        f"{obj} {why}. A manifest public key is configured (BUSFLOW_MANIFEST_PUBLIC_KEY): only a "
        "manifest signed by the producer's key is trusted, so nothing was downloaded or restored",
        {
            "cause": cause,
            "object": obj,
            "endpoint": dump.endpoint,
            "manifest": read.where if read else None,
            "manifest_sha256": read.sha256 if read else None,
            "manifest_signature": read.signature if read else sig.NO_MANIFEST,
        },
    )


def stored_object_finding(
    dump: DumpObject, manifest: Manifest, endpoints: list[Endpoint]
) -> Finding | None:
    """STORED_OBJECT_MISMATCH when HEAD already shows that `dump` is not the object the producer
    wrote: another size, or another full-object SHA-256, than the manifest's. The other
    endpoints' copies are HEADed so the summary gives both sizes."""
    sha = dump.checksums.get("sha256")
    if dump.size_bytes == manifest.size_bytes and (sha is None or sha == manifest.sha256):
        return None
    if dump.size_bytes != manifest.size_bytes:
        seen = f"is {dump.size_bytes:,} bytes, its manifest says {manifest.size_bytes:,}"
        cause = "size_mismatch"
    else:
        seen = f"has SHA-256 {sha} (HEAD's checksum), its manifest says {manifest.sha256}"
        cause = "sha256_mismatch"
    copies = [_copy(e, dump, manifest) for e in endpoints if e.name != dump.endpoint]
    return mismatch_finding(dump, seen, cause, copies)


def mismatch_finding(
    dump: DumpObject, seen: str, cause: str, copies: list[dict[str, Any]]
) -> Finding:
    """The STORED_OBJECT_MISMATCH finding: what differs, and the other endpoints' copies."""
    obj = f"s3://{dump.bucket}/{dump.key}"
    others = "; ".join(c["summary"] for c in copies) or "no mirror is configured"
    return Finding(
        "STORED_OBJECT_MISMATCH",
        f"{obj} on the {dump.endpoint} endpoint {seen}: the object in the bucket is not the one "
        f"the producer wrote (the endpoint answered normally: this is not an outage). {others}",
        {
            "cause": cause,
            "object": obj,
            "endpoint": dump.endpoint,
            "size_bytes": dump.size_bytes,
            "copies": [{k: v for k, v in c.items() if k != "summary"} for c in copies],
        },
    )


def _copy(endpoint: Endpoint, dump: DumpObject, manifest: Manifest) -> dict[str, Any]:
    """The same key on another endpoint (the mirror), by HEAD: its size against the manifest's."""
    try:
        other = head_dump(
            endpoint.client, dump.bucket, dump.key, endpoint.name, endpoint.url, dump.taken_at
        )
    except Exception as exc:  # any failure of a courtesy HEAD is said, not raised
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        return {
            "endpoint": endpoint.name,
            "size_bytes": None,
            "summary": f"the {endpoint.name} endpoint's copy could not be read ({code})",
        }
    same = other.size_bytes == manifest.size_bytes
    return {
        "endpoint": endpoint.name,
        "size_bytes": other.size_bytes,
        "matches_manifest_size": same,
        "summary": f"the {endpoint.name} endpoint's copy is {other.size_bytes:,} bytes"
        + (" (the manifest's size)" if same else " (not the manifest's size either)"),
    }
