"""#ops for runs launched by the schedule or the UI: one message per run, success included.

The CLI posts its own runs' messages (it has the verdict in hand and puts F4 into it), so these
sensors skip runs tagged as launched by the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from busflow_verify.core import config as cfg
from busflow_verify.core.alerts import Outbox, RetryPolicy, notify
from busflow_verify.defs.jobs import backup_verify_job
from busflow_verify.defs.records import verdict_for_run

WEBHOOK_ENV = "SLACK_OPS_WEBHOOK"
LAUNCHED_BY_TAG = "busflow/launched_by"
OUTBOX_DIR = "busflow-outbox"


def alert_settings(dagster_home: str | None = None) -> tuple[str | None, Outbox, RetryPolicy]:
    """The webhook (a secret: only ever passed to the poster), the outbox, the retry policy."""
    alerts = cfg.load_verify_config(cfg.config_dir()).alerts
    home = Path(dagster_home or os.environ["DAGSTER_HOME"])
    policy = RetryPolicy(alerts.attempts, alerts.backoff_seconds, alerts.timeout_seconds)
    return os.environ.get(WEBHOOK_ENV) or None, Outbox(home / OUTBOX_DIR), policy


def _alert_for(context: dg.RunStatusSensorContext) -> None:
    run = context.dagster_run
    if run.tags.get(LAUNCHED_BY_TAG) == "cli":
        return
    verdict = verdict_for_run(context.instance, run.run_id)
    url, outbox, policy = alert_settings(context.instance.root_directory)
    result = notify(verdict, url, outbox, policy, log=context.log.warning)
    if result["f4"]:
        f4 = result["f4"]
        context.log.error(f"F4 {f4['name']} ({f4['severity']}, page "
                          f"{' + '.join(f4['escalate_to'])}): {f4['summary']}")


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[backup_verify_job],
                      name="ops_alert_on_success", default_status=dg.DefaultSensorStatus.RUNNING,
                      description="#ops message for a completed verify run (verified or not: "
                                  "non-blocking check failures leave the run green).")
def ops_alert_on_success(context: dg.RunStatusSensorContext):
    _alert_for(context)


@dg.run_failure_sensor(monitored_jobs=[backup_verify_job], name="ops_alert_on_failure",
                       default_status=dg.DefaultSensorStatus.RUNNING,
                       description="#ops message for a failed verify run: failed blocking checks "
                                   "and crashed steps alike.")
def ops_alert_on_failure(context: dg.RunFailureSensorContext):
    _alert_for(context)
