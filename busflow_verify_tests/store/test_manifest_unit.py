"""Issue 19's pure logic: the manifest's format, the comparison, F1's triage with the source."""

from __future__ import annotations

import json

import pytest

from busflow_verify.core.checks.size_guard import triage
from busflow_verify.core.failures import CATALOGUE
from busflow_verify.core.store.manifest import (
    ESTIMATE,
    EXACT,
    Manifest,
    ManifestError,
    TableCount,
    compare_counts,
    manifest_key,
)


def manifest(**tables) -> Manifest:
    return Manifest(
        dump="pg_dump_20261120_0100.dump",
        taken_at="2026-11-20T01:00:00+00:00",
        snapshot="00000003-0000001B-1",
        database="busflow",
        server_version="18.6",
        server_version_num=180006,
        pg_dump_version="18.6",
        pg_dump_bin="/opt/busflow-pg/18/bin",
        extensions={"pgcrypto": "1.4"},
        count_mode="exact" if all(isinstance(v, int) for v in tables.values()) else "listed",
        tables={
            t.replace("__", "."): TableCount(v, EXACT)
            if isinstance(v, int)
            else TableCount(v[0], ESTIMATE)
            for t, v in tables.items()
        },
        size_bytes=123456,
        sha256="ab" * 32,
    )


def test_manifest_key_replaces_dump_suffix_beside_the_dump():
    assert manifest_key("pg_dump_20261120_0100.dump") == "pg_dump_20261120_0100.manifest.json"
    assert manifest_key("nightly/pg_dump_20261120_0100.dump") == (
        "nightly/pg_dump_20261120_0100.manifest.json"
    )
    assert manifest_key("/backups/x.sql") == "/backups/x.sql.manifest.json"


def test_round_trip_keeps_every_field():
    m = manifest(commerce__bookings=3, public__logs=(40,))
    back = Manifest.from_json(m.to_json(), "test")
    assert back == m
    assert back.size_bytes == 123456 and back.sha256 == "ab" * 32
    assert back.exact_counts() == {"commerce.bookings": 3}
    assert back.estimated_tables() == ["public.logs"]
    assert json.loads(m.to_json())["tables"]["public.logs"] == {"rows": 40, "method": "reltuples"}


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.pop("sha256"), "sha256"),
        (lambda d: d.update(sha256="XYZ"), "sha256"),
        (lambda d: d.update(size_bytes="12"), "size_bytes"),
        (lambda d: d.update(size_bytes=True), "size_bytes"),
        (lambda d: d.update(format_version=2), "format_version"),
        (lambda d: d.update(count_mode="some"), "count_mode"),
        (lambda d: d["tables"]["commerce.bookings"].pop("rows"), "tables.commerce.bookings.rows"),
        (lambda d: d["tables"]["commerce.bookings"].update(method="guess"), "method"),
        (lambda d: d["tables"].update({"nodot": {"rows": 1, "method": "exact"}}), "tables.nodot"),
        (lambda d: d.update(extensions={"vector": 8}), "extensions.vector"),
    ],
)
def test_malformed_manifest_names_the_source_and_the_field(change, field):
    data = manifest(commerce__bookings=3).to_dict()
    change(data)
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict(data, "s3://b/pg_dump_20261120_0100.manifest.json")
    assert field in info.value.field
    assert "s3://b/pg_dump_20261120_0100.manifest.json" in str(info.value)


def test_not_json_is_a_manifest_error():
    with pytest.raises(ManifestError, match="not JSON"):
        Manifest.from_json(b"<html>403</html>", "s3://b/k")


def test_equal_counts_pass_and_estimates_are_not_compared():
    m = manifest(commerce__bookings=3, public__logs=(40,))
    result = compare_counts(m, {"commerce.bookings": 3, "public.logs": 7}, "here")
    assert result.findings == []
    assert result.compared == 1 and result.estimated == ["public.logs"]
    assert {r["table"]: r["status"] for r in result.rows} == {
        "commerce.bookings": "ok",
        "public.logs": "estimate",
    }


def test_a_difference_names_table_and_both_counts_as_f2_p1():
    m = manifest(commerce__bookings=3000, communications__messages=9000)
    result = compare_counts(
        m, {"commerce.bookings": 3000, "communications.messages": 8820}, "s3://b/k.manifest.json"
    )
    [finding] = result.findings
    as_dict = finding.to_dict()
    assert (as_dict["code"], as_dict["name"], as_dict["severity"]) == (
        "F2",
        "DUMP_INCOMPLETE",
        "P1",
    )
    assert as_dict["escalate_to"] == ["@infra-oncall", "@data-oncall"]
    assert "communications.messages: source 9,000 rows, restored 8,820" in as_dict["summary"]
    assert "snapshot the source first" in as_dict["next_step"]
    assert as_dict["details"]["tables"] == [
        {"table": "communications.messages", "source": 9000, "restored": 8820}
    ]


def test_tables_on_one_side_only_are_named():
    m = manifest(commerce__bookings=3, public__gone=5)
    result = compare_counts(m, {"commerce.bookings": 3, "public.extra": 1}, "here")
    causes = {f.details["cause"]: f.details["tables"] for f in result.findings}
    assert causes == {
        "table_not_restored": ["public.gone"],
        "table_not_in_manifest": ["public.extra"],
    }


def test_failure_mode_is_last_of_the_catalogue_with_the_runbook_step():
    mode = CATALOGUE["DUMP_INCOMPLETE"]
    assert mode.code == "F2" and mode.severity == "P1"
    assert "re-run pg_dump, snapshot the source first" in mode.next_step.lower()


def test_f1_triage_uses_the_source_counts_when_a_manifest_exists():
    restored = {"commerce.bookings": 500}
    found = triage(
        100,
        restored,
        200,
        {"commerce.bookings": 1000},
        ["commerce.bookings"],
        0.25,
        source_counts={"commerce.bookings": 1000},
    )
    assert "source's own row counts" in found["conclusion"]
    assert found["source_counts"] == {"commerce.bookings": 1000}
    assert found["proportional"] is False
    assert "commerce.bookings: source 1,000, restored 500" in found["conclusion"]
    without = triage(100, restored, 200, {"commerce.bookings": 1000}, ["commerce.bookings"], 0.25)
    assert "source" not in without["conclusion"] and without["proportional"] is True


def test_split_dsn_keeps_the_password_out_of_the_connection_string():
    from busflow_verify.core.store.producer import split_dsn

    conninfo, password = split_dsn("postgresql://backup:s3cr%40t@db.internal:5433/busflow")
    assert password == "s3cr@t"
    assert "s3cr" not in conninfo and "db.internal" in conninfo and "5433" in conninfo
    conninfo, password = split_dsn("host=/tmp dbname=x user=y")
    assert "password" not in conninfo


def test_bad_dsn_and_bad_out_are_named_without_the_dsn(tmp_path):
    from busflow_verify.core.store.producer import ProducerError, produce, split_dsn

    with pytest.raises(ProducerError, match="not a valid libpq") as info:
        split_dsn("host=x password='s3cret")
    assert "s3cret" not in str(info.value)
    with pytest.raises(ProducerError, match="ends in .dump"):
        produce("host=/nowhere", tmp_path / "backup.sql")
    with pytest.raises(ProducerError, match="is not schema.table"):
        produce("host=/nowhere", tmp_path / "x.dump", exact_tables=["bookings"])


def test_pg_dump_must_be_at_least_the_source_major():
    from busflow_verify.core.postgres.servers import installed
    from busflow_verify.core.store.producer import ProducerError, pick_pg_dump

    newest = installed()[0]
    tool, version = pick_pg_dump(newest.major)
    assert tool == newest.bin_dir / "pg_dump" and version.startswith(str(newest.major))
    with pytest.raises(ProducerError, match=f"no pg_dump of major {newest.major + 1} or newer"):
        pick_pg_dump(newest.major + 1)
