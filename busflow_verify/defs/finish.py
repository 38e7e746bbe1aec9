"""After a verify run: the verdict, verified-latest and the #ops message, in one path.

`finish_run` is called by the CLI for its own runs and by the sensors below for runs launched by
the schedule or the UI (the CLI tags its runs, so the sensors leave them alone): the verdict is
read back from the instance, the run's signed evidence is written (defs/evidence.py), the pointer
is moved when the run verified and promotion was asked for (recording the evidence), and the
message is posted, each step returning a new Verdict.
"""

from __future__ import annotations

import dataclasses

import dagster as dg

from busflow_verify.core.report.alerts import notify
from busflow_verify.core.report.cutover import CutoverHalt
from busflow_verify.core.verdict import Verdict
from busflow_verify.defs import environment, promotion
from busflow_verify.defs.alerts import alert_settings
from busflow_verify.defs.evidence import record_evidence
from busflow_verify.defs.jobs import backup_verify_job
from busflow_verify.defs.resources import BackupStore
from busflow_verify.defs.run_history import verdict_for_run

LAUNCHED_BY_TAG = "busflow/launched_by"  # "cli": the CLI finishes the run itself


def finish_run(
    instance: dg.DagsterInstance,
    run_id: str,
    *,
    store: BackupStore | None,
    log,
    promote: bool = True,
) -> Verdict:
    """The run's verdict, with its evidence written (when `store` is given), the pointer moved
    (when `promote` is asked for too) and #ops told."""
    verdict = verdict_for_run(instance, run_id)
    if store is not None:
        verdict = record_evidence(instance, verdict, store, log)
    if store is not None and promote:
        halt = CutoverHalt(instance.root_directory)
        outcome = promotion.promote(verdict, store, log, halt)
        verdict = dataclasses.replace(
            verdict, promoted=outcome["promoted"], promotion=outcome, cutover_halt=halt.get()
        )
    return alert_ops(verdict, instance.root_directory, log)


def alert_ops(verdict: Verdict, dagster_home: str, log) -> Verdict:
    """Post the run's #ops message. A delivery failure is an F4 in `failures`; `verified` stays
    what the checks said (runbook F4 step 2)."""
    channel, outbox, policy = alert_settings(dagster_home)
    result = notify(verdict, channel, outbox, policy, log=log, links=environment.links())
    f4 = result.pop("f4")
    verdict = dataclasses.replace(verdict, alert=result)
    return verdict.with_failure(f4) if f4 else verdict


def _launched_by_cli(run: dg.DagsterRun) -> bool:
    return run.tags.get(LAUNCHED_BY_TAG) == "cli"


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[backup_verify_job],
    name="finish_verify_run",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a completed verify run (verified or not: non-blocking "
    "check failures leave the run green): writes the run's signed "
    "evidence, moves verified-latest when every check of the "
    "partition passed, only forward, and posts the #ops message.",
)
def finish_verify_run(context: dg.RunStatusSensorContext, backup_store: BackupStore):
    if not _launched_by_cli(context.dagster_run):
        finish_run(
            context.instance, context.dagster_run.run_id, store=backup_store, log=context.log.info
        )


@dg.run_failure_sensor(
    monitored_jobs=[backup_verify_job],
    name="finish_failed_verify_run",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a failed verify run (a failed blocking check or a "
    "crashed step): writes the run's signed evidence and posts the #ops message.",
)
def finish_failed_verify_run(context: dg.RunFailureSensorContext, backup_store: BackupStore):
    if not _launched_by_cli(context.dagster_run):
        finish_run(
            context.instance,
            context.dagster_run.run_id,
            store=backup_store,
            log=context.log.info,
            promote=False,
        )
