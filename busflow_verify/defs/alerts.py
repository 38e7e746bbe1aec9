"""Where #ops messages go: the incoming webhook (or a bot token), the outbox, the retry policy.
Posting happens after each run (defs/finish.py)."""

from __future__ import annotations

import os
from pathlib import Path

from busflow_verify.core import config as cfg
from busflow_verify.core.alerts import BotChannel, Outbox, RetryPolicy, WebhookChannel

WEBHOOK_ENV = "SLACK_OPS_WEBHOOK"
BOT_TOKEN_ENV, CHANNEL_ENV, API_URL_ENV = "SLACK_BOT_TOKEN", "SLACK_OPS_CHANNEL", "SLACK_API_URL"
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
