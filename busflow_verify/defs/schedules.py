"""The runbook's trigger cadence: daily at 03:00 UTC.

The tick at 03:00 UTC on day D verifies partition D: the nightly dump `pg_dump_D_HHMM.dump` is
taken around 01:00 UTC the same day, and the partitions run one day ahead (end_offset=1) so that
today's date exists as a partition at 03:00.
"""

import dagster as dg

from busflow_verify.defs.jobs import backup_verify_job

backup_verify_schedule = dg.build_schedule_from_partitioned_job(
    backup_verify_job,
    name="backup_verify_daily_0300_utc",
    hour_of_day=3,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:00 UTC: verify today's nightly dump (runbook trigger cadence).",
)
