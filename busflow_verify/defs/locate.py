"""Runbook step 1: find the newest pg_dump_YYYYMMDD_HHMM.dump of the partition's date."""

import datetime as dt

import dagster as dg

from busflow_verify.core.failures import FindingError
from busflow_verify.core.store import DumpObject, locate_dump, store_error_finding
from busflow_verify.defs.findings import fail_step
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.resources import BackupStore


def partition_date(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


@dg.asset(
    partitions_def=nightly_dump_partitions,
    group_name="backup_verify",
    kinds={"s3"},
    description="Runbook step (1): the newest pg_dump_YYYYMMDD_HHMM.dump of this date in the "
                "backup bucket, located by listing and HEAD (nothing is downloaded here). "
                "A date without a dump fails with DUMP_MISSING.",
)
def dump_object(context: dg.AssetExecutionContext, backup_store: BackupStore) -> dg.Output:
    date = partition_date(context)
    endpoint = backup_store.primary
    try:
        dump = locate_dump(endpoint.client(), backup_store.bucket, backup_store.prefix, date,
                           "primary", endpoint.endpoint_url)
    except FindingError as exc:
        raise fail_step(exc.finding) from None
    except Exception as exc:
        finding = store_error_finding(exc, "primary", backup_store.bucket)
        if finding is None:
            raise
        raise fail_step(finding) from None
    context.log.info(f"newest dump of {date}: s3://{dump.bucket}/{dump.key} "
                     f"({dump.size_bytes} bytes, {dump.endpoint})")
    return dg.Output(dump, metadata=dump_metadata(dump))


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
    }
