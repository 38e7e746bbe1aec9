"""Issue 19: the restored tables against the source's own counts (the producer's manifest).

`busflow-verify dump` (core/store/producer.py) writes `pg_dump_YYYYMMDD_HHMM.manifest.json` beside
the dump with every table's exact row count in pg_dump's snapshot. This check reads it from the
endpoint that served the dump and compares it with row_count_report's counts (no recount): any
difference, or a table on one side only, is F2 DUMP_INCOMPLETE. No manifest: a pass that says so.
"""

import warnings

import dagster as dg

from busflow_verify.core.failures import Finding, FindingError
from busflow_verify.core.store.listing import DumpObject, store_error_finding
from busflow_verify.core.store.manifest import (
    Manifest,
    ManifestError,
    compare_counts,
    fetch_manifest,
    manifest_key,
)
from busflow_verify.defs.checks import manifest_count_check
from busflow_verify.defs.findings import check_result, fail_step
from busflow_verify.defs.metadata_tables import table
from busflow_verify.defs.resources import BackupStore

NO_MANIFEST = "no manifest beside the dump (older dumps have none)"
COMPARISON_COLUMNS = [
    ("table", "string", "schema.table"),
    ("source", "int", "rows in the source, in pg_dump's snapshot (the manifest)"),
    ("method", "string", "exact (count) or reltuples (an estimate: not compared)"),
    ("restored", "int", "rows in the restored database (row_count_report)"),
    ("delta", "int", "restored - source"),
    ("status", "string", "ok, differs, estimate, not restored or not in manifest"),
]


def manifest_for(backup_store: BackupStore, dump: DumpObject) -> tuple[Manifest | None, str]:
    """The manifest beside `dump` on the endpoint that served it (None when there is none), and
    where it was looked for. An endpoint error is reported as the dump's would be."""
    key = manifest_key(dump.key)
    where = f"s3://{dump.bucket}/{key} ({dump.endpoint} endpoint)"
    client = backup_store.endpoint(dump.endpoint).client()
    try:
        return fetch_manifest(client, dump.bucket, dump.key), where
    except ManifestError:
        raise
    except Exception as exc:
        finding = store_error_finding(exc, dump.endpoint, dump.bucket)
        if finding is None:
            raise
        raise FindingError(finding) from None


def _restored_rows_match_manifest(
    context: dg.AssetCheckExecutionContext,
    counts: dict,
    dump: DumpObject,
    backup_store: BackupStore,
):
    try:
        manifest, where = manifest_for(backup_store, dump)
    except FindingError as exc:
        raise fail_step(exc.finding) from None
    except ManifestError as exc:
        finding = Finding(
            "DUMP_INCOMPLETE",
            f"the manifest beside {dump.key} cannot be read: {exc}",
            {"cause": "manifest_invalid", "manifest": exc.source, "field": exc.field},
            severity="P2",
            next_step="Fix the producer (busflow-verify dump) that wrote this manifest, re-run "
            "it, then verify this date again; the dump itself was not compared.",
        )
        yield check_result(manifest_count_check, [finding], {"manifest": exc.source})
        return
    if manifest is None:
        context.log.info(f"{NO_MANIFEST}: {where} does not exist")
        yield check_result(
            manifest_count_check, [], {"manifest": "absent", "looked_for": where}, NO_MANIFEST
        )
        return
    result = compare_counts(manifest, counts, where)
    if manifest.dump != dump.key.rsplit("/", 1)[-1]:  # a manifest copied beside another dump
        result.findings.append(
            Finding(
                "DUMP_INCOMPLETE",
                f"{where} describes {manifest.dump}, not {dump.key}: the dump and its manifest "
                "are not of the same pg_dump run",
                {"cause": "manifest_of_another_dump", "manifest": where, "dump": manifest.dump},
            )
        )
    estimated = result.estimated
    note = (
        f"{result.compared} table(s) compared exactly with the manifest taken at "
        f"{manifest.taken_at} (snapshot {manifest.snapshot}, PostgreSQL {manifest.server_version}, "
        f"pg_dump {manifest.pg_dump_version})"
        + (
            f"; {len(estimated)} table(s) with reltuples estimates only, not compared exactly: "
            + ", ".join(estimated)
            if estimated
            else ""
        )
    )
    context.log.info(note)
    yield check_result(
        manifest_count_check,
        result.findings,
        {
            "manifest": where,
            "manifest_taken_at": manifest.taken_at,
            "count_mode": manifest.count_mode,
            "tables_compared_exactly": result.compared,
            "tables_estimated_not_compared": dg.MetadataValue.json(estimated),
            "comparison_table": table(COMPARISON_COLUMNS, result.rows),
            "comparison": dg.MetadataValue.json(result.rows),
            "note": note,
        },
        passed_note=note,
    )


with warnings.catch_warnings():  # partitioned checks are "preview" in dagster 1.13
    warnings.simplefilter("ignore", dg.PreviewWarning)
    # the spec of defs/checks.py (in the verdict's EXPECTED_CHECK_KEYS), as a check of its own
    restored_rows_match_manifest = dg.asset_check(
        name=manifest_count_check.name,
        asset=manifest_count_check.asset_key,
        description=manifest_count_check.description,
        metadata=manifest_count_check.metadata,
        partitions_def=manifest_count_check.partitions_def,
        additional_ins={
            "counts": dg.AssetIn("row_count_report"),
            "dump": dg.AssetIn("dump_object"),
        },
    )(_restored_rows_match_manifest)


def manifest_source_counts(context: dg.AssetExecutionContext) -> dict[str, int] | None:
    """For F1's triage in row_count_report (before this check runs): the manifest's exact counts
    for this run's dump, or None (no manifest, or it cannot be read: today's comparison stays).
    The dump is this run's dump_object materialization; the store is the code location's
    backup_store, built from the same environment (row_count_report does not take it)."""
    from busflow_verify.defs.resources import build_resources

    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("dump_object"), asset_partitions=[context.partition_key]
        ),
        limit=20,
    ).records
    dump = next(
        (
            r.asset_materialization.metadata.get("dump")
            for r in records
            if r.run_id == context.run_id and r.asset_materialization
        ),
        None,
    )
    if dump is None:
        return None
    dump = dump.value
    try:
        with dg.build_resources({"backup_store": build_resources()["backup_store"]}) as res:
            client = res.backup_store.endpoint(dump["endpoint"]).client()
        manifest = fetch_manifest(client, dump["bucket"], dump["key"])
    except Exception as exc:  # the check reports it; the triage goes on without the source's
        context.log.warning(f"F1 triage without the manifest: {type(exc).__name__}: {exc}")
        return None
    return manifest.exact_counts() if manifest else None
