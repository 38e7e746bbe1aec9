import dagster as dg

# One partition per nightly dump, keyed by the date in its name (UTC). end_offset=1 makes today's
# partition exist: the dump is taken around 01:00 UTC and verified at 03:00 UTC the same day.
nightly_dump_partitions = dg.DailyPartitionsDefinition(
    start_date="2025-01-01", timezone="UTC", end_offset=1
)
