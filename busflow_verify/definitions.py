"""The busflow-verify code location (`dagster dev -m busflow_verify.definitions`)."""

import dagster as dg

from busflow_verify.defs.deadman import verification_deadman
from busflow_verify.defs.finish import finish_failed_verify_run, finish_verify_run
from busflow_verify.defs.jobs import backup_verify_job
from busflow_verify.defs.locate import dump_object
from busflow_verify.defs.manifest_check import restored_rows_match_manifest
from busflow_verify.defs.resources import build_resources
from busflow_verify.defs.restore import restored_db
from busflow_verify.defs.row_counts import row_count_report
from busflow_verify.defs.schedules import backup_verify_schedule
from busflow_verify.defs.size_guard import size_check
from busflow_verify.defs.soft_fk import orphan_report

ASSETS = [dump_object, size_check, restored_db, row_count_report, orphan_report]


def build_defs() -> dg.Definitions:
    """Definitions with resources from the environment as it is now (the CLI builds them per
    call, so a changed environment is honoured)."""
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=[restored_rows_match_manifest],  # the source's counts (the manifest)
        jobs=[backup_verify_job],
        schedules=[backup_verify_schedule],
        sensors=[finish_verify_run, finish_failed_verify_run, verification_deadman],
        resources=build_resources(),
        executor=dg.in_process_executor,
    )


defs = build_defs()
