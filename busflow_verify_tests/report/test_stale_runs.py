"""Runs found STARTED whose process is gone: marked failed on the next run, told to #ops once
(issue 16, point 5). On a real SQLite instance in a temp DAGSTER_HOME; no S3 or Postgres."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import time
import uuid

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.storage.dagster_run import DagsterRun

from busflow_verify.defs.finish import LAUNCHED_BY_TAG
from busflow_verify.defs.run_history import JOB_NAME, verdict_for_run
from busflow_verify.defs.stale_runs import (
    RUN_HOST_TAG,
    RUN_PID_START_TAG,
    RUN_PID_TAG,
    fail_stale_runs,
    report_stale_runs,
    run_tags_for_this_process,
)

DAY = "2026-11-20"


@pytest.fixture
def instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    config = tmp_path / "config"
    config.mkdir()
    (config / "verify.yaml").write_text(
        "alerts: {attempts: 2, backoff_seconds: 0.01, timeout_seconds: 1}\n"
    )
    (config / "soft-fk-allowlist.yaml").write_text("soft_fks: []\n")
    monkeypatch.setenv("BUSFLOW_VERIFY_CONFIG_DIR", str(config))
    for name in ("SLACK_OPS_WEBHOOK", "SLACK_BOT_TOKEN", "SLACK_OPS_CHANNEL", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def dead_pid() -> int:
    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    return proc.pid


def add_run(instance, tags, status=dg.DagsterRunStatus.STARTED, cli=True) -> DagsterRun:
    tags = {"dagster/partition": DAY, **({LAUNCHED_BY_TAG: "cli"} if cli else {}), **tags}
    return instance.add_run(
        DagsterRun(job_name=JOB_NAME, run_id=str(uuid.uuid4()), status=status, tags=tags)
    )


def start_step(instance, run: DagsterRun, step: str) -> None:
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=DagsterEventType.STEP_START.value,
            job_name=run.job_name,
            step_key=step,
            message=f"Started execution of step {step}.",
        ),
        run_id=run.run_id,
    )


def tags_of(pid: int, **extra) -> dict[str, str]:
    return {RUN_PID_TAG: str(pid), RUN_HOST_TAG: socket.gethostname(), **extra}


def test_a_run_whose_process_died_is_failed_once(instance):
    pid = dead_pid()
    run = add_run(instance, tags_of(pid))
    start_step(instance, run, "restored_db")
    logged = []
    assert fail_stale_runs(instance, logged.append) == [run.run_id]
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    (failure_event,) = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    message = failure_event.dagster_event.message
    assert f"the verify process died (pid {pid} on host {socket.gethostname()})" in message
    assert "during step restored_db" in message
    verdict = verdict_for_run(instance, run.run_id)
    assert not verdict.verified
    (failure,) = verdict.failures
    assert failure["code"] == "VERIFY_JOB_ERROR"
    assert "the verify process died" in failure["summary"]
    assert failure["details"]["step"] == "restored_db"
    assert run.run_id in logged[0]
    assert fail_stale_runs(instance, logged.append) == []  # failed now: not found again


def test_a_run_whose_process_lives_is_left_alone(instance):
    mine = add_run(instance, run_tags_for_this_process())
    assert set(mine.tags) >= {RUN_PID_TAG, RUN_HOST_TAG, RUN_PID_START_TAG}
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        other = add_run(instance, tags_of(sleeper.pid))
        assert fail_stale_runs(instance, print) == []
    finally:
        sleeper.kill()
        sleeper.wait()
    assert fail_stale_runs(instance, print) == [other.run_id]  # now it is gone
    assert instance.get_run_by_id(mine.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_reused_pid_does_not_keep_a_dead_run_alive(instance):
    """The pid names a live process, but not the one that started the run (its start time)."""
    start = int(run_tags_for_this_process()[RUN_PID_START_TAG])
    run = add_run(instance, tags_of(os.getpid(), **{RUN_PID_START_TAG: str(start - 1)}))
    assert fail_stale_runs(instance, print) == [run.run_id]


def test_runs_this_host_cannot_judge_are_left_alone(instance):
    elsewhere = add_run(instance, {RUN_PID_TAG: str(dead_pid()), RUN_HOST_TAG: "another-host"})
    by_daemon = add_run(instance, tags_of(dead_pid()), cli=False)  # Dagster's run monitoring's
    finished = add_run(instance, tags_of(dead_pid()), status=dg.DagsterRunStatus.SUCCESS)
    assert fail_stale_runs(instance, print) == []
    for run in (elsewhere, by_daemon, finished):
        assert instance.get_run_by_id(run.run_id).status == run.status


def test_a_run_without_a_pid_tag_is_stale_only_when_old(instance):
    run = add_run(instance, {}, status=dg.DagsterRunStatus.STARTING)
    assert fail_stale_runs(instance, print) == []  # young: it may be running
    assert fail_stale_runs(instance, print, now=time.time() + 5 * 3600) == []
    assert fail_stale_runs(instance, print, now=time.time() + 7 * 3600) == [run.run_id]
    (failure,) = verdict_for_run(instance, run.run_id).failures
    assert failure["code"] == "VERIFY_JOB_ERROR" and "presumed dead" in failure["summary"]
    young = add_run(instance, {})
    assert fail_stale_runs(instance, print, max_age=dt.timedelta(0)) == [young.run_id]


def test_report_posts_each_dead_run_to_ops_once(instance, slack):
    dead = [add_run(instance, tags_of(dead_pid())) for _ in range(2)]
    add_run(instance, run_tags_for_this_process())  # this run: alive
    assert sorted(report_stale_runs(instance, print)) == sorted(r.run_id for r in dead)
    assert len(slack.posts) == 2
    for text in slack.texts():
        assert "NOT VERIFIED" in text and "VERIFY_JOB_ERROR" in text
        assert "the verify process died" in text
    assert report_stale_runs(instance, print) == []
    assert len(slack.posts) == 2


def test_with_a_signing_key_a_dead_runs_evidence_is_kept_pending(instance, monkeypatch):
    from busflow_verify.defs.evidence import PendingEvidence

    monkeypatch.setenv("BUSFLOW_EVIDENCE_SIGNING_KEY", "/nonexistent/key.pem")
    dead = add_run(instance, tags_of(dead_pid()))
    assert report_stale_runs(instance, print) == [dead.run_id]
    assert PendingEvidence(instance.root_directory).pending() == [
        {
            "partition": DAY,
            "run_id": dead.run_id,
            "reason": "the run's process died; its evidence is pending",
        }
    ]
