"""Runbook step 4: VACUUM ANALYZE, exact row counts, deltas against the last verified dump."""

from dataclasses import asdict

import dagster as dg

from busflow_verify.core.checks.fingerprint import FingerprintRequest
from busflow_verify.core.checks.row_counts import Counted, compare, vacuum_and_count
from busflow_verify.core.checks.schema_drift import SchemaDrift, column_signatures, schema_drift
from busflow_verify.core.checks.sequences import sequence_states, sequences_behind
from busflow_verify.core.checks.size_guard import triage
from busflow_verify.core.config import VerifyConfig
from busflow_verify.core.verdict import RunFacts
from busflow_verify.defs.checks import row_count_check, schema_drift_check, sequence_check
from busflow_verify.defs.descriptions import describe
from busflow_verify.defs.findings import check_result
from busflow_verify.defs.metadata_tables import table
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.plots import row_count_plots
from busflow_verify.defs.resources import RestoreTarget, VerifySettings
from busflow_verify.defs.restore import RestoredDump
from busflow_verify.defs.run_history import COLUMN_SIGNATURE_KEY
from busflow_verify.defs.size_guard import SizeGuardOutcome

DELTA_COLUMNS = [
    ("table", "string", "schema.table"),
    ("previous", "int", "rows in the last verified dump"),
    ("current", "int", "rows in this dump"),
    ("delta", "int", "current - previous"),
    ("change", "string", "delta / previous"),
    ("tolerance", "string", "verify.yaml: max drop / max growth"),
    ("status", "string", "ok, dropped, grew, missing (gone since) or new (no baseline)"),
]
DRIFT_COLUMNS = [
    ("table", "string", "schema.table"),
    ("change", "string", "appeared, disappeared or columns changed since the last verified dump"),
    ("columns", "string", "column old type -> new type; +added type; -removed type"),
]


@dg.asset(
    partitions_def=nightly_dump_partitions,
    group_name="backup_verify",
    kinds={"postgres"},
    ins={"size_guard": dg.AssetIn("size_check"), "restored": dg.AssetIn("restored_db")},
    check_specs=[row_count_check, schema_drift_check, sequence_check],
    description=describe(
        4,
        "VACUUM ANALYZE and row counts",
        "VACUUM ANALYZE the restored database, count every user table exactly (schema.table) and "
        "compare with the last verified dump (the newest earlier partition whose checks all "
        "passed) within verify.yaml's row_counts tolerances; the deltas table has one row per "
        "table. When the size guard failed, it also triages F1: did the largest tables' rows "
        "move in proportion to the size? The schema_drift table lists the tables that appeared "
        "or disappeared and the columns (name, type) that changed since the last verified dump. "
        "Every sequence owned by a column is compared with the column's max (SEQUENCE_BEHIND, "
        "a notice).",
        ["ROW_COUNT_DRIFT", "SIZE_SHRUNK", "SCHEMA_DRIFT", "SEQUENCE_BEHIND"],
    ),
)
def row_count_report(
    context: dg.AssetExecutionContext,
    size_guard: SizeGuardOutcome,
    restored: RestoredDump,
    restore_target: RestoreTarget,
    verify_settings: VerifySettings,
):
    config = verify_settings.verify_config()
    counted, timings = _vacuum_and_count(context, restore_target, restored.fingerprints)
    counts = counted.counts
    baseline = size_guard.verified.baseline
    columns = column_signatures(restore_target.session.connect)
    drift = schema_drift(
        columns,
        baseline.column_signature if baseline else None,
        baseline.row_counts if baseline else None,
        baseline.partition if baseline else None,
    )
    report = compare(
        counts,
        baseline.row_counts if baseline else None,
        config.row_counts,
        baseline_partition=baseline.partition if baseline else None,
        baseline_run_id=baseline.run_id if baseline else None,
    )
    rows, baseline_note = report.rows(), _baseline_note(baseline)
    # F1 steps 1-3 when the size guard failed: the evidence for its failure
    f1 = (
        None
        if size_guard["passed"]
        else _f1_triage(context, size_guard, counts, baseline, config, restored.source_counts)
    )
    yield dg.Output(
        counted,  # the manifest check compares the counts and fingerprints with the manifest's
        metadata={  # the table first: it is what triage reads in the UI
            "deltas_table": _deltas_table(rows),
            **({"f1_triage": dg.MetadataValue.json(f1)} if f1 else {}),
            "row_counts": dg.MetadataValue.json(counts),
            **_fingerprint_metadata(counted),
            "total_rows": sum(counts.values()),
            "tables": len(counts),
            "baseline": dg.MetadataValue.json(
                {
                    "partition": report.baseline_partition,
                    "run_id": report.baseline_run_id,
                    "note": baseline_note,
                }
            ),
            "deltas": dg.MetadataValue.json(rows),
            "schema_drift_table": table(DRIFT_COLUMNS, drift.rows()),
            "schema_drift": dg.MetadataValue.json(drift.to_dict()),
            COLUMN_SIGNATURE_KEY: dg.MetadataValue.json(columns),
            **row_count_plots(counts, config.size_guard.largest_tables, timings),
        },
    )
    yield check_result(
        row_count_check, report.findings, {"baseline": baseline_note}, passed_note=baseline_note
    )
    yield _drift_result(drift, baseline_note)
    yield _sequence_result(context, restore_target)


def _sequence_result(
    context: dg.AssetExecutionContext, restore_target: RestoreTarget
) -> dg.AssetCheckResult:
    """Sequences behind their columns: a notice (WARN) for the cutover, never a block."""
    states = sequence_states(restore_target.session.connect)
    findings = sequences_behind(states)
    for finding in findings:
        context.log.warning(finding.summary)
    return check_result(
        sequence_check,
        findings,
        {
            "sequences_compared": len(states),
            "sequences": dg.MetadataValue.json([asdict(s) for s in states]),
        },
        passed_note=f"{len(states)} sequence(s) owned by a column, none behind its column's max",
        severity=dg.AssetCheckSeverity.WARN,
    )


def _vacuum_and_count(
    context: dg.AssetExecutionContext,
    restore_target: RestoreTarget,
    fingerprints: dict[str, FingerprintRequest],
) -> tuple[Counted, dict[str, float]]:
    """VACUUM ANALYZE, then every user table counted exactly, and fingerprinted in the same
    statement where the manifest asks: the counts, the fingerprints and the timings."""
    timings: dict[str, float] = {}
    counted = vacuum_and_count(
        restore_target.session.connect,
        restore_target.parallel_jobs(),
        report=context.log.info,
        timings=timings,
        fingerprints=fingerprints,
    )
    counts = counted.counts
    context.log.info(
        f"counted {len(counts)} tables, {sum(counts.values()):,} rows"
        f"{f', fingerprinted {len(counted.fingerprints)}' if counted.fingerprints else ''} "
        f"(VACUUM ANALYZE and count in {timings['vacuum_and_count_seconds']:.1f} s)"
    )
    return counted, timings


def _fingerprint_metadata(counted: Counted) -> dict:
    """The restored tables' fingerprints, when the manifest asked for them."""
    if not counted.fingerprints:
        return {}
    return {
        "fingerprints": dg.MetadataValue.json({t: f.value for t, f in counted.fingerprints.items()})
    }


def _baseline_note(baseline: RunFacts | None) -> str:
    if baseline is None:
        return (
            "no previous verified dump: nothing to compare, counts recorded as the first baseline"
        )
    return f"compared with the last verified dump of {baseline.partition} (run {baseline.run_id})"


def _f1_triage(
    context: dg.AssetExecutionContext,
    size_guard: SizeGuardOutcome,
    counts: dict[str, int],
    baseline: RunFacts | None,
    config: VerifyConfig,
    source_counts: dict[str, int] | None,
) -> dict:
    """F1 steps 1-3: did the largest tables' rows move in proportion to the size, against the
    baseline and, when the producer wrote a manifest, the source's own counts (step 1)?"""
    f1 = triage(
        size_guard["size_bytes"],
        counts,
        (baseline.dump or {}).get("size_bytes") if baseline else None,
        baseline.row_counts if baseline else None,
        config.size_guard.largest_tables,
        config.size_guard.proportionality_tolerance,
        source_counts=source_counts,  # the manifest's, read when the dump was located
    )
    context.log.warning(f"F1 triage: {f1['conclusion']}")
    return f1


def _drift_result(drift: SchemaDrift, baseline_note: str) -> dg.AssetCheckResult:
    """New tables and changed columns: a notice (WARN); a table gone is the row-count check's."""
    return check_result(
        schema_drift_check,
        drift.findings,
        {
            "tables_appeared": len(drift.appeared),
            "tables_disappeared": len(drift.disappeared),
            "tables_with_changed_columns": len(drift.changed),
            "columns_compared": drift.columns_compared,
        },
        passed_note=(
            "no table appeared and no column changed; " + baseline_note
            if drift.baseline_partition
            else baseline_note
        ),
        severity=dg.AssetCheckSeverity.WARN,
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
