"""`busflow-verify alerts repost`: send the #ops messages kept in the outbox (undelivered)."""

from __future__ import annotations

from busflow_verify.cli.parser import UsageError
from busflow_verify.defs import environment
from busflow_verify.defs.alerts import alert_settings


def repost(args) -> int:
    """Write the evidence kept as pending, then send the outbox: 0 when everything pending was
    written and delivered, else 1."""
    if not environment.dagster_home():
        raise UsageError("DAGSTER_HOME is not set (the outbox lives there)")
    evidence_written = _write_pending_evidence()
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
    return 0 if evidence_written and all(r["delivered"] for r in results) else 1


def _write_pending_evidence() -> bool:
    """The runs whose evidence could not be written (defs/evidence.py), written now; True when
    none is left pending."""
    from busflow_verify.cli.evidence import print_written
    from busflow_verify.defs.evidence import PendingEvidence, write_pending
    from busflow_verify.defs.instance import open_instance
    from busflow_verify.defs.resources import built_backup_store

    if not PendingEvidence(environment.dagster_home()).pending():
        return True
    if environment.missing_required():
        print(
            "pending evidence not written: "
            + ", ".join(environment.missing_required())
            + " not set"
        )
        return False
    with open_instance() as instance, built_backup_store() as store:
        results = write_pending(instance, store, lambda m: None)
    return print_written(results)
