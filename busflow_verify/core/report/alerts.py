"""#ops in Slack (runbook F4): one message per run, posted to the incoming webhook (or, for teams
that post with a bot token, through dagster-slack's SlackResource client).

5xx, 429 and connection errors are retried with exponential backoff (bounded); a 4xx is not
(the webhook secret is stale or revoked: retrying cannot help). Either way an undelivered message
is an F4 — P3, @platform-oncall — that never changes the backup verdict, and the message is kept
in an outbox on disk until `busflow-verify alerts repost` delivers it, so on-call is never blind.

The webhook URL is a secret: it is never put in a message, an exception, a log line or a file.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from busflow_verify.core.failures import Finding, failure_label
from busflow_verify.core.verdict import Verdict


def _secret_rejected(status: int | None) -> bool:
    """A 4xx other than 429 (too many requests): the webhook or token itself is wrong, so
    retrying cannot help (F4 step 1: rotate)."""
    return status is not None and 400 <= status < 500 and status != 429


@dataclass
class RetryPolicy:
    attempts: int = 4  # in all, the first included
    backoff_seconds: float = 1.0  # doubled after each failed attempt
    timeout_seconds: float = 10.0


@dataclass
class Delivery:
    delivered: bool
    attempts: int
    status: int | None = None  # the last HTTP status, None when the endpoint was not reached
    error: str | None = None  # the error's class, never its text (it may carry the URL)
    statuses: list[int | None] = field(default_factory=list)


def failure_lines(f: dict[str, Any]) -> list[str]:
    """One failure in #ops: code and name, severity, who to page, the summary, the runbook step
    (also the dead-man's switch's message, core/report/deadman.py)."""
    lines = [
        f"*{failure_label(f)}* — severity {f['severity']} — page {' + '.join(f['escalate_to'])}"
    ]
    lines.append(f"> {f['summary']}")
    if f.get("next_step"):
        lines.append(f"> Runbook ({f.get('runbook_section', f['code'])}): {f['next_step']}")
    return lines


def ops_message(verdict: Verdict, links: Links | None = None) -> str:
    """The #ops text: partition, dump, and per failure code, severity, who to page, the numbers
    and the runbook step; with a UI base URL, the run's page. Block Kit's fallback `text`."""
    dump = verdict.dump or {}
    key = dump.get("key", "no dump")
    where = f" ({dump['endpoint']} endpoint)" if dump.get("endpoint") else ""
    if verdict.verified:
        lines = [f":white_check_mark: Backup verify {verdict.partition}: VERIFIED — {key}{where}"]
    else:
        lines = [f":rotating_light: Backup verify {verdict.partition}: NOT VERIFIED — {key}{where}"]
    for f in verdict.failures:
        lines.extend(failure_lines(f))
    for n in verdict.notices:
        lines.append(f"_{failure_label(n)} (informational)_: {n['summary']}")
    if verdict.cutover_halt:
        lines.append(
            f":octagonal_sign: Cutover work is halted since "
            f"{verdict.cutover_halt['since']} until a verified dump is promoted (F5)."
        )
    counts = verdict.row_counts
    if counts:
        lines.append("Rows: " + ", ".join(f"{t} {n:,}" for t, n in list(counts.items())[:5]))
    page = (links or Links()).run_page(verdict.run_id)
    lines.append(f"Run {verdict.run_id}" + (f": {page}" if page else ""))
    return "\n".join(lines)


@dataclass(frozen=True)
class Links:
    """Where a message links: the Dagster UI's base URL and the runbook's (none: no links)."""

    ui_base: str | None = None
    runbook: str | None = None

    def run_page(self, run_id: str | None) -> str | None:
        return f"{self.ui_base.rstrip('/')}/runs/{run_id}" if self.ui_base and run_id else None

    def runbook_section(self, section: str | None) -> str | None:
        """The section's anchor as GitHub and GitLab make it from its heading."""
        if not self.runbook or not section:
            return None
        slug = re.sub(r"[^\w\- ]", "", section.lower()).replace(" ", "-")
        return f"{self.runbook.split('#')[0]}#{slug}"


_SECTION_LIMIT = 2900  # Slack's limit for a section's text is 3000 characters


def _section(text: str) -> dict[str, Any]:
    text = text if len(text) <= _SECTION_LIMIT else text[: _SECTION_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _failure_block(f: dict[str, Any], links: Links) -> dict[str, Any]:
    """One failure: code, severity, who to page, the summary and the step, linked to its
    runbook section when the runbook's URL is known."""
    lines = failure_lines(f)
    url = links.runbook_section(f.get("runbook_section"))
    if url and f.get("next_step"):
        section = f.get("runbook_section", f["code"])
        lines[-1] = f"> <{url}|Runbook ({section})>: {f['next_step']}"
    return _section("\n".join(lines))


def ops_blocks(verdict: Verdict, links: Links | None = None) -> list[dict[str, Any]]:
    """The #ops message in Block Kit: a header, the dump, a section per failure, the notices,
    the cutover halt, the rows, and the run (linked to its page in the Dagster UI)."""
    links = links or Links()
    head = "VERIFIED" if verdict.verified else "NOT VERIFIED"
    dump = verdict.dump or {}
    where = f" ({dump['endpoint']} endpoint)" if dump.get("endpoint") else ""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"Backup verify {verdict.partition}: {head}"},
        },
        _section(f"Dump `{dump.get('key', 'no dump')}`{where}"),
    ]
    blocks += [_failure_block(f, links) for f in verdict.failures]
    notices = [f"_{failure_label(n)} (informational)_: {n['summary']}" for n in verdict.notices]
    if verdict.cutover_halt:
        notices.append(
            f":octagonal_sign: Cutover work is halted since {verdict.cutover_halt['since']} "
            "until a verified dump is promoted (F5)."
        )
    if notices:
        blocks.append(_section("\n".join(notices)))
    page = links.run_page(verdict.run_id)
    run = f"<{page}|Run {verdict.run_id} in the Dagster UI>" if page else f"Run {verdict.run_id}"
    counts = list(verdict.row_counts.items())[:5]
    rows = ["Rows: " + ", ".join(f"{t} {n:,}" for t, n in counts)] if counts else []
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join([*rows, run])}]}
    )
    return blocks


@dataclass(frozen=True)
class Message:
    """One #ops message: the plain text (the fallback, and what the outbox and logs show) and
    its Block Kit blocks."""

    text: str
    blocks: list[dict[str, Any]] | None = None


class WebhookChannel:
    """#ops through the incoming webhook (the runbook's SLACK_OPS_WEBHOOK)."""

    secret_name = "SLACK_OPS_WEBHOOK"

    def __init__(self, url: str, timeout_seconds: float):
        from slack_sdk.webhook import WebhookClient

        self._client = WebhookClient(url, timeout=int(max(1, timeout_seconds)), retry_handlers=[])

    def send(self, text: str, blocks: list | None = None) -> tuple[int, bool]:
        """(HTTP status, rejected?) of one attempt; raises when Slack is not reached."""
        status = self._client.send(text=text, blocks=blocks).status_code
        return status, _secret_rejected(status)


class BotChannel:
    """#ops through a bot token (dagster-slack's SlackResource client) and a channel."""

    secret_name = "SLACK_BOT_TOKEN"
    # Web API answers HTTP 200 with ok=false for these: the token or channel is wrong
    REJECTED = {
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "channel_not_found",
        "not_in_channel",
        "missing_scope",
    }

    def __init__(self, client, channel: str):
        self._client, self._channel = client, channel

    def send(self, text: str, blocks: list | None = None) -> tuple[int, bool]:
        from slack_sdk.errors import SlackApiError

        try:
            self._client.chat_postMessage(channel=self._channel, text=text, blocks=blocks)
            return 200, False
        except SlackApiError as exc:
            status, error = exc.response.status_code, exc.response.get("error")
            if error in self.REJECTED:
                return 403, True  # reported as the 4xx it means: rotate, do not retry
            return status if status >= 400 else 500, _secret_rejected(status)


def post(
    channel, text: str, policy: RetryPolicy, sleep=time.sleep, blocks: list | None = None
) -> Delivery:
    """Post to #ops, retrying what can recover: 5xx, 429, timeouts, refused connections."""
    delivery = Delivery(delivered=False, attempts=0)
    delay = policy.backoff_seconds
    for attempt in range(1, policy.attempts + 1):
        delivery.attempts = attempt
        rejected = False
        try:
            delivery.status, rejected = channel.send(text, blocks)
            delivery.error = None
        except Exception as exc:  # connection refused, timeout: Slack not reached
            delivery.status, delivery.error = None, type(exc).__name__
        delivery.statuses.append(delivery.status)
        if delivery.status is not None and 200 <= delivery.status < 300:
            delivery.delivered = True
            return delivery
        if rejected:
            return delivery  # the webhook or token itself is wrong, retrying cannot help
        if attempt < policy.attempts:
            sleep(delay)
            delay *= 2
    return delivery


def f4_finding(delivery: Delivery, secret_name: str = "SLACK_OPS_WEBHOOK") -> Finding:
    """The runbook's F4, with the 4xx / 5xx distinction it makes."""
    got = f"HTTP {delivery.status}" if delivery.status else f"no answer ({delivery.error})"
    details = {
        "http_status": delivery.status,
        "attempts": delivery.attempts,
        "statuses": delivery.statuses,
        "error": delivery.error,
    }
    if _secret_rejected(delivery.status):
        return Finding(
            "SLACK_NOTIFICATION_FAILURE",
            f"the #ops message could not be posted: {got}, not retried — the {secret_name} "
            "secret is stale or revoked. The backup verdict is unaffected.",
            {**details, "cause": "webhook_rejected"},
            next_step=f"Rotate {secret_name} via the secrets-rotation runbook, then re-post "
            "(busflow-verify alerts repost) so on-call isn't blind (F4 step 1).",
        )
    return Finding(
        "SLACK_NOTIFICATION_FAILURE",
        f"the #ops message could not be posted: {got} after {delivery.attempts} attempts with "
        "exponential backoff — Slack outage, no rotation needed. The backup verdict is "
        "unaffected.",
        {**details, "cause": "slack_unavailable"},
        next_step="Post the result manually to #ops (or busflow-verify alerts repost once Slack "
        "is back); no rotation needed (F4 step 1).",
    )


class Outbox:
    """Undelivered #ops messages, one JSON file each, until a repost delivers them."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def keep(self, partition: str, run_id: str | None, text: str, reason: str, blocks=None) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.json"
        tmp = path.with_suffix(".tmp")
        kept = {"partition": partition, "run_id": run_id, "text": text, "reason": reason}
        tmp.write_text(json.dumps({**kept, "blocks": blocks, "kept_at": time.time()}))
        tmp.rename(path)  # a reader never sees half a message
        return path

    def pending(self) -> list[Path]:
        return sorted(self.folder.glob("*.json")) if self.folder.exists() else []

    def repost(self, channel, policy: RetryPolicy, sleep=time.sleep) -> list[dict[str, Any]]:
        results = []
        for path in self.pending():
            message = json.loads(path.read_text())
            delivery = post(channel, message["text"], policy, sleep, message.get("blocks"))
            if delivery.delivered:
                path.unlink()
            results.append(
                {"file": path.name, "partition": message["partition"], **asdict(delivery)}
            )
        return results


def notify(
    verdict: Verdict,
    channel,
    outbox: Outbox,
    policy: RetryPolicy,
    log,
    sleep=time.sleep,
    links: Links | None = None,
) -> dict[str, Any]:
    """Post the run's message (text and Block Kit); on failure keep it in the outbox and return
    the F4 finding.

    Returns {"delivered": bool, "attempts": n, "status": ..., "f4": finding dict or None}.
    """
    message = Message(ops_message(verdict, links), ops_blocks(verdict, links))
    return deliver(message, verdict.partition, verdict.run_id, channel, outbox, policy, log, sleep)


def deliver(
    message: str | Message,
    partition: str,
    run_id,
    channel,
    outbox: Outbox,
    policy: RetryPolicy,
    log,
    sleep=time.sleep,
) -> dict[str, Any]:
    """Post one #ops message (a run's, or the dead-man's switch's text); undelivered, keep it in
    the outbox and return the F4 finding (`notify`'s return)."""
    if isinstance(message, str):
        message = Message(message)
    text, blocks = message.text, message.blocks
    if channel is None:
        log(
            f"SLACK_OPS_WEBHOOK is not set: the #ops message goes to the log and the outbox\n{text}"
        )
        outbox.keep(partition, run_id, text, "no webhook configured", blocks)
        return {
            "delivered": False,
            "attempts": 0,
            "status": None,
            "f4": None,
            "reason": "no webhook configured",
        }
    delivery = post(channel, text, policy, sleep, blocks)
    if delivery.delivered:
        return {
            "delivered": True,
            "attempts": delivery.attempts,
            "status": delivery.status,
            "f4": None,
        }
    finding = f4_finding(delivery, channel.secret_name)
    outbox.keep(partition, run_id, text, finding.details["cause"], blocks)
    log(f"F4 {finding.summary}")
    return {
        "delivered": False,
        "attempts": delivery.attempts,
        "status": delivery.status,
        "f4": finding.to_dict(),
    }
