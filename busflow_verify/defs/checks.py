"""The checks of the backup-verify job, one per runbook stage; each is evaluated by its asset.

A partition is verified only when every one of these has an evaluation that passed in the same
run: a check that did not run is not a pass.
"""

from busflow_verify.defs.findings import check_spec

size_guard_check = check_spec(
    "size_guard", "size_check", ["SIZE_SHRUNK", "SIZE_EXCEEDED"],
    "F1: the dump is larger than min_bytes and smaller than max_median_ratio x the trailing "
    "median (HEAD sizes only). Non-blocking: the restore still runs to gather the evidence.",
)
restore_check = check_spec(
    "restore_succeeded", "restored_db", ["RESTORE_FAILED"],
    "F2: every section (pre-data, data, post-data) restored into the disposable Postgres. "
    "Blocking: nothing downstream can run on a failed restore.",
    blocking=True,
)
row_count_check = check_spec(
    "row_counts_within_tolerance", "row_count_report", ["ROW_COUNT_DRIFT"],
    "Row counts of every user table within verify.yaml's tolerances of the last verified dump.",
)
orphan_check = check_spec(
    "soft_fk_orphans_within_allowlist", "orphan_report", ["ORPHAN_FK_SURGE"],
    "F3: orphans per soft FK at or below soft-fk-allowlist.yaml's max_orphans.",
)

ALL_CHECKS = [size_guard_check, restore_check, row_count_check, orphan_check]
EXPECTED_CHECK_KEYS = [spec.key for spec in ALL_CHECKS]
