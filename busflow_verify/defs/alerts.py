"""#ops for runs launched by the schedule or the UI: one message per run, success included.

The CLI posts its own runs' messages (it has the verdict in hand and puts F4 into it), so these
sensors skip runs tagged as launched by the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from busflow_verify.core import config as cfg
from busflow_verify.core.alerts import BotChannel, Outbox, RetryPolicy, WebhookChannel, notify
from busflow_verify.defs.jobs import backup_verify_job
from busflow_verify.defs.records import verdict_for_run

WEBHOOK_ENV = "SLACK_OPS_WEBHOOK"
BOT_TOKEN_ENV, CHANNEL_ENV, API_URL_ENV = "SLACK_BOT_TOKEN", "SLACK_OPS_CHANNEL", "SLACK_API_URL"
LAUNCHED_BY_TAG = "busflow/launched_by"
OUTBOX_DIR = "busflow-outbox"


def alert_settings(dagster_home: str | None = None):
    """(channel or None, outbox, retry policy). The webhook is the runbook's default; with no
    webhook, SLACK_BOT_TOKEN and SLACK_OPS_CHANNEL post through dagster-slack's SlackResource.
    Secrets go only into the Slack clients."""
    alerts = cfg.load_verify_config(cfg.config_dir()).alerts
    home = Path(dagster_home or os.environ["DAGSTER_HOME"])
    policy = RetryPolicy(alerts.attempts, alerts.backoff_seconds, alerts.timeout_seconds)
    return ops_channel(alerts.timeout_seconds), Outbox(home / OUTBOX_DIR), policy


def ops_channel(timeout_seconds: float):
    if os.environ.get(WEBHOOK_ENV):
        return WebhookChannel(os.environ[WEBHOOK_ENV], timeout_seconds)
    if os.environ.get(BOT_TOKEN_ENV) and os.environ.get(CHANNEL_ENV):
        from dagster_slack import SlackResource

        client = SlackResource(token=os.environ[BOT_TOKEN_ENV]).get_client()
        client.timeout = int(max(1, timeout_seconds))
        client.retry_handlers = []  # retries are ours, counted and classified (F4)
        if os.environ.get(API_URL_ENV):  # a Slack-compatible API elsewhere (and the tests)
            client.base_url = os.environ[API_URL_ENV]
        return BotChannel(client, os.environ[CHANNEL_ENV])
    return None


def _alert_for(context: dg.RunStatusSensorContext) -> None:
    run = context.dagster_run
    if run.tags.get(LAUNCHED_BY_TAG) == "cli":
        return
    verdict = verdict_for_run(context.instance, run.run_id)
    channel, outbox, policy = alert_settings(context.instance.root_directory)
    result = notify(verdict, channel, outbox, policy, log=context.log.warning)
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
