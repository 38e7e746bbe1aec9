"""`busflow-verify status` and `history` (issue 17, point 5) on an instance with several runs:
SQLite through the CLI (the pointer read from a real `rclone serve s3`, the outbox, the cutover
halt), and the history on a PostgreSQL-backed instance (dagster-postgres on the session's real
Postgres)."""

from __future__ import annotations

import json
import os
import time
import uuid

import dagster as dg
import psycopg
import pytest

from busflow_verify import cli
from busflow_verify.core.report.cutover import CutoverHalt
from busflow_verify.core.store.pointer import POINTER_NAME
from busflow_verify.defs.alerts import OUTBOX_DIR
from busflow_verify.defs.status import history
from busflow_verify_tests.conftest import ACCESS_KEY, SECRET_KEY
from busflow_verify_tests.report.test_deadman import HOUR, day, record_run

UTC_TABLES = ("commerce.bookings", "communications.messages", "operations.service_legs")


def several_runs(instance) -> dict[str, str]:
    """Four dates: three verified (growing), one not (ROW_COUNT_DRIFT), one re-run (its latest
    run decides), and a date outside a 3-day window."""
    t0 = time.time()
    runs = {
        day(-5): record_run(instance, day(-5), ended=t0 - 120 * HOUR, rows=900),
        day(-3): record_run(
            instance, day(-3), ended=t0 - 72 * HOUR, rows=1000, dump_bytes=2_000_000
        ),
        day(-2): record_run(
            instance, day(-2), ended=t0 - 48 * HOUR, rows=1100, previous_rows=1000, orphans=7
        ),
    }
    record_run(instance, day(-1), ended=t0 - 30 * HOUR, verified=False, rows=600)
    runs[day(-1)] = record_run(
        instance, day(-1), ended=t0 - 2 * HOUR, verified=False, rows=600, previous_rows=1100
    )
    return {p: r.run_id for p, r in runs.items()}


@pytest.fixture
def home(tmp_path, monkeypatch, s3):
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = tmp_path / "config"
    config.mkdir()
    (config / "verify.yaml").write_text(
        "alerts: {attempts: 1, backoff_seconds: 0.01, timeout_seconds: 1}\n"
    )
    (config / "soft-fk-allowlist.yaml").write_text("soft_fks: []\n")
    bucket = "status-" + uuid.uuid4().hex[:8]
    for name, value in {
        "DAGSTER_HOME": str(home),
        "BUSFLOW_VERIFY_CONFIG_DIR": str(config),
        "BACKUP_PRIMARY_ENDPOINT": s3.endpoint,
        "BACKUP_BUCKET": bucket,
        "BACKUP_ACCESS_KEY_ID": ACCESS_KEY,
        "BACKUP_SECRET_ACCESS_KEY": SECRET_KEY,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("BACKUP_PREFIX", "BACKUP_FALLBACK_ENDPOINT", "SLACK_OPS_WEBHOOK"):
        monkeypatch.delenv(name, raising=False)
    for name in ("SLACK_BOT_TOKEN", "SLACK_OPS_CHANNEL", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_history_one_line_per_date_text_and_json(home, capsys):
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        ids = several_runs(instance)
    capsys.readouterr()
    assert cli.main(["history", "--days", "4"]) == 0
    *lines, note = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [day(-1), day(-2), day(-3)]  # newest first
    assert note == (
        f"and 1 older date(s) have one (the newest {day(-5)}, the oldest {day(-5)}): "
        "--days 6 shows them"
    )
    assert "NOT VERIFIED" in lines[0] and "failures ROW_COUNT_DRIFT" in lines[0]
    assert "commerce.bookings 600 (-45.5%)" in lines[0]
    assert lines[1].split()[1] == "VERIFIED" and "orphans 7" in lines[1]
    assert "commerce.bookings 1,100 (+10.0%)" in lines[1] and "failures -" in lines[1]
    assert "dump 2.0 MB" in lines[2] and "restore 12.5 s" in lines[2]

    assert cli.main(["history", "--days", "10", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["partition"] for r in rows] == [day(-1), day(-2), day(-3), day(-5)]
    by_day = {r["partition"]: r for r in rows}
    assert by_day[day(-1)]["run_id"] == ids[day(-1)]  # the re-run, not the first run
    assert by_day[day(-1)]["verified"] is False and by_day[day(-1)]["failures"] == [
        "ROW_COUNT_DRIFT"
    ]
    assert by_day[day(-3)]["dump_bytes"] == 2_000_000
    assert [t["table"] for t in by_day[day(-2)]["tables"]] == list(UTC_TABLES)
    assert by_day[day(-2)]["tables"][0] == {
        "table": "commerce.bookings",
        "rows": 1100,
        "change": 0.1,
    }
    assert cli.main(["history", "--days", "0"]) == cli.EXIT_USAGE

    # right after a backfill of older dates: the window is empty, and says which --days to use
    assert cli.main(["history", "--days", "1"]) == 0
    assert capsys.readouterr().out == (
        "no completed verify run in the last 1 day(s); 4 older date(s) have one (the newest "
        f"{day(-1)}, the oldest {day(-5)}): --days 6 shows them\n"
    )


def test_status_names_pointer_last_run_next_run_f5_outbox(home, capsys, slack, s3):
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        several_runs(instance)
    pointer = {
        "key": f"pg_dump_{day(-2).replace('-', '')}_0100.dump",
        "partition": day(-2),
        "size_bytes": 1_000_000,
        "verified_at": "2026-01-01T03:10:00+00:00",
        "run_id": "r",
    }
    (s3.bucket_dir(os.environ["BACKUP_BUCKET"]) / POINTER_NAME).write_text(json.dumps(pointer))
    CutoverHalt(home).set("both endpoints down", None)
    (home / OUTBOX_DIR).mkdir()
    (home / OUTBOX_DIR / "20260101T000000-abcd.json").write_text(
        json.dumps(
            {"partition": day(-4), "run_id": None, "text": "x", "reason": "slack_unavailable"}
        )
    )
    capsys.readouterr()
    assert cli.main(["status", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["pointer"]["partition"] == day(-2) and report["pointer"]["key"] == pointer["key"]
    assert report["last_run"]["partition"] == day(-1)
    assert (
        report["last_run"]["failures"] == ["ROW_COUNT_DRIFT"] and not report["last_run"]["verified"]
    )
    assert report["next_run"].endswith("T03:00+00:00")
    assert "backup_verify_daily_0300_utc" in report["schedule"]
    assert report["f5"]["cutover_halt"]["reason"] == "both endpoints down"
    assert [m["partition"] for m in report["outbox"]] == [day(-4)]
    # the newest verified date (day -2) ended 48 h ago: stale, and status told #ops once
    assert report["deadman"]["stale"] and report["deadman"]["alerting"]
    assert report["deadman"]["last_verified"] == day(-2)
    assert len(slack.posts) == 1 and "VERIFICATION_STALE" in slack.texts()[0]
    for secret in (SECRET_KEY, slack.SECRET_PATH):
        assert secret not in out

    assert cli.main(["status"]) == 0
    text = capsys.readouterr().out
    assert f"pointer: {day(-2)}  {pointer['key']}" in text
    assert f"last run: {day(-1)}  SUCCESS  failures ROW_COUNT_DRIFT" in text
    assert "cutover HALTED since" in text and "undelivered #ops messages: 1" in text
    assert "dead-man's switch: STALE" in text and "#ops told" in text
    assert len(slack.posts) == 1  # the second status did not post again
    assert SECRET_KEY not in text


def test_status_without_the_store_says_so(home, capsys, monkeypatch):
    monkeypatch.delenv("BACKUP_BUCKET")
    with dg.instance_for_test(temp_dir=str(home)):
        pass
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "pointer: unavailable (BACKUP_BUCKET not set)" in out and "last run: none" in out


def test_history_on_postgres_run_storage(home, source_pg):
    """The same history from an instance whose run and event storage are PostgreSQL."""
    info = source_pg.conninfo()
    db = "dagster_" + uuid.uuid4().hex[:8]
    with psycopg.connect(**info.kwargs(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    url = f"postgresql+psycopg2://{info.user}@/{db}?host={info.host}&port={info.port}"
    storage = {"postgres": {"postgres_url": url}}
    with dg.instance_for_test(temp_dir=str(home), overrides={"storage": storage}) as instance:
        assert "Postgres" in type(instance.run_storage).__name__
        ids = several_runs(instance)
        rows = history(instance, days=4)
    assert [r["partition"] for r in rows] == [day(-1), day(-2), day(-3)]
    assert rows[0]["run_id"] == ids[day(-1)] and rows[0]["failures"] == ["ROW_COUNT_DRIFT"]
    assert rows[1]["verified"] and rows[1]["orphans"] == 7


def test_status_openmetrics_parses_and_carries_the_series(home, capsys, slack):
    """`status --openmetrics`, read by prometheus_client's OpenMetrics parser."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        several_runs(instance)
    capsys.readouterr()
    assert cli.main(["status", "--openmetrics"]) == 0
    text = capsys.readouterr().out
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(name.startswith("busflow_verify_") for name in families)
    assert not any(name.endswith("_total") for name in families)

    def one(name):
        [sample] = families[name].samples
        return sample

    verified = one("busflow_verify_last_verified_timestamp_seconds")
    assert families["busflow_verify_last_verified_timestamp_seconds"].unit == "seconds"
    assert verified.labels == {"partition": day(-2)}
    assert 47 * HOUR < one("busflow_verify_last_verified_age_seconds").value < 49 * HOUR
    assert one("busflow_verify_deadman_stale").value == 1
    assert one("busflow_verify_deadman_max_age_seconds").value == 26 * HOUR
    info = one("busflow_verify_last_run")  # an info family: its sample is ..._info
    assert info.name == "busflow_verify_last_run_info" and info.labels["partition"] == day(-1)
    assert one("busflow_verify_last_run_verified").value == 0
    failure = one("busflow_verify_last_run_failure")
    assert failure.labels == {
        "code": "ROW_COUNT_DRIFT",
        "name": "ROW_COUNT_DRIFT",
        "severity": "P2",
    }
    assert one("busflow_verify_last_run_restore_seconds").value == 12.5
    assert one("busflow_verify_last_run_dump_bytes").value == 1_000_000
    assert families["busflow_verify_last_run_dump_bytes"].unit == "bytes"
    orphans = one("busflow_verify_last_run_orphans")
    assert orphans.labels == {"child": "communications.messages.booking_id"}
    assert orphans.value == 0
    assert one("busflow_verify_outbox_messages").value == 0
    assert one("busflow_verify_evidence_signing").value == 0
    assert one("busflow_verify_cutover_halted").value == 0
