import dagster as dg

from busflow_verify.defs import environment
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.run_history import JOB_NAME

# deploy/dagster.yaml's run queue admits one run per value of this tag: one verify run per
# restore host (two restores racing on one host would slow both past the schedule)
RESTORE_HOST_TAG = "busflow/restore_host"
# ...and one run at a time per pool of this name (`concurrency: pools`, granularity run, limit 1):
# restored_db's pool, which also holds the runs the asset catalog launches (the implicit asset
# job's runs carry no job tag)
RESTORE_POOL = f"{RESTORE_HOST_TAG}={environment.restore_host()}"

# In-process: the disposable Postgres is a run-scoped resource, so every stage of one run must
# share one process (a multiprocess executor would start a cluster per step).
backup_verify_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.groups("backup_verify"),
    partitions_def=nightly_dump_partitions,
    executor_def=dg.in_process_executor,
    description="The daily backup verify: locate, size-guard, restore, count, sweep (runbook).",
    tags={RESTORE_HOST_TAG: environment.restore_host()},
)


def hold_restore_pool(instance: dg.DagsterInstance) -> None:
    """Give restored_db's pool its limit of one now, before the run queue's first pass: the
    queue applies `pools: default_limit` only to pools it met in an earlier pass, so two runs
    queued on a fresh instance would both start. The daemon's start does this
    (docker/start-daemon.sh), as does `make ui`."""
    instance.event_log_storage.set_concurrency_slots(RESTORE_POOL, 1)
