"""The dead-man's switch's Dagster layer: what the instance says, the sensor, the #ops delivery.

The logic (age, once-only state, the message) is core/report/deadman.py; the state file beside the
instance is shared with the CLI (`busflow-verify status`), so one silence is told once.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from busflow_verify.core import config as cfg
from busflow_verify.core.report.alerts import deliver
from busflow_verify.core.report.cutover import CutoverHalt
from busflow_verify.core.report.deadman import DeadmanState, Decision, LastRun, Observation
from busflow_verify.defs import environment
from busflow_verify.defs.alerts import ops_delivery
from busflow_verify.defs.run_history import (
    JOB_NAME,
    PARTITION_TAG,
    NewestRun,
    newest_run,
    verified_runs,
)

UTC = dt.timezone.utc


def _utc(value) -> dt.datetime:
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _ended(record) -> dt.datetime:
    return _utc(record.end_time or record.update_timestamp or record.create_timestamp)


def observation(instance: dg.DagsterInstance, newest: NewestRun | None) -> Observation:
    """What the switch judges: the newest verified partition and when its run ended, the job's
    first run, and the `newest` run as read by the caller."""
    record, facts = next(verified_runs(instance), (None, None))
    oldest = instance.get_run_records(
        filters=dg.RunsFilter(job_name=JOB_NAME),
        limit=1,
        order_by="create_timestamp",
        ascending=True,
    )
    last_run = None
    if newest:
        last_run = LastRun(
            newest.run.tags.get(PARTITION_TAG),
            newest.run.status.value,
            _utc(newest.record.create_timestamp),
            newest.failure_codes,
            newest.verified,
        )
    return Observation(
        facts.partition if facts else None,
        _ended(record) if record else None,
        _utc(oldest[0].create_timestamp) if oldest else None,
        last_run,
    )


def observe(instance: dg.DagsterInstance) -> Observation:
    return observation(instance, newest_run(instance, CutoverHalt(instance.root_directory).get()))


def max_age(config: cfg.VerifyConfig) -> dt.timedelta:
    return dt.timedelta(hours=config.deadman.max_age_hours)


def evaluate(
    instance: dg.DagsterInstance,
    log,
    now: dt.datetime | None = None,
    config: cfg.VerifyConfig | None = None,
    obs: Observation | None = None,
) -> Decision:
    """Look at the instance, and on a transition post to #ops (undelivered: the outbox).
    `config` and `obs`, when the caller has read them already, are not read again."""
    now = now or dt.datetime.now(UTC)
    home = instance.root_directory
    config = config or cfg.load_verify_config(environment.config_dir())
    obs = obs or observe(instance)

    def send(decision: Decision) -> None:
        channel, outbox, policy = ops_delivery(config.alerts, home)
        result = deliver(decision.message, "deadman", None, channel, outbox, policy, log)
        state = "delivered" if result["delivered"] else "kept in the outbox"
        log(f"dead-man's switch: {decision.kind} message {state}")

    return DeadmanState(home).transition(obs, now, max_age(config), send)


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
