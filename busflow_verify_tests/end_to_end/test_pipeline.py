"""The five stages end to end: real S3 server, real Postgres, the real Dagster job via the CLI."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from busflow_verify.defs.run_history import JOB_NAME
from busflow_verify_tests.conftest import expected_counts

pytestmark = pytest.mark.e2e

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"


def failure_names(verdict: dict) -> list[str]:
    return [f["name"] for f in verdict["failures"]]


def check_states(verdict: dict) -> dict:
    return {c["check"]: c["passed"] for c in verdict["checks"]}


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_happy_path_verifies_newest_dump_of_the_day(harness, make_dump, fmt):
    harness.put("pg_dump_20261120_0030.dump", b"an older dump of the same day, never read")
    harness.put("pg_dump_20261120_0100.dump", make_dump(fmt=fmt))
    harness.put("pg_dump_20261121_0100.dump", b"the next day, not this partition")
    code, verdict = harness.verify(DAY)
    assert code == 0, verdict
    assert verdict["verified"] is True
    assert verdict["partition"] == DAY
    assert verdict["dump"]["key"] == KEY
    assert verdict["dump"]["endpoint"] == "primary"
    assert verdict["dump"]["size_bytes"] == (harness.bucket_dir / KEY).stat().st_size
    assert verdict["failures"] == []
    assert verdict["row_counts"] == expected_counts()
    [orphans] = verdict["orphans"]
    assert (
        orphans.items()
        >= {
            "child": "communications.messages.booking_id",
            "parent": "commerce.bookings.id",
            "orphans": 7,
            "max_orphans": 200,
            "passed": True,
            "error": None,
        }.items()
    )
    assert set(check_states(verdict).values()) == {True}
    sections = ["pre-data", "data", "post-data"] if fmt == "custom" else ["plain"]
    assert [s["section"] for s in verdict["restore"]["sections"]] == sections
    assert verdict["restore"]["format"] == fmt
    assert verdict["row_count_baseline"] is None


def test_run_is_recorded_in_dagster_home_with_partitioned_checks(harness, make_dump):
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 0
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(verdict["run_id"])
        assert run.job_name == JOB_NAME
        assert run.tags["dagster/partition"] == DAY
        for asset in (
            "dump_object",
            "size_check",
            "restored_db",
            "row_count_report",
            "orphan_report",
        ):
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event.dagster_event.partition == DAY, asset
        records = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("orphan_report"), "soft_fk_orphans_within_allowlist"),
            limit=5,
        )
        assert len(records) == 1
        assert records[0].event.dagster_event.event_specific_data.partition == DAY


def test_missing_dump_names_bucket_prefix_and_date(harness, monkeypatch):
    monkeypatch.setenv("BACKUP_PREFIX", "nightly/")
    harness.put("nightly/pg_dump_20261119_0100.dump", b"yesterday")
    code, verdict = harness.verify(DAY)
    assert code == 1
    assert verdict["verified"] is False
    [failure] = verdict["failures"]
    assert failure["code"] == failure["name"] == "DUMP_MISSING"
    assert failure["details"] == {
        "bucket": harness.bucket,
        "prefix": "nightly/",
        "date": DAY,
        "endpoint": "primary",
    }
    assert harness.bucket in failure["summary"] and "nightly/" in failure["summary"]
    assert DAY in failure["summary"]
    assert failure["severity"] == "P1"


def test_size_shrunk_still_restores_and_counts_but_does_not_verify(harness, make_dump):
    harness.write_config(min_bytes=10_000_000_000)  # the runbook's 10 GB floor
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = verdict["failures"]
    assert (failure["code"], failure["name"]) == ("F1", "SIZE_SHRUNK")
    assert failure["severity"] == "P2" and failure["escalate_to"] == ["@data-oncall"]
    assert failure["details"]["min_bytes"] == 10_000_000_000
    # non-blocking: the evidence for F1 step 1 was still gathered
    assert verdict["row_counts"] == expected_counts()
    assert check_states(verdict)["size_check:size_guard"] is False
    assert check_states(verdict)["orphan_report:soft_fk_orphans_within_allowlist"] is True


def test_size_exceeded_against_trailing_median(harness, make_dump):
    dump = harness.put(KEY, make_dump())
    size = dump.stat().st_size
    small = size // 3  # the dump is 3x the median of the previous days
    for day, factor in zip(range(13, 20), (1.0, 1.0, 0.9, 1.1, 1.0, 1.0, 1.0)):
        harness.put_sized(f"pg_dump_202611{day}_0100.dump", int(small * factor))
    harness.put_sized("pg_dump_20261112_0100.dump", 10)  # outside the 7-day window
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = verdict["failures"]
    assert failure["name"] == "SIZE_EXCEEDED"
    assert failure["details"]["median_bytes"] == small
    assert failure["details"]["history_days"] == 7
    assert abs(failure["details"]["ratio"] - size / small) < 1e-9
    assert verdict["size_guard"]["history"]["2026-11-13"]["size_bytes"] == small


def test_a_random_object_is_an_f2_and_nothing_downstream_runs(harness):
    harness.put(KEY, os.urandom(50_000))
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = verdict["failures"]
    assert (failure["code"], failure["name"]) == ("F2", "RESTORE_FAILED")
    assert failure["details"]["cause"] == "not_a_dump"
    assert KEY in failure["summary"]
    states = check_states(verdict)
    assert states["restored_db:restore_succeeded"] is False
    assert states["row_count_report:row_counts_within_tolerance"] is None
    assert states["orphan_report:soft_fk_orphans_within_allowlist"] is None
    assert verdict["row_counts"] == {}


def test_an_html_error_page_says_check_the_credentials(harness):
    harness.put(KEY, b"<!DOCTYPE html><html><body><h1>403 Forbidden</h1></body></html>" * 50)
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = verdict["failures"]
    assert failure["details"]["cause"] == "html_error_page"
    assert "credential" in failure["summary"]


def test_orphans_under_tolerance_pass_with_exact_count(harness, make_dump):
    harness.put(KEY, make_dump(orphans=200))
    code, verdict = harness.verify(DAY)
    assert code == 0, verdict
    assert verdict["orphans"][0]["orphans"] == 200
    assert verdict["orphans"][0]["passed"] is True


def test_orphan_surge_over_tolerance_is_f3_with_exact_count(harness, make_dump):
    harness.put(KEY, make_dump(orphans=201))
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = verdict["failures"]
    assert (failure["code"], failure["name"], failure["severity"]) == (
        "F3",
        "ORPHAN_FK_SURGE",
        "P2",
    )
    assert failure["escalate_to"] == ["@data-oncall", "@security-oncall"]
    assert failure["details"]["surges"][0]["orphans"] == 201
    assert "201 orphans" in failure["summary"]
    assert (
        verdict["orphans"][0].items()
        >= {
            "child": "communications.messages.booking_id",
            "parent": "commerce.bookings.id",
            "orphans": 201,
            "max_orphans": 200,
            "passed": False,
            "error": None,
        }.items()
    )


def test_allowlist_naming_a_missing_column_fails_the_sweep(harness, make_dump):
    harness.write_config(
        allowlist={
            "soft_fks": [
                {
                    "child": "operations.service_legs.booking_ref",
                    "parent": "commerce.bookings.id",
                    "max_orphans": 0,
                }
            ]
        }
    )
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = verdict["failures"]
    assert failure["name"] == "ORPHAN_FK_SURGE"
    assert "operations.service_legs.booking_ref" in failure["summary"]
    assert "booking_ref" in verdict["orphans"][0]["error"]


def test_row_count_drift_against_the_last_verified_dump(harness, make_dump):
    harness.put("pg_dump_20261118_0100.dump", make_dump(messages=3000))
    harness.put("pg_dump_20261119_0100.dump", make_dump(messages=3000, orphans=500))  # fails F3
    harness.put(KEY, make_dump(messages=2000, legs=1600))
    assert harness.verify("2026-11-18")[0] == 0
    assert harness.verify("2026-11-19")[0] == 1  # not verified: cannot be the baseline
    code, verdict = harness.verify(DAY)
    assert code == 1
    assert verdict["row_count_baseline"] == "2026-11-18"
    [failure] = verdict["failures"]
    assert (failure["code"], failure["name"]) == ("ROW_COUNT_DRIFT", "ROW_COUNT_DRIFT")
    [drifted] = failure["details"]["tables"]
    assert drifted["table"] == "communications.messages"
    assert (drifted["previous"], drifted["current"], drifted["status"]) == (3012, 2012, "dropped")
    deltas = {d["table"]: d for d in verdict["row_count_deltas"]}
    assert deltas["operations.service_legs"]["delta"] == 100  # +6.7%: within +50%
    assert deltas["operations.service_legs"]["status"] == "ok"


def test_row_counts_within_tolerance_pass_against_previous(harness, make_dump):
    harness.put("pg_dump_20261119_0100.dump", make_dump(messages=3000))
    harness.put(KEY, make_dump(messages=3100))
    assert harness.verify("2026-11-19")[0] == 0
    code, verdict = harness.verify(DAY)
    assert code == 0, verdict["failures"]
    assert verdict["row_count_baseline"] == "2026-11-19"


def test_unreachable_endpoint_is_f5(harness, monkeypatch):
    from busflow_verify.core.postgres.cluster import free_port

    monkeypatch.setenv("BACKUP_PRIMARY_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = verdict["failures"]
    assert (failure["code"], failure["name"], failure["severity"]) == (
        "F5",
        "OFFSITE_ENDPOINT_DOWN",
        "P1",
    )
    assert failure["escalate_to"] == ["@infra-oncall"]


def test_wrong_credentials_are_named_as_credentials_not_an_outage(harness, monkeypatch):
    monkeypatch.setenv("BACKUP_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    code, verdict = harness.verify(DAY)
    assert code == 3  # the verifier's configuration: nothing was learnt about the backup
    [failure] = verdict["failures"]
    assert failure["details"]["cause"] == "credentials_rejected"
    assert "not an outage" in failure["summary"]


def test_secrets_never_reach_output_or_the_event_log(harness, make_dump, monkeypatch):
    from busflow_verify_tests.conftest import SECRET_KEY

    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 0
    assert SECRET_KEY not in str(verdict) and SECRET_KEY not in harness.last_stderr
    with dg.DagsterInstance.get() as instance:
        logs = instance.all_logs(verdict["run_id"])
        assert logs and all(SECRET_KEY not in str(entry) for entry in logs)


def test_readable_output_without_json(harness, make_dump, capsys):
    from busflow_verify import cli
    from busflow_verify_tests.report.test_progress import assert_progress_lines

    harness.put(KEY, make_dump(orphans=250))
    code = cli.main(["verify", "--date", DAY])  # the default log level: progress on stderr
    out, err = capsys.readouterr()
    assert code == 1
    assert "NOT VERIFIED" in out
    assert "F3 ORPHAN_FK_SURGE" in out and "@security-oncall" in out
    assert "250 (max 200) OVER" in out
    assert_progress_lines(err, KEY, (harness.bucket_dir / KEY).stat().st_size)


def test_size_guard_reads_sizes_without_downloading(harness):
    """An 11 GB object (sparse on the server's disk) passes the 10 GB floor from HEAD alone."""
    from busflow_verify.defs.locate import dump_object
    from busflow_verify.defs.resources import build_resources
    from busflow_verify.defs.size_guard import size_check

    harness.write_config(min_bytes=10_000_000_000)
    harness.put_sized(KEY, 11 * 10**9)
    for day in range(13, 20):
        harness.put_sized(f"pg_dump_202611{day}_0100.dump", 10 * 10**9 + day * 10**7)
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [dump_object, size_check],
            partition_key=DAY,
            instance=instance,
            resources=build_resources(),
        )
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"offsite_endpoint_reachable": True, "size_guard": True}
    guard = result.output_for_node("size_check")
    assert guard["size_bytes"] == 11 * 10**9
    assert guard["median_bytes"] == 10 * 10**9 + 16 * 10**7
    assert len(guard["history"]) == 7


def test_copy_corruption_reaches_the_verdict_as_p1_with_table_and_line(harness, make_dump):
    dump = make_dump(bookings=1000, fmt="plain")
    text = dump.read_text()
    start = text.index("COPY commerce.bookings")
    row = text.index("\n42\t", start) + 1  # the 42nd row of commerce.bookings' data
    end = text.index("\n", row)
    corrupted = text[:row] + "42\tnot-a-tenant\t294" + text[end:]
    harness.put(KEY, corrupted.encode())
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = verdict["failures"]
    assert (failure["code"], failure["severity"]) == ("F2", "P1")
    details = failure["details"]
    assert (details["cause"], details["table"], details["line"], details["column"]) == (
        "copy_failed",
        "commerce.bookings",
        42,
        "tenant_id",
    )
    assert "Ubicloud" in failure["next_step"]
    assert verdict["restore"]["format"] == "plain"


def _f1_outlier(harness, make_dump, **bigger):
    harness.put("pg_dump_20261118_0100.dump", make_dump())
    assert harness.verify("2026-11-18")[0] == 0
    harness.put(KEY, make_dump(**bigger))
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = [f for f in verdict["failures"] if f["code"] == "F1"]
    assert failure["name"] == "SIZE_EXCEEDED"
    return failure


def test_f1_outlier_whose_rows_grew_in_proportion_is_step_2(harness, make_dump):
    failure = _f1_outlier(harness, make_dump, bookings=3000, messages=9000, legs=4500)
    triage = failure["details"]["triage"]
    assert triage["proportional"] is True
    assert triage["tables"]["commerce.bookings"] == {"previous": 1000, "current": 3000}
    assert triage["tables"]["communications.messages"] == {"previous": 3012, "current": 9012}
    assert 2.5 < triage["rows_ratio"] < 3.1
    assert "F1 step 2" in failure["summary"] and "evidence in the PR" in failure["summary"]


def test_f1_outlier_whose_rows_did_not_grow_is_step_3_corrupt(harness, make_dump):
    failure = _f1_outlier(harness, make_dump, padding=3000)
    triage = failure["details"]["triage"]
    assert triage["proportional"] is False
    assert triage["rows_ratio"] == 1.0 and triage["size_ratio"] >= 2.0
    assert "F1 step 3" in failure["summary"] and "re-run pg_dump" in failure["summary"]


def test_size_guard_can_be_configured_to_stop_before_restoring(harness, make_dump):
    harness.write_config(
        verify={"size_guard": {"min_bytes": 10_000_000_000, "restore_on_failure": False}}
    )
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 1
    assert failure_names(verdict) == ["SIZE_SHRUNK"]
    assert verdict["row_counts"] == {}
    states = check_states(verdict)
    assert states["restored_db:restore_succeeded"] is False  # skipped, and no pass
    assert states["row_count_report:row_counts_within_tolerance"] is None
