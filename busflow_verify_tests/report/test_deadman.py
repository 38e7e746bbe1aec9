"""The dead-man's switch (issue 17, point 3): one P1 when nothing verified for too long, quiet on
the next ticks, one recovery post. On a real SQLite instance with runs recorded as the job
records them (check evaluations, materializations, run end events), #ops on a real HTTP
endpoint (the `slack` fixture); no S3 or Postgres."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.storage.dagster_run import DagsterRun

from busflow_verify import cli
from busflow_verify.core import config as cfg
from busflow_verify.core.failures import Finding
from busflow_verify.core.report.deadman import DeadmanState, decide
from busflow_verify.defs.alerts import OUTBOX_DIR
from busflow_verify.defs.checks import EXPECTED_CHECK_KEYS
from busflow_verify.defs.deadman import evaluate, observe, verification_deadman
from busflow_verify.defs.findings import FINDINGS_KEY
from busflow_verify.defs.run_history import JOB_NAME
from busflow_verify_tests.report import test_stale_runs

UTC = dt.timezone.utc
HOUR = 3600.0
TABLES = ["commerce.bookings", "communications.messages", "operations.service_legs"]


def _event(run: DagsterRun, kind: DagsterEventType, data=None, message="") -> DagsterEvent:
    return DagsterEvent(
        event_type_value=kind.value,
        job_name=run.job_name,
        event_specific_data=data,
        message=message,
    )


def record_run(
    instance,
    partition: str,
    *,
    ended: float | None,
    verified: bool = True,
    status: dg.DagsterRunStatus = dg.DagsterRunStatus.SUCCESS,
    dump_bytes: int = 1_000_000,
    restore_seconds: float = 12.5,
    rows: int = 3000,
    previous_rows: int | None = None,
    orphans: int = 0,
) -> DagsterRun:
    """A verify run as the job records it: its materializations' metadata, every expected check
    (all passed, or the row-count check failed with a ROW_COUNT_DRIFT), and its end at `ended`
    (epoch seconds); `ended=None` leaves it in `status` (queued, started)."""
    initial = dg.DagsterRunStatus.NOT_STARTED if ended is not None else status
    run = instance.add_run(
        DagsterRun(
            job_name=JOB_NAME,
            run_id=str(uuid.uuid4()),
            status=initial,
            tags={"dagster/partition": partition},
        )
    )
    if ended is None:
        return run
    ratio = (rows - previous_rows) / previous_rows if previous_rows else None
    metadata = {
        "dump_object": {
            "dump": {
                "key": f"pg_dump_{partition.replace('-', '')}_0100.dump",
                "size_bytes": dump_bytes,
            }
        },
        "restored_db": {"restore": {"restore_seconds": restore_seconds}},
        "row_count_report": {
            "row_counts": {t: rows for t in TABLES},
            "deltas": [
                {"table": t, "previous": previous_rows, "current": rows, "ratio": ratio}
                for t in TABLES
            ],
        },
        "orphan_report": {
            "orphans": [{"child": "communications.messages.booking_id", "orphans": orphans}]
        },
    }
    for asset, values in metadata.items():
        materialization = dg.AssetMaterialization(
            asset,
            partition=partition,
            metadata={k: dg.MetadataValue.json(v) for k, v in values.items()},
        )
        instance.report_dagster_event(
            _event(
                run,
                DagsterEventType.ASSET_MATERIALIZATION,
                StepMaterializationData(materialization),
            ),
            run.run_id,
            timestamp=ended - 1,
        )
    drift = Finding("ROW_COUNT_DRIFT", "commerce.bookings lost 40% of its rows").to_dict()
    for key in EXPECTED_CHECK_KEYS:
        failing = not verified and key.name == "row_counts_within_tolerance"
        evaluation = dg.AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=not failing,
            metadata={FINDINGS_KEY: dg.MetadataValue.json([drift] if failing else [])},
            partition=partition,
        )
        instance.report_dagster_event(
            _event(run, DagsterEventType.ASSET_CHECK_EVALUATION, evaluation),
            run.run_id,
            timestamp=ended - 1,
        )
    instance.report_dagster_event(
        _event(run, DagsterEventType.RUN_START), run.run_id, timestamp=ended - 2
    )
    end = (
        DagsterEventType.RUN_SUCCESS
        if status == dg.DagsterRunStatus.SUCCESS
        else DagsterEventType.RUN_FAILURE
    )
    instance.report_dagster_event(_event(run, end), run.run_id, timestamp=ended)
    return instance.get_run_by_id(run.run_id)


# a real SQLite instance in a temp DAGSTER_HOME, fast alerts, no webhook unless `slack` is used
instance = test_stale_runs.instance


def day(offset: int) -> str:
    return (dt.date.today() + dt.timedelta(days=offset)).isoformat()


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


def test_the_switch_fires_once_stays_quiet_and_clears_once(instance, slack):
    t0 = time.time()
    record_run(instance, day(-2), ended=t0 - 30 * HOUR)  # verified, 30 h ago
    record_run(instance, day(-1), ended=t0 - 6 * HOUR, verified=False)  # a failed check
    assert observe(instance).last_verified_partition == day(-2)

    result = verification_deadman(dg.build_sensor_context(instance=instance))  # the real sensor
    assert "STALE" in result.skip_message and "posted stale" in result.skip_message
    assert len(slack.posts) == 1
    (text,) = slack.texts()
    assert "VERIFICATION_STALE" in text and "severity P1" in text and "@infra-oncall" in text
    assert f"the last verified dump is of {day(-2)}" in text
    assert f"the last run (partition {day(-1)}" in text and "failed: ROW_COUNT_DRIFT" in text
    assert "limit 26.0 h" in text
    assert slack.SECRET_PATH not in text

    for later in (5 * 60, HOUR, 20 * HOUR):  # the next ticks, sensor and CLI alike: quiet
        decision = evaluate(instance, print, now=at(t0 + later))
        assert decision.stale and decision.message is None
    assert (
        "posted"
        not in verification_deadman(dg.build_sensor_context(instance=instance)).skip_message
    )
    assert len(slack.posts) == 1

    record_run(instance, day(0), ended=t0 + 21 * HOUR)  # verification recovers
    decision = evaluate(instance, print, now=at(t0 + 21 * HOUR + 60))
    assert decision.kind == "recovered" and not decision.stale
    assert len(slack.posts) == 2
    assert "RECOVERED" in slack.texts()[1] and day(0) in slack.texts()[1]
    for later in (22, 23, 40):  # fresh again, and quiet
        assert evaluate(instance, print, now=at(t0 + later * HOUR)).message is None
    assert len(slack.posts) == 2
    assert DeadmanState(instance.root_directory).get()["alerting"] is False


def test_never_started_and_still_running_are_named(instance, slack):
    t0 = time.time()
    record_run(instance, day(-2), ended=t0 - 40 * HOUR)
    record_run(instance, day(-1), ended=None, status=dg.DagsterRunStatus.NOT_STARTED)
    decision = evaluate(instance, print, now=at(t0 + 60))
    assert decision.kind == "stale"
    assert "never started: NOT_STARTED" in decision.finding["summary"]
    assert decision.finding["details"]["last_run_status"] == "NOT_STARTED"

    record_run(instance, day(0), ended=None, status=dg.DagsterRunStatus.STARTED)
    _, decision = decide({}, observe(instance), at(t0 + 3 * HOUR), dt.timedelta(hours=26))
    assert f"the last run (partition {day(0)}" in decision.finding["summary"]
    assert "is still running after 3.0 h" in decision.finding["summary"]
    assert len(slack.posts) == 1  # decide() alone posts nothing


def test_no_run_at_all_since_the_last_verified_one_says_daemon_down(instance, slack):
    t0 = time.time()
    record_run(instance, day(-3), ended=t0 - 50 * HOUR)
    decision = evaluate(instance, print, now=at(t0))
    assert "no run of backup_verify_job since then" in decision.finding["summary"]
    assert "daemon down" in decision.finding["summary"]
    assert len(slack.posts) == 1


def test_undelivered_goes_to_the_outbox_and_is_still_told_once(instance, slack, capsys):
    t0 = time.time()
    record_run(instance, day(-2), ended=t0 - 30 * HOUR)
    slack.replies = [500, 500]
    decision = evaluate(instance, print, now=at(t0))
    assert decision.kind == "stale"
    pending = sorted((Path(instance.root_directory) / OUTBOX_DIR).glob("*.json"))
    assert len(pending) == 1 and "VERIFICATION_STALE" in pending[0].read_text()
    assert evaluate(instance, print, now=at(t0 + 600)).message is None
    assert len(slack.posts) == 2  # the two attempts of the one message, nothing more
    assert cli.main(["alerts", "repost"]) == 0
    assert "1 of 1 pending message(s) delivered" in capsys.readouterr().out


def test_no_run_at_all_is_not_judged_and_a_fresh_day_is_quiet(instance, slack):
    assert evaluate(instance, print).age is None
    record_run(instance, day(0), ended=time.time() - HOUR)
    decision = evaluate(instance, print)
    assert not decision.stale and decision.message is None
    assert slack.posts == []


def test_the_age_is_a_validated_key(tmp_path):
    (tmp_path / "verify.yaml").write_text("deadman: {max_age_hours: 30}\n")
    assert cfg.load_verify_config(tmp_path).deadman.max_age_hours == 30
    (tmp_path / "verify.yaml").write_text("deadman: {max_age_hour: 30}\n")
    with pytest.raises(cfg.ConfigError, match="deadman.max_age_hour.*unknown key"):
        cfg.load_verify_config(tmp_path)
    (tmp_path / "verify.yaml").write_text("deadman: {max_age_hours: -1}\n")
    with pytest.raises(cfg.ConfigError, match="deadman.max_age_hours"):
        cfg.load_verify_config(tmp_path)
