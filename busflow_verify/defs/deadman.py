"""The dead-man's switch's Dagster layer: what the instance says, the sensor, the #ops delivery.

The logic (age, once-only state, the message) is core/report/deadman.py; the state file beside the
instance is shared with the CLI (`busflow-verify status`), so one silence is told once.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from busflow_verify.core import config as cfg
from busflow_verify.core.report.alerts import deliver
from busflow_verify.core.report.deadman import DeadmanState, Decision, LastRun, Observation
from busflow_verify.core.verdict import is_verified
from busflow_verify.defs import environment
from busflow_verify.defs.alerts import alert_settings
from busflow_verify.defs.run_history import JOB_NAME, PARTITION_TAG, run_facts, verdict_for_run

UTC = dt.timezone.utc
_COMPLETED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


def _utc(value) -> dt.datetime:
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _ended(record) -> dt.datetime:
    return _utc(record.end_time or record.update_timestamp or record.create_timestamp)


def latest_runs_by_partition(instance: dg.DagsterInstance, limit: int = 1000) -> dict:
    """{partition: the run record of its latest completed run}, newest partition first."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=JOB_NAME, statuses=_COMPLETED),
        limit=limit,
        order_by="create_timestamp",
        ascending=False,
    )
    latest: dict = {}
    for record in records:
        partition = record.dagster_run.tags.get(PARTITION_TAG)
        if partition and partition not in latest:
            latest[partition] = record
    return {p: latest[p] for p in sorted(latest, reverse=True)}


def last_verified_record(instance: dg.DagsterInstance):
    """(partition, run record) of the newest partition whose latest completed run verified."""
    for partition, record in latest_runs_by_partition(instance).items():
        if is_verified(run_facts(instance, record.dagster_run.run_id)):
            return partition, record
    return None, None


def observe(instance: dg.DagsterInstance) -> Observation:
    partition, record = last_verified_record(instance)
    newest = instance.get_run_records(
        filters=dg.RunsFilter(job_name=JOB_NAME), limit=1, order_by="create_timestamp"
    )
    oldest = instance.get_run_records(
        filters=dg.RunsFilter(job_name=JOB_NAME),
        limit=1,
        order_by="create_timestamp",
        ascending=True,
    )
    last_run = None
    if newest:
        run = newest[0].dagster_run
        codes, verified = (), False
        if run.status in _COMPLETED:
            verdict = verdict_for_run(instance, run.run_id)
            codes = tuple(dict.fromkeys(f["code"] for f in verdict.failures))
            verified = verdict.verified
        last_run = LastRun(
            run.tags.get(PARTITION_TAG),
            run.status.value,
            _utc(newest[0].create_timestamp),
            codes,
            verified,
        )
    return Observation(
        partition,
        _ended(record) if record else None,
        _utc(oldest[0].create_timestamp) if oldest else None,
        last_run,
    )


def max_age() -> dt.timedelta:
    hours = cfg.load_verify_config(environment.config_dir()).deadman.max_age_hours
    return dt.timedelta(hours=hours)


def evaluate(instance: dg.DagsterInstance, log, now: dt.datetime | None = None) -> Decision:
    """Look at the instance, and on a transition post to #ops (undelivered: the outbox)."""
    now = now or dt.datetime.now(UTC)
    home = instance.root_directory
    obs = observe(instance)

    def send(decision: Decision) -> None:
        channel, outbox, policy = alert_settings(home)
        result = deliver(decision.message, "deadman", None, channel, outbox, policy, log)
        state = "delivered" if result["delivered"] else "kept in the outbox"
        log(f"dead-man's switch: {decision.kind} message {state}")

    return DeadmanState(home).transition(obs, now, max_age(), send)


@dg.sensor(
    name="verification_deadman",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Dead-man's switch: one P1 VERIFICATION_STALE to #ops when no dump has been "
    "verified for longer than verify.yaml deadman.max_age_hours (default 26 h), one recovery "
    "message when a dump verifies again; quiet in between (state in DAGSTER_HOME, shared "
    "with `busflow-verify status`).",
)
def verification_deadman(context: dg.SensorEvaluationContext):
    decision = evaluate(context.instance, log=context.log.info)
    age = "no run yet" if decision.age is None else f"{decision.age.total_seconds() / 3600:.1f} h"
    state = "STALE" if decision.stale else "fresh"
    posted = f", posted {decision.kind}" if decision.kind else ""
    return dg.SkipReason(f"verification {state} (age {age}){posted}")
