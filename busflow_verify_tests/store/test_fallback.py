"""F5: the offsite primary down, the on-site MinIO mirror serving the dump; both down."""

from __future__ import annotations

import shutil

import pytest

from busflow_verify.core.postgres.cluster import free_port
from busflow_verify.demo.s3server import RcloneS3Server
from busflow_verify_tests.conftest import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.e2e

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"


def test_primary_stopped_fallback_serves_and_the_day_is_verified(
    harness, make_dump, fallback_s3, monkeypatch, tmp_path
):
    harness.put(KEY, make_dump())
    harness.mirror_to(fallback_s3, monkeypatch)
    primary = RcloneS3Server(tmp_path / "primary", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    primary.start()
    shutil.copytree(harness.bucket_dir, primary.bucket_dir(harness.bucket), dirs_exist_ok=True)
    monkeypatch.setenv("BACKUP_PRIMARY_ENDPOINT", primary.endpoint)
    primary.stop()  # the Hetzner outage

    code, verdict = harness.verify(DAY)
    assert code == 0, [f["summary"] for f in verdict["failures"]]
    assert verdict["verified"] is True
    assert verdict["dump"]["endpoint"] == "fallback"
    assert verdict["failures"] == []
    [notice] = verdict["notices"]
    assert (notice["code"], notice["name"], notice["severity"]) == (
        "F5",
        "OFFSITE_ENDPOINT_DOWN",
        "info",
    )
    assert "primary" in notice["summary"]
    states = {c["check"]: c["passed"] for c in verdict["checks"]}
    assert states["dump_object:offsite_endpoint_reachable"] is False  # WARN: informational
    assert verdict["row_counts"]["commerce.bookings"] == 1000


def test_both_endpoints_down_is_f5_p1_dump_inaccessible(harness, monkeypatch):
    monkeypatch.setenv("BACKUP_PRIMARY_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("BACKUP_FALLBACK_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    code, verdict = harness.verify(DAY)
    assert code == 1 and verdict["verified"] is False
    [failure] = verdict["failures"]
    assert (failure["code"], failure["severity"], failure["escalate_to"]) == (
        "F5",
        "P1",
        ["@infra-oncall"],
    )
    assert failure["summary"].startswith("dump inaccessible")
    assert "halt any pending cutover" in failure["summary"]
    assert [e["endpoint"] for e in failure["details"]["endpoints"]] == ["primary", "fallback"]


def test_a_missing_dump_on_a_reachable_primary_does_not_fall_back(
    harness, fallback_s3, monkeypatch
):
    (fallback_s3.bucket_dir(harness.bucket) / KEY).write_bytes(b"only on the mirror")
    fallback_s3.settle()
    monkeypatch.setenv("BACKUP_FALLBACK_ENDPOINT", fallback_s3.endpoint)
    harness.bucket_dir.mkdir(exist_ok=True)
    code, verdict = harness.verify(DAY)
    assert code == 1
    assert [f["name"] for f in verdict["failures"]] == ["DUMP_MISSING"]


def test_the_primary_outage_is_remembered_across_runs_and_needs_a_dpia_after_24h(
    harness, make_dump, fallback_s3, monkeypatch
):
    import datetime as dt

    import dagster as dg

    from busflow_verify.core.verdict import dpia_note

    harness.put(KEY, make_dump())
    harness.put("pg_dump_20261121_0100.dump", make_dump())
    harness.mirror_to(fallback_s3, monkeypatch)
    assert harness.verify(DAY)[0] == 0  # primary up: no outage
    monkeypatch.setenv("BACKUP_PRIMARY_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    first = harness.verify(DAY)[1]
    second = harness.verify("2026-11-21")[1]
    with dg.DagsterInstance.get() as instance:
        started = instance.get_run_record_by_id(first["run_id"]).create_timestamp
    since = dt.datetime.fromisoformat(second["primary_down_since"])
    assert since.replace(tzinfo=None) == started.replace(tzinfo=None)  # the first failing run
    assert dt.datetime.fromisoformat(first["primary_down_since"]) == since
    assert "DPIA" not in second["notices"][0]["summary"]  # not 24 h yet
    assert dpia_note(since, now=since + dt.timedelta(hours=23)) is None
    assert "DPIA note is required" in dpia_note(since, now=since + dt.timedelta(hours=25))
    # once past the window, the verdict and its notice say so
    from busflow_verify.core import verdict as verdicts

    monkeypatch.setattr(verdicts, "DPIA_AFTER", dt.timedelta(0))
    third = harness.verify("2026-11-21")[1]
    [notice] = third["notices"]
    assert "DPIA note is required" in notice["summary"]
    assert notice["details"]["dpia_note_required"] is True


def test_both_down_halts_cutover_until_a_verified_dump_is_promoted(
    harness, make_dump, monkeypatch, slack
):
    harness.put(KEY, make_dump())
    live_primary = harness.s3.endpoint
    monkeypatch.setenv("BACKUP_PRIMARY_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("BACKUP_FALLBACK_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    code, verdict = harness.verify(DAY)
    assert code == 1 and verdict["cutover_halt"]["reason"].startswith("dump inaccessible")
    assert "Cutover work is halted" in slack.texts()[-1]

    monkeypatch.setenv("BACKUP_PRIMARY_ENDPOINT", live_primary)  # Hetzner is back
    monkeypatch.delenv("BACKUP_FALLBACK_ENDPOINT")
    code, verdict = harness.verify(DAY)  # verified, but not promoted: the halt stands
    assert code == 0 and verdict["cutover_halt"] is not None
    code, verdict = harness.verify(DAY, "--promote")
    assert verdict["promoted"] is True and verdict["cutover_halt"] is None
