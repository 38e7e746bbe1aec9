"""Runbook step 5 and F3: the soft-foreign-key sweep against soft-fk-allowlist.yaml."""

import itertools

import dagster as dg

from busflow_verify.core.checks.soft_fk_sweep import OrphanResult, sweep
from busflow_verify.defs.checks import orphan_check
from busflow_verify.defs.descriptions import describe
from busflow_verify.defs.findings import check_result
from busflow_verify.defs.metadata_tables import table
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.plots import orphan_plots
from busflow_verify.defs.resources import RestoreTarget, VerifySettings

ORPHAN_COLUMNS = [
    ("child", "string", "schema.table.column holding the soft key"),
    ("parent", "string", "schema.table.column it should reference"),
    ("orphans", "int", "child rows whose non-null key has no parent row"),
    ("max_orphans", "int", "soft-fk-allowlist.yaml tolerance"),
    ("passed", "bool", "orphans within max_orphans (and every justification UUID exists)"),
    ("tenants", "int", "distinct tenants among the orphans (tenant_column set)"),
    ("expected_orphans", "int", "orphans whose tenant has a scrub-log entry"),
    ("unexpected_orphans", "int", "orphans without one: an application bug"),
    ("sample_unexpected", "string", "first keys of unexpected orphans"),
    ("sample_expected", "string", "first keys of expected orphans"),
    ("scrub_log_ids", "string", "tenant_scrub_logs ids of the orphans' tenants"),
    ("error", "string", "why the sweep could not run (a missing table or column)"),
]


@dg.asset(
    partitions_def=nightly_dump_partitions,
    group_name="backup_verify",
    kinds={"postgres"},
    deps=["row_count_report"],
    check_specs=[orphan_check],
    description=describe(
        5,
        "soft-FK orphan sweep",
        "For each soft FK in soft-fk-allowlist.yaml, the child rows whose non-null key has no "
        "parent row (one anti-join each), against its max_orphans; the orphans table has the "
        "counts, the expected/unexpected split and sample keys. Runs after VACUUM ANALYZE so "
        "the anti-joins are planned on fresh statistics.",
        ["ORPHAN_FK_SURGE"],
    ),
)
def orphan_report(
    context: dg.AssetExecutionContext,
    restore_target: RestoreTarget,
    verify_settings: VerifySettings,
):
    allowlist = verify_settings.allowlist()
    config = verify_settings.verify_config()
    report = sweep(
        restore_target.session.connect,
        allowlist,
        config.scrub_log,
        config.sweep.max_connections,
        on_done=_sweeps_done(context.log.info, len(allowlist.soft_fks)),
    )
    rows = report.rows()
    yield dg.Output(
        rows,
        metadata={  # the table first: it is what triage reads in the UI
            "orphans_table": _orphans_table(rows),
            "soft_fks": len(rows),
            "orphans": dg.MetadataValue.json(rows),
            **orphan_plots(context, rows),  # the Plots tab (defs/plots.py)
        },
    )
    yield check_result(
        orphan_check,
        report.findings,
        {"soft_fks_swept": len(rows)},
        passed_note=f"{len(rows)} soft FK(s) within their allowlist tolerance",
    )


def _sweeps_done(report, total: int):
    """A progress line as each sweep ends (sweeps run concurrently, so in the order they end)."""
    ended = itertools.count(1)

    def on_done(r: OrphanResult) -> None:
        outcome = f"error: {r.error}" if r.error else f"{r.orphans} orphans (max {r.max_orphans})"
        report(f"sweep {next(ended)} of {total} done: {r.child} -> {r.parent}: {outcome}")

    return on_done


def _orphans_table(rows: list) -> dg.TableMetadataValue:
    return table(
        ORPHAN_COLUMNS,
        [
            {
                **r,
                "sample_expected": " ".join(r["sample_expected"]) or None,
                "sample_unexpected": " ".join(r["sample_unexpected"]) or None,
                "scrub_log_ids": " ".join(r["scrub_log_ids"]) or None,
            }
            for r in rows
        ],
    )
