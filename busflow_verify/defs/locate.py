"""Runbook step 1: find the newest pg_dump_YYYYMMDD_HHMM.dump of the partition's date."""

import datetime as dt
from dataclasses import replace

import dagster as dg

from busflow_verify.core.failures import Finding, FindingError
from busflow_verify.core.report.cutover import CutoverHalt
from busflow_verify.core.store.endpoints import Endpoint, covered_by_mirror
from busflow_verify.core.store.integrity import signature_finding, stored_object_finding
from busflow_verify.core.store.listing import DumpObject, locate_with_fallback
from busflow_verify.core.store.manifest import ManifestRead, read_manifest_beside
from busflow_verify.core.store.signature import NO_MANIFEST, KeyFileError
from busflow_verify.defs.checks import offsite_check
from busflow_verify.defs.descriptions import describe
from busflow_verify.defs.findings import check_result, fail_step
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.resources import BackupStore


def partition_date(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


@dg.asset(
    partitions_def=nightly_dump_partitions,
    group_name="backup_verify",
    kinds={"s3"},
    check_specs=[offsite_check],
    description=describe(
        1,
        "locate the dump",
        "The newest pg_dump_YYYYMMDD_HHMM.dump of this date in the backup bucket, located by "
        "listing and HEAD (nothing is downloaded here). A date without a dump fails with "
        "DUMP_MISSING. When the offsite primary cannot be reached, the on-site MinIO fallback is "
        "read instead (F5, informational); both down: F5, dump inaccessible. The producer's "
        "manifest beside it is read once; with BUSFLOW_MANIFEST_PUBLIC_KEY its signature must "
        "verify (MANIFEST_SIGNATURE_INVALID), and an object whose HEAD size or SHA-256 differs "
        "from the manifest's is not the producer's (STORED_OBJECT_MISMATCH): nothing is "
        "downloaded then.",
        [
            "DUMP_MISSING",
            "OFFSITE_ENDPOINT_DOWN",
            "MANIFEST_SIGNATURE_INVALID",
            "STORED_OBJECT_MISMATCH",
        ],
    ),
)
def dump_object(context: dg.AssetExecutionContext, backup_store: BackupStore):
    date = partition_date(context)
    endpoints = backup_store.endpoints()
    keys = _manifest_keys(backup_store)
    try:
        dump, outages = locate_with_fallback(
            endpoints, backup_store.bucket, backup_store.prefix, date
        )
    except FindingError as exc:
        raise endpoint_failure(context, exc.finding) from None
    dump = with_manifest(dump, endpoints, keys)
    _refuse_before_download(context, dump, endpoints, keys)
    for outage in outages:
        context.log.warning(
            f"F5 {outage.summary}; reading from the MinIO fallback "
            "(BACKUP_SOURCE=minio-fallback): log the outage and continue"
        )
    context.log.info(
        f"newest dump of {date}: s3://{dump.bucket}/{dump.key} "
        f"({dump.size_bytes} bytes, {dump.endpoint})"
    )
    yield dg.Output(dump, metadata=dump_metadata(dump))
    for outage in outages:
        covered_by_mirror(outage, dump.endpoint)
    yield check_result(
        offsite_check,
        outages,
        {"endpoint": dump.endpoint},
        passed_note="read from the offsite primary",
        severity=dg.AssetCheckSeverity.WARN,
    )


def with_manifest(
    dump: DumpObject, endpoints: list[Endpoint], keys: list | None = None
) -> DumpObject:
    """The dump with the producer's manifest beside it, read once from the endpoint that listed
    it (and its signature, checked with `keys` when public keys are configured): the download,
    restored_rows_match_manifest and F1's triage use this read."""
    client = next(e.client for e in endpoints if e.name == dump.endpoint)
    return replace(
        dump, manifest=read_manifest_beside(client, dump.bucket, dump.key, dump.endpoint, keys)
    )


def _manifest_keys(backup_store: BackupStore) -> list | None:
    """BUSFLOW_MANIFEST_PUBLIC_KEY's keys; a file that cannot be used fails the step as the
    verifier's configuration, never as the dump's fault."""
    try:
        return backup_store.manifest_keys()
    except KeyFileError as exc:
        raise fail_step(
            Finding("VERIFY_JOB_ERROR", str(exc), {"cause": "manifest_public_key_unusable"})
        ) from None


def _refuse_before_download(
    context: dg.AssetExecutionContext, dump: DumpObject, endpoints: list[Endpoint], keys
) -> None:
    """Before a byte of the dump is downloaded: with public keys configured, a manifest that is
    not signed by one of them (F2 MANIFEST_SIGNATURE_INVALID); an object whose HEAD already
    differs from its manifest (F2 STORED_OBJECT_MISMATCH). Neither is an outage: no cutover
    halt."""
    read = dump.manifest
    if keys is not None:
        if read is not None and read.endpoint_fault is not None:
            raise fail_step(read.endpoint_fault)  # the signature cannot be checked
        if (finding := signature_finding(dump, read)) is not None:
            context.log.error(f"{finding.summary}")
            raise fail_step(finding)
        context.log.info(f"the manifest's signature verified (key {read.signature_key_id})")
    manifest = read.usable() if read else None
    if manifest is not None and (found := stored_object_finding(dump, manifest, endpoints)):
        context.log.error(found.summary)
        raise fail_step(found)


def endpoint_failure(context: dg.AssetExecutionContext, finding):
    """The step's failure for a finding of the endpoints; both down (the dump inaccessible, at
    listing or at download) also halts cutover work (F5 step 2)."""
    if finding.details.get("cause") == "all_endpoints_down":
        CutoverHalt(context.instance.root_directory).set(finding.summary, context.run_id)
    return fail_step(finding)


def dump_metadata(dump: DumpObject) -> dict:
    return {
        "key": dump.key,
        "bucket": dump.bucket,
        "size_bytes": dump.size_bytes,
        "last_modified": dump.last_modified,
        "taken_at": dump.taken_at,
        "endpoint": dump.endpoint,
        "endpoint_url": dump.endpoint_url,
        "dump": dg.MetadataValue.json(dump.to_dict()),
        **manifest_metadata(dump.manifest),
    }


def manifest_metadata(read: ManifestRead | None) -> dict:
    """What the evidence reads of the manifest: the SHA-256 of its bytes (absent when there is
    none) and its signature: verified, not_signed, not_checked (no key configured) or
    no_manifest."""
    if read is None or read.sha256 is None:
        return {"manifest_signature": NO_MANIFEST}
    return {"manifest_sha256": read.sha256, "manifest_signature": read.signature}
