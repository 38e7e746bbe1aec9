"""Runbook step 5 and F3: the soft-foreign-key sweep against soft-fk-allowlist.yaml."""

import dagster as dg

from busflow_verify.core.sweep import sweep
from busflow_verify.defs.checks import orphan_check
from busflow_verify.defs.findings import check_result
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.resources import EphemeralRestoreTarget, VerifySettings


@dg.asset(
    partitions_def=nightly_dump_partitions,
    group_name="backup_verify",
    kinds={"postgres"},
    deps=["row_count_report"],
    check_specs=[orphan_check],
    description="Runbook step (5), F3: for each soft FK in soft-fk-allowlist.yaml, the child rows "
                "whose non-null key has no parent row (one anti-join each), against its "
                "max_orphans. Runs after VACUUM ANALYZE so the anti-joins are planned on fresh "
                "statistics. Runbook section: F3.",
)
def orphan_report(context: dg.AssetExecutionContext, restore_target: EphemeralRestoreTarget,
                  verify_settings: VerifySettings):
    allowlist = verify_settings.allowlist()
    config = verify_settings.verify_config()
    report = sweep(restore_target.session.connect, allowlist, config.scrub_log,
                   config.sweep.max_connections)
    rows = report.rows()
    for r in rows:
        context.log.info(f"{r['child']} -> {r['parent']}: {r['orphans']} orphans "
                         f"(max {r['max_orphans']})")
    yield dg.Output(rows, metadata={
        "orphans": dg.MetadataValue.json(rows),
        "soft_fks": len(rows),
        "orphans_table": dg.MetadataValue.md(_orphans_table(rows)),
    })
    yield check_result(orphan_check, report.findings, {"soft_fks_swept": len(rows)},
                       passed_note=f"{len(rows)} soft FK(s) within their allowlist tolerance")


def _orphans_table(rows: list) -> str:
    out = ["| child | parent | orphans | max_orphans | tenants | expected | unexpected | "
           "sample (unexpected) | passed |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        found = r["orphans"] if r["orphans"] is not None else r["error"]
        cells = [r["child"], r["parent"], found, r["max_orphans"], r["tenants"],
                 r["expected_orphans"], r["unexpected_orphans"],
                 " ".join(r["sample_unexpected"]), "yes" if r["passed"] else "NO"]
        out.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return "\n".join(out)
