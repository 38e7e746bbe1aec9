"""Promotion of `verified-latest`: one function, used by the sensor and `verify --promote`."""

from __future__ import annotations

from typing import Any

import dagster as dg

from busflow_verify.core.pointer import (CutoverHalt, pointer_record, promotion_decision,
                                         read_pointer, write_pointer)
from busflow_verify.defs.alerts import LAUNCHED_BY_TAG
from busflow_verify.defs.jobs import backup_verify_job
from busflow_verify.defs.records import verdict_for_run
from busflow_verify.defs.resources import BackupStore


def promote(verdict: dict[str, Any], store: BackupStore, log,
            halt: CutoverHalt | None = None) -> dict[str, Any]:
    """Move the pointer to the verdict's dump if it is verified and newer; mirror it. A
    promotion ends a cutover halt: a verified dump exists again."""
    primary = store.primary.client()
    current = read_pointer(primary, store.bucket, store.prefix)
    promote_it, why = promotion_decision(verdict, current)
    log(why)
    if not promote_it:
        return {"promoted": False, "reason": why, "pointer": current}
    record = pointer_record(verdict)
    write_pointer(primary, store.bucket, store.prefix, record)
    if halt and halt.get():
        halt.clear()
        log("cutover halt lifted: a verified dump is promoted")
    mirrored = False
    if store.fallback:
        try:
            write_pointer(store.fallback.client(), store.bucket, store.prefix, record)
            mirrored = True
        except Exception as exc:  # the mirror is best effort; the primary is the pointer
            log(f"verified-latest not mirrored to the fallback ({type(exc).__name__})")
    return {"promoted": True, "reason": why, "pointer": record, "mirrored": mirrored}


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[backup_verify_job],
                      name="promote_verified_latest", default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Moves verified-latest to a run's dump when every check of the "
                                  "partition passed in that run, and only forward.")
def promote_verified_latest(context: dg.RunStatusSensorContext, backup_store: BackupStore):
    run = context.dagster_run
    if run.tags.get(LAUNCHED_BY_TAG) == "cli":
        return  # the CLI promotes its own runs with --promote
    promote(verdict_for_run(context.instance, run.run_id), backup_store, context.log.info,
            CutoverHalt(context.instance.root_directory))
