"""`busflow-verify alerts repost`: send the #ops messages kept in the outbox (undelivered)."""

from __future__ import annotations

from busflow_verify.cli.parser import UsageError
from busflow_verify.defs import environment
from busflow_verify.defs.alerts import alert_settings


def repost(args) -> int:
    """0 when every pending message was delivered, else 1."""
    if not environment.dagster_home():
        raise UsageError("DAGSTER_HOME is not set (the outbox lives there)")
    channel, outbox, policy = alert_settings()
    if channel is None:
        raise UsageError(
            "SLACK_OPS_WEBHOOK (or SLACK_BOT_TOKEN and SLACK_OPS_CHANNEL) is not "
            "set: nothing can be reposted"
        )
    results = outbox.repost(channel, policy)
    for r in results:
        state = (
            "delivered" if r["delivered"] else f"NOT delivered (HTTP {r['status']}, {r['error']})"
        )
        print(f"{r['partition']}  {r['file']}  {state}  after {r['attempts']} attempt(s)")
    print(f"{sum(r['delivered'] for r in results)} of {len(results)} pending message(s) delivered")
    return 0 if all(r["delivered"] for r in results) else 1
