"""The restored tables against the source's own counts (the producer's manifest).

`busflow-verify dump` (core/store/producer.py) writes `pg_dump_YYYYMMDD_HHMM.manifest.json` beside
the dump with every table's exact row count in pg_dump's snapshot. dump_object read it once from
the endpoint that listed the dump (defs/locate.py); this check compares it with
row_count_report's counts (no recount): any difference, or a table on one side only, is F2
DUMP_INCOMPLETE. Where the counts match, the fingerprints row_count_report computed in the same
scan are compared with the manifest's: a difference is F2 DUMP_CONTENT_DIFFERS. No manifest: a
pass that says so; a manifest without fingerprints (older dumps): compared by counts only, and the
note says so.
"""

import warnings

import dagster as dg

from busflow_verify.core.checks.row_counts import Counted
from busflow_verify.core.failures import Finding
from busflow_verify.core.store.listing import DumpObject
from busflow_verify.core.store.manifest import (
    Manifest,
    ManifestError,
    compare_counts,
    fingerprint_note,
)
from busflow_verify.defs.checks import manifest_count_check
from busflow_verify.defs.findings import check_result, fail_step
from busflow_verify.defs.metadata_tables import table

NO_MANIFEST = "no manifest beside the dump (older dumps have none)"
COMPARISON_COLUMNS = [
    ("table", "string", "schema.table"),
    ("source", "int", "rows in the source, in pg_dump's snapshot (the manifest)"),
    ("method", "string", "exact (count) or reltuples (an estimate: not compared)"),
    ("restored", "int", "rows in the restored database (row_count_report)"),
    ("delta", "int", "restored - source"),
    (
        "status",
        "string",
        "ok, differs, content differs (same count, another fingerprint), estimate, not "
        "restored or not in manifest",
    ),
    ("fingerprint", "string", "match, differs, not compared, not computed; empty: none in it"),
    ("source_fingerprint", "string", "the manifest's fingerprint of the table's rows"),
    ("restored_fingerprint", "string", "the restored table's, computed in the counting scan"),
    ("left_out", "string", "columns left out of the fingerprint, and why"),
]


def _restored_rows_match_manifest(
    context: dg.AssetCheckExecutionContext, counts: Counted, dump: DumpObject
):
    read = dump.manifest
    if read is not None and read.endpoint_fault is not None:
        raise fail_step(read.endpoint_fault)
    if read is not None and read.invalid is not None:
        yield check_result(
            manifest_count_check, [_invalid(dump, read.invalid)], {"manifest": read.invalid.source}
        )
        return
    if read is None or read.manifest is None:
        where = read.where if read else "(not looked for)"
        context.log.info(f"{NO_MANIFEST}: {where} does not exist")
        yield check_result(
            manifest_count_check, [], {"manifest": "absent", "looked_for": where}, NO_MANIFEST
        )
        return
    yield _compared(context, read.manifest, counts, dump, read.where)


def _invalid(dump: DumpObject, exc: ManifestError) -> Finding:
    return Finding(
        "DUMP_INCOMPLETE",
        f"the manifest beside {dump.key} cannot be read: {exc}",
        {"cause": "manifest_invalid", "manifest": exc.source, "field": exc.field},
        severity="P2",
        next_step="Fix the producer (busflow-verify dump) that wrote this manifest, re-run "
        "it, then verify this date again; the dump itself was not compared.",
    )


def _compared(
    context, manifest: Manifest, counted: Counted, dump: DumpObject, where: str
) -> dg.AssetCheckResult:
    """Every exact count and fingerprint of the manifest against the restored table's
    (core/store/manifest.py)."""
    result = compare_counts(manifest, counted.counts, where, counted.fingerprints)
    if manifest.dump != dump.key.rsplit("/", 1)[-1]:  # a manifest copied beside another dump
        result.findings.append(
            Finding(
                "DUMP_INCOMPLETE",
                f"{where} describes {manifest.dump}, not {dump.key}: the dump and its manifest "
                "are not of the same pg_dump run",
                {"cause": "manifest_of_another_dump", "manifest": where, "dump": manifest.dump},
            )
        )
    note = f"{_comparison_note(manifest, result.compared, result.estimated)}; " + (
        fingerprint_note(manifest, result)
    )
    context.log.info(note)
    return check_result(
        manifest_count_check,
        result.findings,
        {
            "manifest": where,
            "manifest_taken_at": manifest.taken_at,
            "count_mode": manifest.count_mode,
            "tables_compared_exactly": result.compared,
            "tables_estimated_not_compared": dg.MetadataValue.json(result.estimated),
            "fingerprint_method": manifest.fingerprint_method or "none",
            "tables_fingerprints_matched": result.fingerprints_matched,
            "comparison_table": table(COMPARISON_COLUMNS, _table_rows(result.rows)),
            "comparison": dg.MetadataValue.json(result.rows),
            "note": note,
        },
        passed_note=note,
    )


def _table_rows(rows: list[dict]) -> list[dict]:
    """The comparison as the UI's table shows it: left-out columns as one line."""
    return [
        {**r, "left_out": "; ".join(f"{c}: {why}" for c, why in r["left_out"].items()) or None}
        for r in rows
    ]


def _comparison_note(manifest: Manifest, compared: int, estimated: list[str]) -> str:
    note = (
        f"{compared} table(s) compared exactly with the manifest taken at "
        f"{manifest.taken_at} (snapshot {manifest.snapshot}, PostgreSQL {manifest.server_version}, "
        f"pg_dump {manifest.pg_dump_version})"
    )
    if estimated:
        note += (
            f"; {len(estimated)} table(s) with reltuples estimates only, not compared exactly: "
            + ", ".join(estimated)
        )
    return note


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
