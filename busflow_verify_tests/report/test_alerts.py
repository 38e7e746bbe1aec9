"""#ops (F4): one message per run to a real HTTP endpoint; retries, no retry on 4xx, the outbox."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType

from busflow_verify import cli
from busflow_verify.definitions import build_defs
from busflow_verify.defs.finish import finish_verify_run
from busflow_verify.defs.run_history import JOB_NAME

pytestmark = pytest.mark.e2e

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"


def secret_free(slack, *texts: str) -> bool:
    token = slack.SECRET_PATH.rsplit("/", 1)[1]
    return all(token not in t for t in texts)


def test_a_verified_run_posts_one_message(harness, make_dump, slack):
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 0
    [text] = slack.texts()
    assert f"Backup verify {DAY}: VERIFIED" in text and KEY in text
    assert verdict["alert"] == {"delivered": True, "attempts": 1, "status": 200}


def test_a_failure_message_names_code_severity_page_numbers_and_step(harness, make_dump, slack):
    harness.put(KEY, make_dump(orphans=250))
    code, verdict = harness.verify(DAY)
    assert code == 1
    [text] = slack.texts()
    assert "NOT VERIFIED" in text and KEY in text
    assert "*F3 ORPHAN_FK_SURGE* — severity P2 — page @data-oncall + @security-oncall" in text
    assert "250 orphans, allowlist max_orphans 200" in text
    assert "Runbook (F3 — ORPHAN_FK_SURGE)" in text


def test_4xx_is_not_retried_is_f4_rotate_and_leaves_the_verdict(harness, make_dump, slack):
    slack.replies = [403]
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert len(slack.posts) == 1
    assert code == 0 and verdict["verified"] is True  # the backup itself is fine
    [f4] = verdict["failures"]
    assert (f4["code"], f4["name"], f4["severity"], f4["escalate_to"]) == (
        "F4",
        "SLACK_NOTIFICATION_FAILURE",
        "P3",
        ["@platform-oncall"],
    )
    assert f4["details"]["cause"] == "webhook_rejected"
    assert "SLACK_OPS_WEBHOOK" in f4["next_step"]
    outbox = list((harness.home / "busflow-outbox").glob("*.json"))
    assert len(outbox) == 1
    assert secret_free(slack, json.dumps(verdict), harness.last_stderr, outbox[0].read_text())


def test_5xx_is_retried_with_backoff_then_f4_outage(harness, make_dump, slack):
    slack.replies = [500, 503, 500, 502]
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert len(slack.posts) == 4
    [f4] = verdict["failures"]
    assert f4["details"]["cause"] == "slack_unavailable"
    assert f4["details"]["statuses"] == [500, 503, 500, 502]
    assert "no rotation" in f4["summary"]
    assert code == 0 and verdict["verified"] is True


def test_429_then_success_is_delivered_on_the_third_attempt(harness, make_dump, slack):
    slack.replies = [429, 500]
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert verdict["alert"] == {"delivered": True, "attempts": 3, "status": 200}
    assert verdict["failures"] == []


def test_a_webhook_that_never_answers_times_out_and_is_retried(harness, make_dump, slack):
    slack.replies = ["hang", "hang"]
    harness.write_config(
        verify={
            "size_guard": {"min_bytes": 1000},
            "alerts": {"attempts": 2, "backoff_seconds": 0.01, "timeout_seconds": 1},
        }
    )
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    [f4] = verdict["failures"]
    assert f4["details"]["attempts"] == 2 and f4["details"]["http_status"] is None
    assert f4["details"]["cause"] == "slack_unavailable"


def test_the_outbox_is_reposted_once_slack_is_back(harness, make_dump, slack, capsys):
    slack.replies = [500, 500, 500, 500]
    harness.put(KEY, make_dump())
    harness.verify(DAY)
    assert len(list((harness.home / "busflow-outbox").glob("*.json"))) == 1
    capsys.readouterr()
    assert cli.main(["alerts", "repost"]) == 0
    assert "1 of 1 pending message(s) delivered" in capsys.readouterr().out
    assert list((harness.home / "busflow-outbox").glob("*.json")) == []
    assert f"Backup verify {DAY}: VERIFIED" in slack.texts()[-1]


def test_without_a_webhook_the_message_goes_to_the_log_and_the_outbox(harness, make_dump):
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 0 and verdict["failures"] == []
    assert verdict["alert"]["reason"] == "no webhook configured"
    assert f"Backup verify {DAY}: VERIFIED" in harness.last_stderr
    assert len(list((harness.home / "busflow-outbox").glob("*.json"))) == 1


def test_the_sensor_posts_for_runs_the_schedule_or_ui_launched(harness, make_dump, slack):
    harness.put(KEY, make_dump(orphans=300))
    with dg.DagsterInstance.get() as instance:
        result = (
            build_defs()
            .resolve_job_def(JOB_NAME)
            .execute_in_process(partition_key=DAY, instance=instance, raise_on_error=False)
        )
        assert result.success  # the F3 check failed, but it is not blocking: the run is green
        run = instance.get_run_by_id(result.run_id)
        event = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_SUCCESS)
        defs = build_defs()
        with dg.build_run_status_sensor_context(
            sensor_name="finish_verify_run",
            dagster_instance=instance,
            dagster_run=run,
            dagster_event=event,
            resources={"backup_store": defs.resources["backup_store"]},
        ) as context:
            finish_verify_run(context)
    [text] = slack.texts()
    assert "NOT VERIFIED" in text and "F3 ORPHAN_FK_SURGE" in text


def test_a_bot_token_posts_through_dagster_slack_with_the_same_classification(
    harness, make_dump, slack, monkeypatch
):
    monkeypatch.delenv("SLACK_OPS_WEBHOOK")
    token = "xoxb-" + "7" * 24
    monkeypatch.setenv("SLACK_BOT_TOKEN", token)
    monkeypatch.setenv("SLACK_OPS_CHANNEL", "#ops")
    monkeypatch.setenv("SLACK_API_URL", slack.url.split("/services")[0] + "/api/")
    slack.replies = [{"ok": True}, {"ok": False, "error": "invalid_auth"}]
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 0 and verdict["alert"]["delivered"] is True
    assert slack.posts[0]["path"] == "/api/chat.postMessage"
    assert slack.posts[0]["json"]["channel"] == "#ops"
    assert f"Backup verify {DAY}: VERIFIED" in slack.posts[0]["json"]["text"]

    code, verdict = harness.verify(DAY)  # the token was revoked meanwhile
    assert len(slack.posts) == 2  # not retried
    [f4] = verdict["failures"]
    assert (f4["code"], f4["details"]["cause"]) == ("F4", "webhook_rejected")
    assert "SLACK_BOT_TOKEN" in f4["next_step"]
    assert code == 0 and token not in json.dumps(verdict) and token not in harness.last_stderr


def test_the_failure_sensor_posts_for_a_run_that_failed_outside_the_checks(harness, slack):
    from busflow_verify.defs.finish import finish_failed_verify_run

    harness.put("pg_dump_20261119_0100.dump", b"yesterday only")  # no dump for the date
    with dg.DagsterInstance.get() as instance:
        result = (
            build_defs()
            .resolve_job_def(JOB_NAME)
            .execute_in_process(partition_key=DAY, instance=instance, raise_on_error=False)
        )
        assert not result.success
        event = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
        with dg.build_run_status_sensor_context(
            sensor_name="finish_failed_verify_run",
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
            dagster_event=event,
            resources={"backup_store": build_defs().resources["backup_store"]},
        ) as context:
            finish_failed_verify_run(context.for_run_failure())
    [text] = slack.texts()
    assert "NOT VERIFIED" in text and "*DUMP_MISSING* — severity P1" in text


UI = "https://dagster.busflow.example/"
RUNBOOK = "https://git.busflow.example/ops/runbooks/backup-verify.md"


def block_texts(blocks: list) -> str:
    texts = [b["text"]["text"] for b in blocks if "text" in b]
    texts += [e["text"] for b in blocks for e in b.get("elements", [])]
    return "\n".join(texts)


def test_block_kit_links_the_run_and_the_runbook_on_both_channels(
    harness, make_dump, slack, monkeypatch
):
    monkeypatch.setenv("BUSFLOW_UI_BASE_URL", UI)
    monkeypatch.setenv("BUSFLOW_RUNBOOK_URL", RUNBOOK)
    harness.put(KEY, make_dump(orphans=250))
    code, verdict = harness.verify(DAY)
    [posted] = [p["json"] for p in slack.posts]
    page = f"https://dagster.busflow.example/runs/{verdict['run_id']}"
    assert posted["text"].endswith(f"Run {verdict['run_id']}: {page}")  # the fallback text
    assert "*F3 ORPHAN_FK_SURGE* — severity P2" in posted["text"]
    blocks = posted["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": f"Backup verify {DAY}: NOT VERIFIED"},
    }
    shown = block_texts(blocks)
    assert "*F3 ORPHAN_FK_SURGE* — severity P2 — page @data-oncall + @security-oncall" in shown
    assert f"<{RUNBOOK}#f3--orphan_fk_surge|Runbook (F3 — ORPHAN_FK_SURGE)>" in shown
    assert f"<{page}|Run {verdict['run_id']} in the Dagster UI>" in shown
    assert "250 orphans, allowlist max_orphans 200" in shown

    monkeypatch.delenv("SLACK_OPS_WEBHOOK")  # the bot token's channel: chat.postMessage
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-" + "8" * 24)
    monkeypatch.setenv("SLACK_OPS_CHANNEL", "#ops")
    monkeypatch.setenv("SLACK_API_URL", slack.url.split("/services")[0] + "/api/")
    slack.replies = [{"ok": True}]
    code, verdict = harness.verify(DAY)
    posted = slack.posts[-1]
    assert posted["path"] == "/api/chat.postMessage"
    blocks = posted["json"]["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    assert blocks[0]["type"] == "header" and "NOT VERIFIED" in blocks[0]["text"]["text"]
    assert f"/runs/{verdict['run_id']}|Run" in block_texts(blocks)
    assert "NOT VERIFIED" in posted["json"]["text"]


def test_without_a_ui_base_url_the_blocks_have_no_links_and_the_text_is_as_before(
    harness, make_dump, slack
):
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    [posted] = [p["json"] for p in slack.posts]
    assert posted["text"].endswith(f"Run {verdict['run_id']}")
    shown = block_texts(posted["blocks"])
    assert "<" not in shown and f"Run {verdict['run_id']}" in shown
