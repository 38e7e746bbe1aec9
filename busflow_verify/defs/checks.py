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
transfer_check = check_spec(
    "offsite_transfer_completed",
    "restored_db",
    ["OFFSITE_ENDPOINT_DOWN"],
    "F5: the dump's bytes came whole and intact (size, and the ETag's MD5 / x-amz-checksum / the "
    "manifest's SHA-256 where given) from the endpoint that listed it. Fails at WARN severity "
    "when that endpoint could not deliver them and the mirror did (informational, F5 step 1).",
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
restore_budget_check = check_spec(
    "restore_within_rto_budget",
    "restored_db",
    ["RTO_EXCEEDED"],
    "The restore time is the cutover's RTO: at most verify.yaml restore_budget.max_seconds and "
    "max_median_ratio x the trailing verified runs' median. Fails at WARN severity, saying by "
    "how much (informational: it never blocks the pointer).",
)
schema_drift_check = check_spec(
    "schema_unchanged",
    "row_count_report",
    ["SCHEMA_DRIFT"],
    "No table appeared and no column (name, type) changed since the last verified dump. Fails "
    "at WARN severity (informational); a table that disappeared fails the row-count check.",
)

manifest_count_check = check_spec(
    "restored_rows_match_manifest",
    "restored_db",  # F2's stage; evaluated after row_count_report, whose counts it reads
    ["DUMP_INCOMPLETE", "DUMP_CONTENT_DIFFERS"],
    "F2 (the dump is missing data, or other data): every restored table has exactly the rows "
    "the producer's manifest counted in pg_dump's own snapshot, and the same tables; where the "
    "manifest fingerprinted a table, the restored rows have the same fingerprint (computed in "
    "the counting scan). Tables the manifest only estimated (reltuples) are not compared. No "
    "manifest beside the dump: passes, saying so; no fingerprints in it: counts only, saying so.",
)

sequence_check = check_spec(
    "sequences_ahead_of_their_columns",
    "row_count_report",
    ["SEQUENCE_BEHIND"],
    "Every sequence owned by a column (serial, identity) would hand out a value the column does "
    "not have yet: its last_value is not below the column's max. Fails at WARN severity, naming "
    "the sequence, the column and both numbers (informational: it never blocks the pointer; "
    "fix it before a cutover, or the first inserts fail on duplicate keys).",
)

# In the verdict's order: the runbook's stages, then the WARN-level RTO and schema checks, then
# the restored counts against the producer's manifest (defs/manifest_check.py), then the
# WARN-level sequences check
ALL_CHECKS = [
    offsite_check,
    size_guard_check,
    transfer_check,
    restore_check,
    row_count_check,
    orphan_check,
    restore_budget_check,
    schema_drift_check,
    manifest_count_check,
    sequence_check,
]
EXPECTED_CHECK_KEYS = [spec.key for spec in ALL_CHECKS]
