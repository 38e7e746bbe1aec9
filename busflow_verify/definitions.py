"""The busflow-verify code location (`dagster dev -m busflow_verify.definitions`)."""

import dagster as dg

from busflow_verify.defs.jobs import backup_verify_job
from busflow_verify.defs.locate import dump_object
from busflow_verify.defs.resources import build_resources
from busflow_verify.defs.restore import restored_db
from busflow_verify.defs.row_counts import row_count_report
from busflow_verify.defs.size_guard import size_check
from busflow_verify.defs.soft_fk import orphan_report

defs = dg.Definitions(
    assets=[dump_object, size_check, restored_db, row_count_report, orphan_report],
    jobs=[backup_verify_job],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
