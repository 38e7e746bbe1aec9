"""Issue 17 point 6: schema drift since the last verified dump (core/checks/schema_drift.py, row_count_report)."""

from __future__ import annotations

import dagster as dg
import pytest

from busflow_verify.core.checks.schema_drift import schema_drift

BEFORE = {
    "a.kept": [["id", "bigint"], ["note", "text"]],
    "a.gone": [["id", "integer"]],
}


def test_no_baseline_means_no_drift():
    drift = schema_drift(BEFORE, None, None)
    assert (drift.appeared, drift.disappeared, drift.changed, drift.findings) == ([], [], [], [])


def test_tables_and_columns_that_changed_are_named():
    after = {
        "a.kept": [["id", "integer"], ["note", "text"], ["added", "jsonb"]],
        "a.new": [],
    }
    drift = schema_drift(after, BEFORE, None, "2026-11-19")
    assert drift.appeared == ["a.new"] and drift.disappeared == ["a.gone"]
    [change] = drift.changed
    assert (change.table, change.retyped, change.added, change.removed) == (
        "a.kept",
        [["id", "bigint", "integer"]],
        [["added", "jsonb"]],
        [],
    )
    [finding] = drift.findings
    assert finding.name == "SCHEMA_DRIFT"
    assert finding.summary == (
        "schema changed since the last verified dump (2026-11-19): 1 new table(s): a.new; "
        "columns changed in 1 table(s): a.kept (id bigint -> integer; +added jsonb)"
    )
    assert {r["change"] for r in drift.rows()} == {"appeared", "disappeared", "columns changed"}


def test_a_disappeared_table_alone_is_no_notice_it_is_the_row_count_failure():
    drift = schema_drift({"a.kept": BEFORE["a.kept"]}, BEFORE, None, "2026-11-19")
    assert drift.disappeared == ["a.gone"] and drift.findings == []


def test_a_baseline_without_a_signature_compares_tables_only():
    after = {"a.kept": [["id", "uuid"]], "a.new": [["id", "int"]]}
    drift = schema_drift(after, None, ["a.kept", "a.gone"], "2026-11-19")
    assert (drift.appeared, drift.disappeared, drift.changed) == (["a.new"], ["a.gone"], [])
    assert drift.columns_compared is False
    assert len(drift.findings) == 1


# -- end to end: real plain dumps with DDL added, the real job, real #ops ----------------------

ADDED = """
CREATE TABLE public.fares(id bigint PRIMARY KEY, price numeric(10,2));
ALTER TABLE commerce.bookings ALTER COLUMN amount_cents TYPE bigint, ADD COLUMN currency text;
"""
DROPPED = """
DROP TABLE public.attachments;
CREATE TABLE public.refunds(id bigint);
ALTER TABLE operations.service_legs ALTER COLUMN leg_no TYPE smallint;
"""
END = "-- PostgreSQL database dump complete"


def _with(plain: str, ddl: str) -> bytes:
    assert END in plain
    return plain.replace(END, ddl + "\n" + END, 1).encode()


def _drift_metadata(home, partition: str) -> dict:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("row_count_report"), asset_partitions=[partition]
            ),
            limit=1,
        ).records
        meta = record.asset_materialization.metadata
        table = [r.data for r in meta["schema_drift_table"].records]
        return {"drift": meta["schema_drift"].value, "table": table, "meta": meta}


@pytest.mark.e2e
def test_added_dropped_and_changed_tables_since_the_last_verified_dump(harness, make_dump, slack):
    plain = make_dump(fmt="plain").read_text()
    harness.put("pg_dump_20261118_0100.dump", plain.encode())
    harness.put("pg_dump_20261119_0100.dump", _with(plain, ADDED))
    harness.put("pg_dump_20261120_0100.dump", _with(plain, ADDED + DROPPED))

    code, first = harness.verify("2026-11-18")
    assert code == 0 and first["notices"] == [], first
    signature = _drift_metadata(harness.home, "2026-11-18")["meta"]["column_signature"].value
    assert signature["commerce.bookings"] == [
        ["id", "bigint"],
        ["tenant_id", "integer"],
        ["amount_cents", "integer"],
    ]

    # a new table and changed columns: a notice, the day still verifies
    code, second = harness.verify("2026-11-19")
    assert code == 0, second
    assert second["verified"] is True and second["failures"] == []
    [notice] = second["notices"]
    assert notice["name"] == "SCHEMA_DRIFT" and notice["severity"] == "P3"
    assert "1 new table(s): public.fares" in notice["summary"]
    assert "commerce.bookings (amount_cents integer -> bigint; +currency text)" in notice["summary"]
    assert {d["table"]: d["status"] for d in second["row_count_deltas"]}["public.fares"] == "new"
    assert "SCHEMA_DRIFT (informational)" in slack.texts()[-1]

    # a table gone since then is the row-count failure; the new one and the retype are notices
    code, third = harness.verify("2026-11-20")
    assert code == 1, third
    assert third["row_count_baseline"] == "2026-11-19"
    [failure] = third["failures"]
    assert failure["name"] == "ROW_COUNT_DRIFT"
    assert (
        "public.attachments is missing (had 0 rows): it disappeared since then"
        in (failure["summary"])
    )
    [notice] = third["notices"]
    assert "1 new table(s): public.refunds" in notice["summary"]
    assert "operations.service_legs (leg_no integer -> smallint)" in notice["summary"]
    assert "public.fares" not in notice["summary"]  # it was in the baseline
    recorded = _drift_metadata(harness.home, "2026-11-20")
    assert recorded["drift"]["appeared"] == ["public.refunds"]
    assert recorded["drift"]["disappeared"] == ["public.attachments"]
    assert [c["table"] for c in recorded["drift"]["changed"]] == ["operations.service_legs"]
    assert {(r["table"], r["change"]) for r in recorded["table"]} == {
        ("public.refunds", "appeared"),
        ("public.attachments", "disappeared"),
        ("operations.service_legs", "columns changed"),
    }
    text = slack.texts()[-1]
    assert "ROW_COUNT_DRIFT" in text and "SCHEMA_DRIFT (informational)" in text
    assert "public.refunds" in text
