"""The runbook logic without Dagster: names, size math, config validation, deltas, verdicts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from busflow_verify.core import config as cfg
from busflow_verify.core.checks.row_counts import compare
from busflow_verify.core.checks.size_guard import evaluate
from busflow_verify.core.failures import CATALOGUE, Finding, FindingError
from busflow_verify.core.restore.dump_format import read_custom_header, sniff, writer_of
from busflow_verify.core.store.dumpkeys import day_prefix, dump_key, parse_dump_key
from busflow_verify.core.verdict import CheckOutcome, RunFacts, build_verdict, format_verdict


# -- naming ---------------------------------------------------------------------------------------
def test_parse_dump_key():
    name = parse_dump_key("nightly/pg_dump_20261120_0130.dump", "nightly/")
    assert name.date == dt.date(2026, 11, 20)
    assert name.taken_at == dt.datetime(2026, 11, 20, 1, 30, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    "key",
    [
        "pg_dump_20261120_0130.dump.tmp",
        "pg_dump_20261120.dump",
        "pg_dump_20261340_0100.dump",
        "pg_dump_20261120_2561.dump",
        "other/pg_dump_20261120_0100.dump",
        "verified-latest.json",
    ],
)
def test_non_dump_keys_are_ignored(key):
    assert parse_dump_key(key, "") is None


def test_day_prefix_and_key_round_trip():
    assert day_prefix("p/", dt.date(2026, 1, 2)) == "p/pg_dump_20260102_"
    taken = dt.datetime(2026, 1, 2, 3, 4)
    assert parse_dump_key(dump_key("p/", taken), "p/").taken_at.replace(tzinfo=None) == taken


# -- size guard (F1) ------------------------------------------------------------------------------
def history(*sizes):
    return {f"2026-11-{i + 10:02d}": {"key": f"k{i}", "size_bytes": s} for i, s in enumerate(sizes)}


def test_size_guard_passes_between_floor_and_ratio():
    result = evaluate(
        "k", 15 * 10**9, history(10e9, 11e9, 12e9), min_bytes=10**10, max_median_ratio=2.0
    )
    assert result.passed and result.median_bytes == 11e9


def test_size_at_the_floor_is_shrunk():
    result = evaluate("k", 10**10, {}, min_bytes=10**10, max_median_ratio=2.0)
    assert [f.name for f in result.findings] == ["SIZE_SHRUNK"]
    assert result.median_bytes is None  # no history: only the floor applies


def test_size_at_twice_the_median_is_exceeded():
    result = evaluate(
        "k", 24 * 10**9, history(11e9, 12e9, 13e9, 12e9), min_bytes=10**10, max_median_ratio=2.0
    )
    assert [f.name for f in result.findings] == ["SIZE_EXCEEDED"]
    assert result.ratio == 2.0
    assert "2.00x" in result.findings[0].summary


def test_median_of_fewer_days_than_the_window():
    result = evaluate("k", 25 * 10**9, history(12e9), min_bytes=10**10, max_median_ratio=2.0)
    assert result.findings[0].details["history_days"] == 1


# -- configuration --------------------------------------------------------------------------------
def write(tmp_path, verify="", allowlist="soft_fks: []\n"):
    (tmp_path / "verify.yaml").write_text(verify)
    (tmp_path / "soft-fk-allowlist.yaml").write_text(allowlist)
    return tmp_path


def test_shipped_config_has_the_runbook_numbers():
    folder = Path(__file__).parents[2] / "config" / "backup-verify"
    verify = cfg.load_verify_config(folder)
    assert verify.size_guard.min_bytes == 10_000_000_000
    assert verify.size_guard.max_median_ratio == 2.0 and verify.size_guard.trailing_days == 7
    [fk] = cfg.load_allowlist(folder).soft_fks
    assert (fk.child, fk.parent, fk.max_orphans) == (
        "communications.messages.booking_id",
        "commerce.bookings.id",
        200,
    )


def test_unknown_key_is_named_with_file_and_line(tmp_path):
    write(tmp_path, "size_guard:\n  min_bytes: 5\n  max_median_ration: 3\n")
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load_verify_config(tmp_path)
    assert "verify.yaml: line 3: key size_guard.max_median_ration: unknown key" in str(err.value)


@pytest.mark.parametrize(
    "allowlist, expected",
    [
        (
            "soft_fks:\n  - child: a.b\n    parent: c.d.e\n    max_orphans: 1\n",
            "line 2: key soft_fks[0].child",
        ),
        (
            "soft_fks:\n  - child: a.b.c\n    parent: c.d.e\n    max_orphans: -1\n",
            "line 4: key soft_fks[0].max_orphans",
        ),
        (
            "soft_fks:\n  - child: a.b.c\n    parent: c.d.e\n",
            "key soft_fks[0].max_orphans: Field required",
        ),
        (
            "soft_fks:\n  - child: a.b.c\n    parent: c.d.e\n    max_orphans: 1\n"
            "  - child: a.b.c\n    parent: c.d.e\n    max_orphans: 2\n",
            "duplicate soft FK a.b.c -> c.d.e",
        ),
        (
            "soft_fks:\n  - child: a.b.c; DROP TABLE x\n    parent: c.d.e\n    max_orphans: 1\n",
            "is not schema.table.column",
        ),
        ("soft_fks: [\n", "not valid YAML"),
    ],
)
def test_bad_allowlist_entries_are_rejected(tmp_path, allowlist, expected):
    write(tmp_path, allowlist=allowlist)
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load_allowlist(tmp_path)
    assert "soft-fk-allowlist.yaml" in str(err.value)
    assert expected in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(cfg.ConfigError, match="verify.yaml: file not found"):
        cfg.load_verify_config(tmp_path)


def test_per_table_tolerance_override(tmp_path):
    write(tmp_path, "row_counts:\n  tables:\n    commerce.bookings: {max_drop_ratio: 0.5}\n")
    rows = cfg.load_verify_config(tmp_path).row_counts
    assert rows.tolerance_for("commerce.bookings") == (0.5, 0.5)
    assert rows.tolerance_for("communications.messages") == (0.05, 0.5)


# -- row-count deltas -----------------------------------------------------------------------------
ROWS = cfg.RowCountConfig()


def test_no_previous_verified_dump_passes_and_marks_new():
    report = compare({"a.t": 10}, None, ROWS)
    assert report.passed and report.tables[0].status == "new"


@pytest.mark.parametrize(
    "previous, current, status",
    [
        (1000, 950, "ok"),
        (1000, 949, "dropped"),
        (1000, 1500, "ok"),
        (1000, 1501, "grew"),
        (0, 10, "ok"),
    ],
)
def test_drift_boundaries(previous, current, status):
    report = compare({"a.t": current}, {"a.t": previous}, ROWS, baseline_partition="2026-11-19")
    assert report.tables[0].status == status
    assert report.passed == (status == "ok")


def test_vanished_table_is_drift():
    report = compare({}, {"a.t": 5}, ROWS, baseline_partition="2026-11-19")
    assert report.tables[0].status == "missing"
    assert "a.t is missing (had 5 rows)" in report.findings[0].summary


# -- format sniffing ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, cause",
    [
        (b"", "not_a_dump"),
        (b"\x00\x01\x02garbage", "not_a_dump"),
        (b"<html><body>AccessDenied</body></html>", "html_error_page"),
        (b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>', "html_error_page"),
    ],
)
def test_sniff_rejects_non_dumps(tmp_path, content, cause):
    path = tmp_path / "obj"
    path.write_bytes(content)
    with pytest.raises(FindingError) as err:
        sniff(path, "pg_dump_20261120_0100.dump")
    assert err.value.finding.details["cause"] == cause
    assert err.value.finding.name == "RESTORE_FAILED"


def test_sniff_accepts_custom_and_plain(tmp_path):
    (tmp_path / "c").write_bytes(b"PGDMP\x01\x0f\x00\x04\x08\x01" + bytes(64))
    (tmp_path / "p").write_bytes(
        b"--\n-- PostgreSQL database dump\n--\n\\restrict abc\nSET x = 1;\n"
    )
    assert sniff(tmp_path / "c", "k").kind == "custom"
    assert sniff(tmp_path / "c", "k").archive_version == "1.15"
    assert sniff(tmp_path / "p", "k").kind == "plain"


def test_archive_versions_name_their_writer():
    assert writer_of("1.14") == "PostgreSQL 12-15"
    assert writer_of("1.16") == "PostgreSQL 17 or 18"
    assert writer_of("1.32") == "a pg_dump newer than PostgreSQL 18"
    assert read_custom_header(b"PGDMP") == (None, None)


# -- catalogue and verdict ------------------------------------------------------------------------
def test_catalogue_matches_the_runbook_matrix():
    assert CATALOGUE["SIZE_SHRUNK"].escalate_to == ("@data-oncall",)
    assert CATALOGUE["RESTORE_FAILED"].escalate_to == ("@infra-oncall", "@data-oncall")
    assert CATALOGUE["ORPHAN_FK_SURGE"].escalate_to == ("@data-oncall", "@security-oncall")
    assert (
        CATALOGUE["SLACK_NOTIFICATION_FAILURE"].code,
        CATALOGUE["SLACK_NOTIFICATION_FAILURE"].severity,
    ) == ("F4", "P3")
    assert CATALOGUE["OFFSITE_ENDPOINT_DOWN"].escalate_to == ("@infra-oncall",)


def facts(checks, status="SUCCESS", step_failures=()):
    return RunFacts(
        partition="2026-11-20",
        run_id="r1",
        run_status=status,
        checks=checks,
        step_failures=list(step_failures),
    )


def test_a_check_that_did_not_run_is_not_a_pass():
    verdict = build_verdict(facts([CheckOutcome("a:x", True), CheckOutcome("b:y", None)]))
    assert verdict.verified is False
    assert verdict.failures[0]["name"] == "VERIFY_JOB_ERROR"
    assert "b:y" in verdict.failures[0]["summary"]


def test_failed_checks_become_failures_and_format_reads_well():
    finding = Finding("ORPHAN_FK_SURGE", "x -> y: 9 orphans", {"n": 9}).to_dict()
    verdict = build_verdict(
        facts([CheckOutcome("a:x", True), CheckOutcome("b:y", False, [finding])])
    )
    assert verdict.verified is False and verdict.failures == (finding,)
    text = format_verdict(verdict)
    assert "NOT VERIFIED" in text and "F3 ORPHAN_FK_SURGE" in text and "b:y" in text


def test_a_failure_the_runbook_does_not_number_is_named_once():
    drift = Finding("ROW_COUNT_DRIFT", "commerce.bookings dropped 5.2%").to_dict()
    verdict = build_verdict(facts([CheckOutcome("row_count_report:x", False, [drift])]))
    assert drift["code"] == drift["name"] == "ROW_COUNT_DRIFT"  # the JSON keeps both fields
    line = next(line for line in format_verdict(verdict).splitlines() if "FAILURE" in line)
    assert line.split()[1:3] == ["ROW_COUNT_DRIFT", "severity"], line


def test_all_passed_is_verified():
    verdict = build_verdict(facts([CheckOutcome("a:x", True)]))
    assert verdict.verified is True and verdict.failures == ()
    assert verdict.to_json()["failures"] == [] and "alert" not in verdict.to_json()


# -- F2 classification of pg_restore / psql output --------------------------------------------------
def _restorer(tmp_path):
    from busflow_verify.core.postgres.cluster import ConnInfo
    from busflow_verify.core.postgres.privilege import RestoreDatabase
    from busflow_verify.core.restore.restorer import Restorer

    nowhere = ConnInfo("/nowhere", 1, "busflow_restore", "x")
    return Restorer(
        tmp_path / "d",
        "pg_dump_20261120_0100.dump",
        RestoreDatabase(owner=nowhere, admin=nowhere),
        tmp_path,
        tmp_path,
    )


def test_an_extension_failing_during_the_restore_is_missing_extension(tmp_path):
    stderr = (
        'pg_restore: error: could not execute query: ERROR:  extension "pgvector" is not '
        'available\nDETAIL:  Could not open extension control file "/usr/share/postgresql/'
        '15/extension/pgvector.control": No such file or directory.\n'
        "Command was: CREATE EXTENSION IF NOT EXISTS pgvector WITH SCHEMA public;\n"
    )
    finding = _restorer(tmp_path).classify(stderr, "pre-data")
    assert finding.details["cause"] == "missing_extension"
    assert finding.details["extensions"] == ["pgvector"]
    assert "EXTENSIONS in docker/backup/producer.env" in finding.summary


def test_an_unrecognised_error_is_a_plain_restore_error_naming_the_section(tmp_path):
    finding = _restorer(tmp_path).classify(
        'pg_restore: error: could not execute query: ERROR:  relation "x" already exists\n',
        "post-data",
    )
    assert finding.details["cause"] == "restore_error"
    assert "post-data" in finding.summary and 'relation "x" already exists' in finding.summary
    assert finding.to_dict()["severity"] == "P2"


def test_a_step_failure_gives_the_findings_own_next_step():
    from busflow_verify.core.failures import Finding
    from busflow_verify.defs.findings import fail_step

    failure = fail_step(
        Finding(
            "RESTORE_FAILED",
            "the dump needs file_fdw",
            next_step="Add file_fdw to producer.env, if production uses it.",
        )
    )
    assert failure.description.endswith(
        "Next: Add file_fdw to producer.env, if production uses it."
    )
    assert "Walk F2" not in failure.description  # the catalogue's generic step is overridden
