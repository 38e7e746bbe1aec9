"""verified-latest: promoted on a pass, never on a fail, never backwards, never on a missing check."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType

from busflow_verify.core.store.pointer import POINTER_NAME, promotion_decision
from busflow_verify.core.verdict import Verdict
from busflow_verify.definitions import build_defs
from busflow_verify.defs.finish import finish_verify_run
from busflow_verify.defs.run_history import JOB_NAME

KEY = "pg_dump_20261120_0100.dump"


def pointer(harness, bucket_dir=None):
    path = (bucket_dir or harness.bucket_dir) / POINTER_NAME
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.e2e
def test_a_verified_dump_is_promoted_with_its_record(harness, make_dump, fallback_s3, monkeypatch):
    harness.put(KEY, make_dump())
    mirror = harness.mirror_to(fallback_s3, monkeypatch)
    code, verdict = harness.verify("2026-11-20", "--promote")
    assert code == 0 and verdict["promoted"] is True
    record = pointer(harness)
    assert (record["key"], record["partition"], record["run_id"]) == (
        KEY,
        "2026-11-20",
        verdict["run_id"],
    )
    assert record["size_bytes"] == verdict["dump"]["size_bytes"]
    assert record["row_counts"]["commerce.bookings"] == 1000
    assert pointer(harness, mirror) == record  # mirrored to the fallback


@pytest.mark.e2e
def test_a_failing_dump_is_not_promoted(harness, make_dump):
    harness.put(KEY, make_dump(orphans=500))
    code, verdict = harness.verify("2026-11-20", "--promote")
    assert code == 1 and verdict["promoted"] is False
    assert "not verified (F3 ORPHAN_FK_SURGE)" in verdict["promotion"]["reason"]
    assert pointer(harness) is None


@pytest.mark.e2e
def test_a_backfill_of_an_older_date_never_moves_it_back(harness, make_dump):
    harness.put(KEY, make_dump())
    harness.put("pg_dump_20261118_0100.dump", make_dump())
    assert harness.verify("2026-11-20", "--promote")[1]["promoted"] is True
    code, verdict = harness.verify("2026-11-18", "--promote")
    assert code == 0 and verdict["promoted"] is False
    assert "never moves backwards" in verdict["promotion"]["reason"]
    assert pointer(harness)["partition"] == "2026-11-20"


@pytest.mark.e2e
def test_without_promote_the_cli_leaves_the_pointer(harness, make_dump):
    harness.put(KEY, make_dump())
    code, verdict = harness.verify("2026-11-20")
    assert code == 0 and verdict["promoted"] is False and pointer(harness) is None


def test_a_check_that_did_not_run_is_not_a_pass():
    verdict = Verdict(verified=False, partition="2026-11-20", dump={"key": KEY})
    assert promotion_decision(verdict, None) == (
        False,
        "not verified (checks missing): the pointer stays where it is",
    )


@pytest.mark.e2e
def test_the_sensor_promotes_a_scheduled_run(harness, make_dump):
    harness.put(KEY, make_dump())
    defs = build_defs()
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(JOB_NAME).execute_in_process(
            partition_key="2026-11-20", instance=instance, tags={"dagster/schedule_name": "x"}
        )
        event = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_SUCCESS)
        with dg.build_run_status_sensor_context(
            sensor_name="finish_verify_run",
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
            dagster_event=event,
            resources={"backup_store": defs.resources["backup_store"]},
        ) as context:
            finish_verify_run(context)
    assert pointer(harness)["run_id"] == result.run_id
