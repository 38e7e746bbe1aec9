"""Where #ops messages go: the incoming webhook (or a bot token), the outbox, the retry policy.
Posting happens after each run (defs/finish.py)."""

from __future__ import annotations

from pathlib import Path

from busflow_verify.core import config as cfg
from busflow_verify.core.report.alerts import BotChannel, Outbox, RetryPolicy, WebhookChannel
from busflow_verify.defs import environment

OUTBOX_DIR = "busflow-outbox"


def alert_settings(dagster_home: str | None = None):
    """(channel or None, outbox, retry policy), with verify.yaml's alerts as they are now."""
    return ops_delivery(cfg.load_verify_config(environment.config_dir()).alerts, dagster_home)


def ops_delivery(alerts: cfg.AlertsConfig, dagster_home: str | None = None):
    """(channel or None, outbox, retry policy). The webhook is the runbook's default; with no
    webhook, SLACK_BOT_TOKEN and SLACK_OPS_CHANNEL post through dagster-slack's SlackResource.
    Secrets go only into the Slack clients."""
    home = Path(dagster_home or environment.dagster_home())
    policy = RetryPolicy(alerts.attempts, alerts.backoff_seconds, alerts.timeout_seconds)
    return ops_channel(alerts.timeout_seconds), Outbox(home / OUTBOX_DIR), policy


def ops_channel(timeout_seconds: float):
    slack = environment.slack()
    if slack.webhook:
        return WebhookChannel(slack.webhook, timeout_seconds)
    if slack.bot_token and slack.channel:
        from dagster_slack import SlackResource

        client = SlackResource(token=slack.bot_token).get_client()
        client.timeout = int(max(1, timeout_seconds))
        client.retry_handlers = []  # retries are ours, counted and classified (F4)
        if slack.api_url:
            client.base_url = slack.api_url
        return BotChannel(client, slack.channel)
    return None
