"""Runbook step 4: VACUUM ANALYZE, exact row counts, deltas against the last verified dump."""

import time

import dagster as dg

from busflow_verify.core.rowcounts import compare, vacuum_and_count
from busflow_verify.core.sizeguard import triage
from busflow_verify.defs.checks import row_count_check
from busflow_verify.defs.descriptions import describe
from busflow_verify.defs.findings import check_result
from busflow_verify.defs.metadata_tables import table
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.resources import RestoreTarget, VerifySettings
from busflow_verify.defs.run_history import last_verified

DELTA_COLUMNS = [
    ("table", "string", "schema.table"),
    ("previous", "int", "rows in the last verified dump"),
    ("current", "int", "rows in this dump"),
    ("delta", "int", "current - previous"),
    ("change", "string", "delta / previous"),
    ("tolerance", "string", "verify.yaml: max drop / max growth"),
    ("status", "string", "ok, dropped, grew, missing (gone since) or new (no baseline)"),
]


@dg.asset(
    partitions_def=nightly_dump_partitions,
    group_name="backup_verify",
    kinds={"postgres"},
    deps=["restored_db"],
    ins={"size_guard": dg.AssetIn("size_check")},
    check_specs=[row_count_check],
    description=describe(
        4,
        "VACUUM ANALYZE and row counts",
        "VACUUM ANALYZE the restored database, count every user table exactly (schema.table) and "
        "compare with the last verified dump (the newest earlier partition whose checks all "
        "passed) within verify.yaml's row_counts tolerances; the deltas table has one row per "
        "table. When the size guard failed, it also triages F1: did the largest tables' rows "
        "move in proportion to the size?",
        ["ROW_COUNT_DRIFT", "SIZE_SHRUNK"],
    ),
)
def row_count_report(
    context: dg.AssetExecutionContext,
    size_guard: dict,
    restore_target: RestoreTarget,
    verify_settings: VerifySettings,
):
    config = verify_settings.verify_config()
    tolerances = config.row_counts
    started = time.monotonic()
    counts = vacuum_and_count(
        restore_target.session.connect, restore_target.parallel_jobs(), report=context.log.info
    )
    context.log.info(
        f"counted {len(counts)} tables, {sum(counts.values()):,} rows (VACUUM "
        f"ANALYZE and count in {time.monotonic() - started:.1f} s)"
    )
    baseline = last_verified(context.instance, context.partition_key)
    report = compare(
        counts,
        baseline.row_counts if baseline else None,
        tolerances,
        baseline_partition=baseline.partition if baseline else None,
        baseline_run_id=baseline.run_id if baseline else None,
    )
    baseline_note = (
        f"compared with the last verified dump of {baseline.partition} (run {baseline.run_id})"
        if baseline
        else "no previous verified dump: nothing to compare, counts recorded as the first baseline"
    )
    f1 = None
    if not size_guard["passed"]:  # F1 steps 1-3: the evidence for the size guard's failure
        f1 = triage(
            size_guard["size_bytes"],
            counts,
            (baseline.dump or {}).get("size_bytes") if baseline else None,
            baseline.row_counts if baseline else None,
            config.size_guard.largest_tables,
            config.size_guard.proportionality_tolerance,
        )
        context.log.warning(f"F1 triage: {f1['conclusion']}")
    yield dg.Output(
        counts,
        metadata={  # the table first: it is what triage reads in the UI
            "deltas_table": _deltas_table(report.rows()),
            **({"f1_triage": dg.MetadataValue.json(f1)} if f1 else {}),
            "row_counts": dg.MetadataValue.json(counts),
            "total_rows": sum(counts.values()),
            "tables": len(counts),
            "baseline": dg.MetadataValue.json(
                {
                    "partition": report.baseline_partition,
                    "run_id": report.baseline_run_id,
                    "note": baseline_note,
                }
            ),
            "deltas": dg.MetadataValue.json(report.rows()),
        },
    )
    yield check_result(
        row_count_check, report.findings, {"baseline": baseline_note}, passed_note=baseline_note
    )


def _deltas_table(rows: list) -> dg.TableMetadataValue:
    return table(
        DELTA_COLUMNS,
        [
            {
                **r,
                "change": f"{r['ratio']:+.2%}" if r["ratio"] is not None else None,
                "tolerance": f"-{r['max_drop_ratio'] * 100:g}% / +{r['max_growth_ratio'] * 100:g}%",
            }
            for r in rows
        ],
    )
