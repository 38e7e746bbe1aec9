"""Verify runs that died without a word: found STARTED by a later run, marked failed, told once.

The CLI executes its runs in process; killed (kill -9, OOM, a reboot) it cannot record the end of
its run, which would stay STARTED for good and never reach #ops. The CLI tags each of its runs
with the process that executes it (`run_tags_for_this_process`); at the start of its next run it
calls `report_stale_runs`, which marks every CLI run of the job whose process is gone as failed
(a step failure carrying a VERIFY_JOB_ERROR finding, "the verify process died", for each step
that was in progress, then the run failure) and posts the run's #ops message through
`finish_run`, like any failed run's. Marked failed, a run is no longer found: it is told once.
With a signing key set, its evidence is kept as pending (defs/evidence.py), written by the next
`alerts repost` or `evidence write --pending` (the sweep has no store at hand).

Runs launched through the daemon (schedule, UI, backfill) are left to Dagster's run monitoring in
the deployed instance, and their message to the failure sensor (defs/finish.py): the CLI cannot
see a run worker's process, which may run in another container or on another host.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Callable

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.execution.plan.objects import StepFailureData, UserFailureData

from busflow_verify.core.failures import Finding
from busflow_verify.core.proc import process_alive, process_start_time
from busflow_verify.defs import environment
from busflow_verify.defs.evidence import PendingEvidence
from busflow_verify.defs.findings import FINDING_KEY
from busflow_verify.defs.finish import LAUNCHED_BY_TAG, finish_run
from busflow_verify.defs.run_history import JOB_NAME, PARTITION_TAG

RUN_PID_TAG = "busflow/pid"  # the pid of the process executing the run
RUN_HOST_TAG = "busflow/host"  # the host it runs on: a pid means something only there
RUN_PID_START_TAG = "busflow/pid_start"  # the process's start time: a reused pid is not it
DEFAULT_MAX_AGE = dt.timedelta(hours=6)  # a run without a pid tag: stale only when this old
IN_PROGRESS = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
_STEP_ENDS = {
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.STEP_SKIPPED,
}


def run_tags_for_this_process() -> dict[str, str]:
    """The tags naming the process that executes a run (the CLI adds them to its runs)."""
    tags = {RUN_PID_TAG: str(os.getpid()), RUN_HOST_TAG: socket.gethostname()}
    start = process_start_time(os.getpid())
    if start is not None:
        tags[RUN_PID_START_TAG] = str(start)
    return tags


def fail_stale_runs(
    instance: dg.DagsterInstance,
    log: Callable[[str], object],
    *,
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
    now: float | None = None,
) -> list[str]:
    """Mark failed the CLI's runs of the job still in progress whose process is gone; returns
    their ids. A run whose pid tag names a process of another host is left alone (that host
    judges it); a run without a pid tag (an older CLI) is stale once `max_age` old."""
    now = time.time() if now is None else now
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=JOB_NAME, statuses=IN_PROGRESS, tags={LAUNCHED_BY_TAG: "cli"}
        )
    )
    failed = []
    for record in records:
        run = record.dagster_run
        reason = _why_stale(run, _started_at(record), max_age, now)
        if reason is None:
            continue
        steps = _mark_failed(instance, run, reason)
        where = f" (in progress: {', '.join(steps)})" if steps else ""
        log(f"run {run.run_id} marked failed{where}: {reason}")
        failed.append(run.run_id)
    return failed


def report_stale_runs(
    instance: dg.DagsterInstance, log: Callable[[str], object], **kwargs
) -> list[str]:
    """`fail_stale_runs`, then each newly failed run's #ops message (its verdict: a
    VERIFY_JOB_ERROR, the verify process died). Returns the runs' ids."""
    failed = fail_stale_runs(instance, log, **kwargs)
    pending = PendingEvidence(instance.root_directory)
    for run_id in failed:
        try:
            finish_run(instance, run_id, store=None, log=log)
        except Exception as exc:  # one run's message must not keep the others (or the run) back
            log(f"the #ops message of stale run {run_id} failed: {type(exc).__name__}: {exc}")
        if environment.evidence_signing_key():  # no store here: written by the next repost
            partition = instance.get_run_by_id(run_id).tags.get(PARTITION_TAG, "")
            pending.keep(partition, run_id, "the run's process died; its evidence is pending")
    return failed


def _started_at(record) -> float:
    if record.start_time:
        return record.start_time
    created = record.create_timestamp
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.timezone.utc)
    return created.timestamp()


def _why_stale(
    run: dg.DagsterRun, started_at: float, max_age: dt.timedelta, now: float
) -> str | None:
    """Why the run is stale (the text of its failure), or None while it may still be running."""
    host = run.tags.get(RUN_HOST_TAG)
    try:
        pid = int(run.tags[RUN_PID_TAG])
    except (KeyError, ValueError):
        pid = None
    if pid is not None:
        if host != socket.gethostname():
            return None
        try:
            start = int(run.tags[RUN_PID_START_TAG])
        except (KeyError, ValueError):
            start = None
        if process_alive(pid, start):
            return None
        return f"the verify process died (pid {pid} on host {host})"
    age = now - started_at
    if age < max_age.total_seconds():
        return None
    return (
        f"the verify process is presumed dead ({run.status.value} for {age / 3600:.1f} h, more "
        f"than {max_age.total_seconds() / 3600:g} h, and no {RUN_PID_TAG} tag to check it by)"
    )


def _steps_in_progress(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    started: list[str] = []
    ended: set[str] = set()
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, *_STEP_ENDS}):
        event = entry.dagster_event
        if event.event_type == DagsterEventType.STEP_START:
            started.append(event.step_key)
        else:
            ended.add(event.step_key)
    return [s for s in started if s not in ended]


def _mark_failed(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> list[str]:
    """A step failure for each step in progress (or one for the run, when none was), carrying
    the VERIFY_JOB_ERROR finding the verdict reads, then the run failure."""
    steps = _steps_in_progress(instance, run.run_id)
    found = f"run {run.run_id} was found {run.status.value} by a later run and marked failed"
    for step in steps or [None]:
        where = f" during step {step}" if step else ""
        finding = Finding(
            "VERIFY_JOB_ERROR",
            f"{reason}{where}; {found}: the day is not verified; re-run the date",
            {
                "run_id": run.run_id,
                "step": step,
                "pid": run.tags.get(RUN_PID_TAG),
                "host": run.tags.get(RUN_HOST_TAG),
                "found_status": run.status.value,
            },
            next_step="Find out what ended the process (the OOM killer, a kill, a reboot: the "
            "host's journal), then re-run the date.",
        ).to_dict()
        instance.report_dagster_event(
            DagsterEvent(
                event_type_value=DagsterEventType.STEP_FAILURE.value,
                job_name=run.job_name,
                step_key=step,
                message=finding["summary"],
                event_specific_data=StepFailureData(
                    error=None,
                    user_failure_data=UserFailureData(
                        label="verify_process_died",
                        description=finding["summary"],
                        metadata={FINDING_KEY: dg.MetadataValue.json(finding)},
                    ),
                ),
            ),
            run_id=run.run_id,
        )
    where = f" during step {', '.join(steps)}" if steps else ""
    instance.report_run_failed(run, message=f"{reason}{where}; {found}")
    return steps
