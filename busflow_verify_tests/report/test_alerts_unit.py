"""#ops delivery (runbook F4) without Slack: a fake channel answering from a queue of statuses
or raising, and a fake sleep recording the backoff. No server, no network.

The seams are the module's own: `post(channel, text, policy, sleep=...)` takes any object with
`send(text) -> (status, rejected)` and the sleep as a callable, so nothing is monkeypatched.
"""

from __future__ import annotations

import json

import pytest

from busflow_verify.core.report import alerts
from busflow_verify.core.report.alerts import (
    BotChannel,
    Delivery,
    Outbox,
    RetryPolicy,
    WebhookChannel,
    f4_finding,
    notify,
    post,
)
from busflow_verify.core.verdict import Verdict

SECRET_URL = "https://hooks.slack.com/services/T000/B000/very-secret-token"


class FakeChannel:
    """Answers each send with the next queued outcome: an HTTP status (rejected as the webhook
    channel does: a 4xx other than 429) or an exception instance, raised as "not reached"."""

    secret_name = "SLACK_OPS_WEBHOOK"

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.sent: list[str] = []

    def send(self, text: str, blocks=None) -> tuple[int, bool]:
        self.sent.append(text)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome, 400 <= outcome < 500 and outcome != 429


class FakeSleep:
    def __init__(self):
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def timeout():
    return TimeoutError("timed out")


def refused():
    return ConnectionRefusedError(111, f"Connection refused: {SECRET_URL}")


# -- post: retry and backoff -------------------------------------------------------------------
@pytest.mark.parametrize(
    "outcomes, delivered, attempts, status, error, statuses, delays",
    [
        # first try
        ([200], True, 1, 200, None, [200], []),
        ([204], True, 1, 204, None, [204], []),
        # 5xx and 429 are retried, the delay doubling from backoff_seconds
        ([500, 200], True, 2, 200, None, [500, 200], [1.0]),
        ([429, 429, 200], True, 3, 200, None, [429, 429, 200], [1.0, 2.0]),
        ([502, 503, 504, 200], True, 4, 200, None, [502, 503, 504, 200], [1.0, 2.0, 4.0]),
        ([503, 503, 503, 503], False, 4, 503, None, [503, 503, 503, 503], [1.0, 2.0, 4.0]),
        ([429, 429, 429, 429], False, 4, 429, None, [429, 429, 429, 429], [1.0, 2.0, 4.0]),
        # Slack not reached: timeouts and refused connections are retried too, the error is the class
        ([timeout(), 200], True, 2, 200, None, [None, 200], [1.0]),
        ([timeout()] * 4, False, 4, None, "TimeoutError", [None] * 4, [1.0, 2.0, 4.0]),
        ([refused()] * 4, False, 4, None, "ConnectionRefusedError", [None] * 4, [1.0, 2.0, 4.0]),
        (
            [refused(), 500, timeout(), 200],
            True,
            4,
            200,
            None,
            [None, 500, None, 200],
            [1.0, 2.0, 4.0],
        ),
        (
            [500, 500, 500, timeout()],
            False,
            4,
            None,
            "TimeoutError",
            [500, 500, 500, None],
            [1.0, 2.0, 4.0],
        ),
        # a 4xx is never retried: the webhook or token is wrong
        ([400], False, 1, 400, None, [400], []),
        ([403], False, 1, 403, None, [403], []),
        ([404], False, 1, 404, None, [404], []),
        ([410], False, 1, 410, None, [410], []),
        ([500, 403], False, 2, 403, None, [500, 403], [1.0]),
        ([timeout(), 404], False, 2, 404, None, [None, 404], [1.0]),
    ],
)
def test_post_retries_what_can_recover_with_exponential_backoff(
    outcomes, delivered, attempts, status, error, statuses, delays
):
    channel, sleep = FakeChannel(*outcomes), FakeSleep()
    delivery = post(channel, "hello #ops", RetryPolicy(), sleep)
    assert (delivery.delivered, delivery.attempts, delivery.status, delivery.error) == (
        delivered,
        attempts,
        status,
        error,
    )
    assert delivery.statuses == statuses
    assert sleep.delays == delays
    assert channel.sent == ["hello #ops"] * attempts


@pytest.mark.parametrize(
    "attempts, backoff, delays",
    [
        (1, 1.0, []),
        (2, 1.0, [1.0]),
        (4, 0.5, [0.5, 1.0, 2.0]),
        (6, 0.25, [0.25, 0.5, 1.0, 2.0, 4.0]),
        (5, 3.0, [3.0, 6.0, 12.0, 24.0]),
    ],
)
def test_the_backoff_doubles_and_there_is_no_sleep_after_the_last_attempt(
    attempts, backoff, delays
):
    sleep = FakeSleep()
    delivery = post(
        FakeChannel(*[503] * attempts),
        "x",
        RetryPolicy(attempts=attempts, backoff_seconds=backoff),
        sleep,
    )
    assert delivery.attempts == attempts and not delivery.delivered
    assert sleep.delays == delays


def test_the_default_sleep_is_time_sleep():
    """The production default the fake stands in for (read, not called)."""
    assert post.__defaults__ == (alerts.time.sleep, None)


def test_an_exceptions_text_never_reaches_the_delivery_or_the_f4():
    delivery = post(FakeChannel(*[refused()] * 4), "x", RetryPolicy(), FakeSleep())
    finding = f4_finding(delivery)
    assert delivery.error == "ConnectionRefusedError"
    assert SECRET_URL not in json.dumps(finding.to_dict())
    assert "very-secret-token" not in repr(delivery)


# -- F4: what each outcome is ------------------------------------------------------------------
@pytest.mark.parametrize(
    "delivery, secret, cause, says, next_says",
    [
        (
            Delivery(False, 1, 403, statuses=[403]),
            "SLACK_OPS_WEBHOOK",
            "webhook_rejected",
            ["HTTP 403, not retried", "SLACK_OPS_WEBHOOK secret is stale or revoked"],
            "Rotate SLACK_OPS_WEBHOOK",
        ),
        (
            Delivery(False, 1, 404, statuses=[404]),
            "SLACK_OPS_WEBHOOK",
            "webhook_rejected",
            ["HTTP 404, not retried"],
            "Rotate SLACK_OPS_WEBHOOK",
        ),
        (
            Delivery(False, 2, 410, statuses=[500, 410]),
            "SLACK_OPS_WEBHOOK",
            "webhook_rejected",
            ["HTTP 410, not retried"],
            "Rotate SLACK_OPS_WEBHOOK",
        ),
        (
            Delivery(False, 1, 403, statuses=[403]),
            "SLACK_BOT_TOKEN",
            "webhook_rejected",
            ["the SLACK_BOT_TOKEN secret is stale or revoked"],
            "Rotate SLACK_BOT_TOKEN",
        ),
        (
            Delivery(False, 4, 503, statuses=[503] * 4),
            "SLACK_OPS_WEBHOOK",
            "slack_unavailable",
            [
                "HTTP 503 after 4 attempts with exponential backoff",
                "Slack outage, no rotation needed",
            ],
            "no rotation needed",
        ),
        (
            Delivery(False, 4, 429, statuses=[429] * 4),
            "SLACK_OPS_WEBHOOK",
            "slack_unavailable",
            ["HTTP 429 after 4 attempts"],
            "no rotation needed",
        ),
        (
            Delivery(False, 4, None, "TimeoutError", [None] * 4),
            "SLACK_OPS_WEBHOOK",
            "slack_unavailable",
            ["no answer (TimeoutError) after 4 attempts"],
            "no rotation needed",
        ),
        (
            Delivery(False, 3, None, "ConnectionRefusedError", [None] * 3),
            "SLACK_BOT_TOKEN",
            "slack_unavailable",
            ["no answer (ConnectionRefusedError) after 3 attempts"],
            "no rotation needed",
        ),
    ],
)
def test_f4_distinguishes_a_rejected_secret_from_an_outage(
    delivery, secret, cause, says, next_says
):
    failure = f4_finding(delivery, secret).to_dict()
    assert (failure["code"], failure["name"]) == ("F4", "SLACK_NOTIFICATION_FAILURE")
    assert failure["severity"] == "P3" and failure["escalate_to"] == ["@platform-oncall"]
    assert failure["details"]["cause"] == cause
    assert failure["details"]["http_status"] == delivery.status
    assert failure["details"]["attempts"] == delivery.attempts
    assert failure["details"]["statuses"] == delivery.statuses
    for text in says:
        assert text in failure["summary"]
    assert "The backup verdict is unaffected." in failure["summary"]
    assert next_says in failure["next_step"] and "alerts repost" in failure["next_step"]
    if cause == "slack_unavailable":
        assert "Rotate" not in failure["next_step"]


@pytest.mark.parametrize(
    "outcomes, cause",
    [
        ([403], "webhook_rejected"),
        ([500, 500, 500, 500], "slack_unavailable"),
        ([timeout()] * 4, "slack_unavailable"),
        ([500, 500, 500, 401], "webhook_rejected"),
    ],
)
def test_post_then_f4_classify_end_to_end_in_memory(outcomes, cause):
    delivery = post(FakeChannel(*outcomes), "x", RetryPolicy(), FakeSleep())
    assert f4_finding(delivery).details["cause"] == cause


# -- the channels' own classification --------------------------------------------------------
class FakeResponse:
    def __init__(self, status_code: int, error: str | None = None):
        self.status_code, self._error = status_code, error

    def get(self, key, default=None):
        return self._error if key == "error" else default


@pytest.mark.parametrize(
    "status, rejected",
    [
        (200, False),
        (400, True),
        (403, True),
        (404, True),
        (410, True),
        (429, False),
        (500, False),
        (503, False),
    ],
)
def test_the_webhook_channel_rejects_4xx_but_429(status, rejected):
    channel = WebhookChannel(SECRET_URL, timeout_seconds=1)  # builds the client, sends nothing

    class Client:
        def send(self, text, blocks=None):
            return FakeResponse(status)

    channel._client = Client()
    assert channel.send("x") == (status, rejected)


@pytest.mark.parametrize(
    "status, error, answer",
    [
        (None, None, (200, False)),  # chat_postMessage returned: posted
        (200, "invalid_auth", (403, True)),  # Web API's HTTP 200 ok=false: the token is wrong
        (200, "token_revoked", (403, True)),
        (200, "channel_not_found", (403, True)),
        (200, "not_in_channel", (403, True)),
        (200, "missing_scope", (403, True)),
        (429, "ratelimited", (429, False)),
        (500, "internal_error", (500, False)),
        (503, "service_unavailable", (503, False)),
        (200, "fatal_error", (500, False)),  # ok=false for another reason: retried as a 5xx
        (400, "invalid_arguments", (400, True)),
    ],
)
def test_the_bot_channel_reads_web_api_errors_as_statuses(status, error, answer):
    from slack_sdk.errors import SlackApiError

    class Client:
        def __init__(self):
            self.posted = []

        def chat_postMessage(self, channel, text, blocks=None):  # noqa: N802 (the SDK's name)
            self.posted.append((channel, text))
            if status is not None:
                raise SlackApiError("failed", FakeResponse(status, error))

    client = Client()
    assert BotChannel(client, "#ops").send("hello") == answer
    assert client.posted == [("#ops", "hello")]


# -- notify and the outbox ---------------------------------------------------------------------
VERDICT = Verdict(
    verified=True,
    partition="2026-11-20",
    run_id="run-1",
    dump={"key": "pg_dump_20261120_0100.dump"},
)


@pytest.mark.parametrize(
    "outcomes, delivered, attempts, f4_cause, kept",
    [
        ([200], True, 1, None, []),
        ([500, 200], True, 2, None, []),
        ([403], False, 1, "webhook_rejected", ["webhook_rejected"]),
        ([503] * 4, False, 4, "slack_unavailable", ["slack_unavailable"]),
        ([timeout()] * 4, False, 4, "slack_unavailable", ["slack_unavailable"]),
    ],
)
def test_notify_keeps_an_undelivered_message_in_the_outbox(
    tmp_path, outcomes, delivered, attempts, f4_cause, kept
):
    outbox, logged, sleep = Outbox(tmp_path / "outbox"), [], FakeSleep()
    result = notify(VERDICT, FakeChannel(*outcomes), outbox, RetryPolicy(), logged.append, sleep)
    assert (result["delivered"], result["attempts"]) == (delivered, attempts)
    assert (result["f4"] or {}).get("details", {}).get("cause") == f4_cause
    messages = [json.loads(p.read_text()) for p in outbox.pending()]
    assert [m["reason"] for m in messages] == kept
    for message in messages:
        assert message["partition"] == "2026-11-20" and message["run_id"] == "run-1"
        assert "VERIFIED" in message["text"]
    assert bool(logged) == (not delivered)
    if f4_cause:
        assert logged[-1].startswith("F4 the #ops message could not be posted")


def test_notify_without_a_channel_logs_and_keeps_the_message(tmp_path):
    outbox, logged = Outbox(tmp_path / "outbox"), []
    result = notify(VERDICT, None, outbox, RetryPolicy(), logged.append, FakeSleep())
    assert result == {
        "delivered": False,
        "attempts": 0,
        "status": None,
        "f4": None,
        "reason": "no webhook configured",
    }
    [kept] = outbox.pending()
    assert json.loads(kept.read_text())["reason"] == "no webhook configured"
    assert "SLACK_OPS_WEBHOOK is not set" in logged[0]


class KeyedChannel(FakeChannel):
    """Outcomes per message text (the outbox's files are not read in the order kept)."""

    def __init__(self, by_text: dict[str, list]):
        super().__init__()
        self.by_text = {text: list(outcomes) for text, outcomes in by_text.items()}

    def send(self, text: str, blocks=None) -> tuple[int, bool]:
        self.outcomes = self.by_text[text]
        return super().send(text, blocks)


@pytest.mark.parametrize(
    "first, second, kept, delays",
    [
        ([200], [200], set(), []),
        ([200], [403], {"2026-11-20"}, []),
        ([403], [200], {"2026-11-19"}, []),
        ([500, 200], [200], set(), [1.0]),  # retried once within the policy's two attempts
        ([500, 500], [200], {"2026-11-19"}, [1.0]),
        ([timeout(), 429], [403], {"2026-11-19", "2026-11-20"}, [1.0]),
    ],
)
def test_repost_delivers_what_it_can_and_keeps_the_rest(tmp_path, first, second, kept, delays):
    outbox = Outbox(tmp_path / "outbox")
    outbox.keep("2026-11-19", "run-a", "first", "slack_unavailable")
    outbox.keep("2026-11-20", "run-b", "second", "slack_unavailable")
    sleep = FakeSleep()
    results = outbox.repost(
        KeyedChannel({"first": first, "second": second}), RetryPolicy(attempts=2), sleep
    )
    assert sorted(r["partition"] for r in results) == ["2026-11-19", "2026-11-20"]
    assert {r["partition"] for r in results if not r["delivered"]} == kept
    assert {json.loads(p.read_text())["partition"] for p in outbox.pending()} == kept
    assert sleep.delays == delays
