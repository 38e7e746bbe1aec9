"""The checks of the backup-verify job, one per runbook stage; each is evaluated by its asset.

A partition is verified only when every one of these has an evaluation in the same run that
passed (or failed at WARN severity: informational): a check that did not run is not a pass.
"""

from busflow_verify.defs.findings import check_spec

offsite_check = check_spec(
    "offsite_endpoint_reachable",
    "dump_object",
    ["OFFSITE_ENDPOINT_DOWN"],
    "F5: the dump was read from the offsite primary (Hetzner). Fails at WARN severity when the "
    "primary could not be reached and the on-site MinIO fallback served it (informational: the "
    "run goes on, log the outage).",
)
size_guard_check = check_spec(
    "size_guard",
    "size_check",
    ["SIZE_SHRUNK", "SIZE_EXCEEDED"],
    "F1: the dump is larger than min_bytes and smaller than max_median_ratio x the trailing "
    "median (HEAD sizes only). Non-blocking: the restore still runs to gather the evidence.",
)
restore_check = check_spec(
    "restore_succeeded",
    "restored_db",
    ["RESTORE_FAILED"],
    "F2: every section (pre-data, data, post-data) restored into the disposable Postgres. "
    "Blocking: nothing downstream can run on a failed restore.",
    blocking=True,
)
row_count_check = check_spec(
    "row_counts_within_tolerance",
    "row_count_report",
    ["ROW_COUNT_DRIFT"],
    "Row counts of every user table within verify.yaml's tolerances of the last verified dump.",
)
orphan_check = check_spec(
    "soft_fk_orphans_within_allowlist",
    "orphan_report",
    ["ORPHAN_FK_SURGE"],
    "F3: orphans per soft FK at or below soft-fk-allowlist.yaml's max_orphans.",
)

ALL_CHECKS = [offsite_check, size_guard_check, restore_check, row_count_check, orphan_check]
EXPECTED_CHECK_KEYS = [spec.key for spec in ALL_CHECKS]
