"""Content fingerprints end to end: the producer fingerprints every table in pg_dump's snapshot,
verify computes the same over the restored tables in the scan that counts them, and the manifest
check tells a dump whose counts match and whose content does not. Real servers: a source on
Debian's PostgreSQL 15 verified on 18, pgvector on 18 for both sides, the loopback S3 server."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import psycopg
import pytest

from busflow_verify.core.checks.fingerprint import METHOD
from busflow_verify.core.postgres.cluster import DisposablePostgres
from busflow_verify.core.postgres.servers import installed
from busflow_verify.core.store.manifest import manifest_key
from busflow_verify.core.store.producer import produce
from busflow_verify_tests.conftest import (
    SESSION_CLUSTERS,
    check_evaluation,
    database_with,
    pg_dump_of,
)

pytestmark = pytest.mark.e2e

DAY, KEY = "2026-11-20", "pg_dump_20261120_0100.dump"
CHECK = dg.AssetCheckKey(dg.AssetKey("restored_db"), "restored_rows_match_manifest")

# Types every major has; the money column is left out of the fingerprint, the generated one too
# (recomputed by the restore), and the dropped column is no column at all.
CONTENT = """
CREATE SCHEMA shop;
CREATE TYPE shop.mood AS ENUM ('calm', 'busy');
CREATE TABLE shop.orders (
    id serial PRIMARY KEY,
    ref bigint GENERATED ALWAYS AS IDENTITY,
    customer text NOT NULL,
    placed_at timestamptz NOT NULL,
    due date,
    took interval,
    amount numeric(12, 2),
    ratio float8,
    payload jsonb,
    raw bytea,
    mood shop.mood,
    tags text[],
    total money,
    gone int,
    cents bigint GENERATED ALWAYS AS ((amount * 100)::bigint) STORED
);
ALTER TABLE shop.orders DROP COLUMN gone;
INSERT INTO shop.orders (customer, placed_at, due, took, amount, ratio, payload, raw, mood, tags,
                         total)
SELECT 'Kundin ' || g || ' Jürgen Øster 東京', timestamptz '2026-11-20 01:00:00+01' + g * interval '37 minutes',
       date '2026-01-01' + g, g * interval '1 hour 3 minutes', g * 1.25,
       (ARRAY[0.1, -0, 1e-300, 'NaN', '-Infinity', 2.5e15]::float8[])[1 + g % 6],
       jsonb_build_object('g', g, 'seats', ARRAY[g, g + 1], 'note', 'ß ' || g, 'x', 1.50),
       decode(md5(g::text), 'hex'), (ARRAY['calm', 'busy']::shop.mood[])[1 + g % 2],
       ARRAY['a' || g, NULL, 'z'], g * 3.5
FROM generate_series(1, 400) g;
CREATE TABLE shop.notes (id bigint PRIMARY KEY, body text);
INSERT INTO shop.notes SELECT g, repeat('n', g % 7) FROM generate_series(1, 300) g;
"""
VECTORS = """
CREATE EXTENSION vector;
CREATE TABLE shop.embeddings (id serial PRIMARY KEY, e vector(3), label text);
INSERT INTO shop.embeddings (e, label)
SELECT ARRAY[g % 7, g * 0.1, -g]::real[]::vector, 'e' || g FROM generate_series(1, 200) g;
SELECT setval('shop.embeddings_id_seq', 150);  -- behind its column: 200 rows
"""


@pytest.fixture(scope="module")
def pg15():
    found = [s for s in installed() if s.major == 15]
    if not found:
        pytest.skip("no PostgreSQL 15 here: run `make install`")
    with DisposablePostgres(bin_dir=str(found[0].bin_dir)) as pg:
        SESSION_CLUSTERS.add(pg.root)  # outlives the tests' runs, as the session's servers do
        yield pg


ALLOWLIST = {"soft_fks": [{"child": "shop.notes.id", "parent": "shop.orders.id", "max_orphans": 0}]}


@pytest.fixture
def harness(harness):
    """The suite's harness, with an allowlist of this schema's soft FK."""
    harness.write_config(allowlist=ALLOWLIST)
    return harness


def _put(harness, result) -> None:
    harness.put(KEY, result.dump_path)
    harness.put(manifest_key(KEY), result.manifest_path)


def _evaluation(run_id: str):
    return check_evaluation(run_id, CHECK)


def test_a_pg15_source_verified_on_18_has_the_same_fingerprints(harness, pg15, tmp_path):
    result = produce(database_with(pg15, "content15", CONTENT), tmp_path / KEY)
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["server_version"].startswith("15.") and manifest["fingerprint_method"] == METHOD
    orders = manifest["tables"]["shop.orders"]
    assert orders["left_out"] == {
        "total": "money: its text form follows lc_monetary (the server's locale), which a "
        "restore server need not share",
        "cents": "generated column: recomputed by the restore from the other columns, not restored",
    }
    assert "gone" not in orders["fingerprint_columns"] and "ratio" in orders["fingerprint_columns"]
    assert list(manifest["tables"]) == ["shop.notes", "shop.orders"]  # `tables` stays as it was
    _put(harness, result)
    code, verdict = harness.verify(DAY)
    assert (code, verdict["verified"]) == (0, True), verdict["failures"]
    assert verdict["restore"]["server"]["version"].startswith("18.")
    evaluation = _evaluation(verdict["run_id"])
    assert "2 table(s)' fingerprints match the manifest's" in evaluation.description
    assert "shop.orders.total (money:" in evaluation.description
    rows = {r["table"]: r for r in evaluation.metadata["comparison"].value}
    assert rows["shop.orders"]["restored_fingerprint"] == orders["fingerprint"]
    assert rows["shop.notes"]["fingerprint"] == "match"


def test_one_changed_value_with_equal_counts_is_named_by_table(harness, source_pg, tmp_path, slack):
    """The dump beside the manifest has every row, and one customer's name changed (an encoding
    fault would do the same): its size and SHA-256 are the dump's, so only the content tells."""
    dsn = database_with(source_pg, "content18", CONTENT)
    result = produce(dsn, tmp_path / KEY)
    manifest = json.loads(result.manifest_path.read_text())
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS content18_changed")
        conn.execute("CREATE DATABASE content18_changed TEMPLATE content18")
    with psycopg.connect(**source_pg.conninfo("content18_changed").kwargs()) as conn:
        conn.execute("UPDATE shop.orders SET customer = replace(customer, 'ü', 'u') WHERE id = 7")
    dump = pg_dump_of(source_pg, "content18_changed", tmp_path / "changed.dump")
    data = dump.read_bytes()
    manifest.update(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    harness.put(KEY, dump)
    harness.put(manifest_key(KEY), json.dumps(manifest, indent=2).encode())
    code, verdict = harness.verify(DAY)
    assert code == 1, verdict
    [failure] = verdict["failures"]
    assert (failure["code"], failure["name"], failure["severity"]) == (
        "F2",
        "DUMP_CONTENT_DIFFERS",
        "P1",
    )
    [table] = failure["details"]["tables"]
    assert table["table"] == "shop.orders" and table["rows"] == 400
    source_fp = manifest["tables"]["shop.orders"]["fingerprint"]
    assert table["source_fingerprint"] == source_fp != table["restored_fingerprint"]
    assert (
        f"source fingerprint {source_fp}, restored {table['restored_fingerprint']}"
        in (failure["summary"])
    )
    assert "the counts match (400 rows)" in failure["summary"]
    assert "total (money:" in failure["summary"]  # the columns left out are said
    assert "shop.notes" not in failure["summary"]
    [text] = [t for t in slack.texts() if DAY in t]
    assert "DUMP_CONTENT_DIFFERS" in text and "shop.orders" in text


def test_vector_columns_match_and_a_sequence_behind_is_named(harness, source_pg, tmp_path):
    """pgvector on both sides (the same version): its column is fingerprinted and matches. The
    sequence set below its column's max verifies with a notice naming both numbers."""
    result = produce(database_with(source_pg, "vectors18", CONTENT + VECTORS), tmp_path / KEY)
    entry = result.manifest.tables["shop.embeddings"]
    assert entry.extension_columns == {"e": "vector"} and entry.fingerprint_builtin
    _put(harness, result)
    code, verdict = harness.verify(DAY)
    assert (code, verdict["verified"]) == (0, True), verdict["failures"]
    evaluation = _evaluation(verdict["run_id"])
    assert "3 table(s)' fingerprints match" in evaluation.description
    [notice] = [n for n in verdict["notices"] if n["name"] == "SEQUENCE_BEHIND"]
    assert (notice["code"], notice["severity"], notice["escalate_to"]) == (
        "SEQUENCE_BEHIND",
        "P2",
        ["@data-oncall"],
    )
    assert (
        "shop.embeddings_id_seq (owned by shop.embeddings.id): last_value 150, the column's "
        "max 200" in notice["summary"]
    )
    assert "duplicate keys" in notice["summary"]
    assert "shop.orders_id_seq" not in notice["summary"]  # pg_dump kept it at the column's max
    checks = {c["check"]: c for c in verdict["checks"]}
    assert checks["row_count_report:sequences_ahead_of_their_columns"]["passed"] is False


def test_a_manifest_without_fingerprints_verifies_by_counts_and_says_so(
    harness, source_pg, tmp_path
):
    result = produce(
        database_with(source_pg, "counts_only", CONTENT), tmp_path / KEY, fingerprints=False
    )
    manifest = json.loads(result.manifest_path.read_text())
    assert "fingerprint_method" not in manifest
    assert "fingerprint" not in manifest["tables"]["shop.orders"]
    _put(harness, result)
    code, verdict = harness.verify(DAY)
    assert (code, verdict["verified"]) == (0, True), verdict["failures"]
    evaluation = _evaluation(verdict["run_id"])
    assert "no fingerprints in this manifest: compared by counts only" in evaluation.description
