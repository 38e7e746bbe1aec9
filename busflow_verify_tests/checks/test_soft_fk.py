"""F3 triage on real restored dumps: tenants, expected vs unexpected, justification UUIDs."""

from __future__ import annotations

import pytest

from busflow_verify_tests.conftest import scrub_uuid

pytestmark = pytest.mark.e2e

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"


def allowlist(max_orphans=5, justification=(), tenant_column="tenant_id"):
    entry = {
        "child": "communications.messages.booking_id",
        "parent": "commerce.bookings.id",
        "max_orphans": max_orphans,
    }
    if tenant_column:
        entry["tenant_column"] = tenant_column
    if justification:
        entry["justification"] = list(justification)
    return {"soft_fks": [entry]}


def run(harness, make_dump, allow, **dump):
    harness.write_config(allowlist=allow)
    harness.put(KEY, make_dump(**dump))
    return harness.verify(DAY)


def test_orphans_within_one_tenant_are_p2(harness, make_dump):
    code, verdict = run(harness, make_dump, allowlist(), orphans=12, orphan_tenants=(9,))
    assert code == 1
    [f3] = verdict["failures"]
    assert (f3["code"], f3["severity"]) == ("F3", "P2")
    [row] = verdict["orphans"]
    assert (row["orphans"], row["tenants"], row["expected_orphans"], row["unexpected_orphans"]) == (
        12,
        1,
        0,
        12,
    )
    assert row["sample_unexpected"] == ["900001", "900002", "900003", "900004", "900005"]
    assert "12 unexpected" in f3["summary"] and "open a P2 issue and pin the FK" in f3["next_step"]


def test_orphans_across_tenants_are_p1(harness, make_dump):
    code, verdict = run(harness, make_dump, allowlist(), orphans=12, orphan_tenants=(7, 8, 9))
    [f3] = verdict["failures"]
    assert f3["severity"] == "P1" and f3["details"]["tenant_spanning"] is True
    assert verdict["orphans"][0]["tenants"] == 3
    assert "across 3 tenants" in f3["summary"]


def test_all_expected_orphans_cite_the_scrub_log(harness, make_dump):
    code, verdict = run(
        harness, make_dump, allowlist(), orphans=12, orphan_tenants=(8,), scrubbed=(8,)
    )
    [f3] = verdict["failures"]
    row = verdict["orphans"][0]
    assert (row["expected_orphans"], row["unexpected_orphans"]) == (12, 0)
    assert row["scrub_log_ids"] == [scrub_uuid(8)]
    assert "All 12 are expected" in f3["summary"] and scrub_uuid(8) in f3["summary"]
    assert "raise max_orphans only with the scrub-log UUIDs" in f3["next_step"]


def test_mixed_orphans_are_counted_per_class(harness, make_dump):
    code, verdict = run(
        harness, make_dump, allowlist(), orphans=12, orphan_tenants=(8, 9), scrubbed=(8,)
    )
    row = verdict["orphans"][0]
    assert (row["orphans"], row["expected_orphans"], row["unexpected_orphans"]) == (12, 6, 6)
    assert len(row["sample_expected"]) == 5 and len(row["sample_unexpected"]) == 5
    assert "6 unexpected" in verdict["failures"][0]["summary"]


def test_a_justified_tolerance_passes(harness, make_dump):
    code, verdict = run(
        harness,
        make_dump,
        allowlist(20, [scrub_uuid(8)]),
        orphans=12,
        orphan_tenants=(8,),
        scrubbed=(8,),
    )
    assert code == 0, verdict["failures"]
    assert verdict["orphans"][0]["unknown_justification"] == []


def test_a_justification_missing_from_the_scrub_log_fails_naming_it(harness, make_dump):
    bogus = scrub_uuid(4242)
    code, verdict = run(
        harness,
        make_dump,
        allowlist(20, [scrub_uuid(8), bogus]),
        orphans=12,
        orphan_tenants=(8,),
        scrubbed=(8,),
    )
    assert code == 1
    [f3] = verdict["failures"]
    assert f3["details"]["cause"] == "unknown_justification"
    assert bogus in f3["summary"] and scrub_uuid(8) not in f3["summary"]


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"justification": ["not-a-uuid"]}, "soft_fks[0].justification[0]"),
        ({"tenant_column": "tenant_id; DROP TABLE x"}, "soft_fks[0].tenant_column"),
    ],
)
def test_malformed_triage_keys_are_config_errors(harness, make_dump, capsys, entry, expected):
    from busflow_verify import cli

    base = allowlist()
    base["soft_fks"][0].update(entry)
    harness.write_config(allowlist=base)
    capsys.readouterr()
    assert cli.main(["verify", "--date", DAY]) == 2
    assert expected in capsys.readouterr().err


# Parent keys with gaps, negatives, the ends of a bitmap word and a huge key; child keys of
# another integer type, NULLs, keys just outside the range, and a key far beyond int4.
KEYS_SQL = """
CREATE SCHEMA k;
CREATE TABLE k.parent(id bigint PRIMARY KEY);
INSERT INTO k.parent SELECT g FROM generate_series(-130, 4000) g WHERE g % 7 <> 3;
INSERT INTO k.parent VALUES (4095), (4096), (100000);
CREATE TABLE k.child(parent_id integer, tenant_id int);
INSERT INTO k.child SELECT g, 1 FROM generate_series(-200, 4200) g;
INSERT INTO k.child VALUES (NULL, 1), (100000, 1), (99999, 2), (2147483647, 2);
CREATE TABLE k.scrub(id uuid PRIMARY KEY, tenant_id int);
INSERT INTO k.scrub VALUES ('00000000-0000-4000-8000-000000000002', 2);
CREATE TABLE k.uparent(id uuid PRIMARY KEY);
CREATE TABLE k.uchild(parent_id uuid);
"""


@pytest.fixture(scope="module")
def keys_db(source_pg):
    import psycopg

    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS sweep_keys")
        admin.execute("CREATE DATABASE sweep_keys")
    with psycopg.connect(**source_pg.conninfo("sweep_keys").kwargs(), autocommit=True) as conn:
        conn.execute(KEYS_SQL)
        parents = {r[0] for r in conn.execute("SELECT id FROM k.parent")}
        children = [r[0] for r in conn.execute("SELECT parent_id FROM k.child")]
        yield conn, sum(1 for c in children if c is not None and c not in parents)


def test_the_bitmap_probe_finds_exactly_the_orphans_the_anti_join_finds(keys_db):
    from busflow_verify.core.checks.soft_fk_sweep import (
        ParentKeys,
        orphan_count_query,
        parent_keys,
        triage_query,
    )
    from busflow_verify.core.config import ColumnRef, ScrubLogConfig, SoftFK

    conn, expected = keys_db
    child, parent = ColumnRef.parse("k.child.parent_id"), ColumnRef.parse("k.parent.id")
    keys = parent_keys(conn, child, parent)
    assert (keys.lo, keys.hi) == (-130, 100000)
    bitmap = conn.execute(orphan_count_query(child, parent, keys)).fetchone()[0]
    hashed = conn.execute(orphan_count_query(child, parent, ParentKeys())).fetchone()[0]
    # below the range, every 7th id from 3 to 4000, above 4000 but 4095/4096, 99999 and int4 max
    assert bitmap == hashed == expected == 70 + 572 + 198 + 2
    fk = SoftFK(
        child="k.child.parent_id", parent="k.parent.id", max_orphans=0, tenant_column="tenant_id"
    )
    scrub = ScrubLogConfig(table="k.scrub")
    triaged = [conn.execute(triage_query(fk, scrub, k)).fetchone() for k in (keys, ParentKeys())]
    assert triaged[0] == triaged[1]
    assert triaged[0][:3] == (842, 2, 2)  # two tenants; tenant 2's two orphans were scrubbed


def test_non_integer_or_too_wide_keys_use_the_hash_anti_join(keys_db, monkeypatch):
    from busflow_verify.core.checks import soft_fk_sweep as sweep
    from busflow_verify.core.config import ColumnRef

    conn, _ = keys_db
    uuid_keys = sweep.parent_keys(
        conn, ColumnRef.parse("k.uchild.parent_id"), ColumnRef.parse("k.uparent.id")
    )
    assert not uuid_keys.bitmap
    monkeypatch.setattr(sweep, "BITMAP_MAX_WORDS", 100)
    wide = sweep.parent_keys(
        conn, ColumnRef.parse("k.child.parent_id"), ColumnRef.parse("k.parent.id")
    )
    assert not wide.bitmap
