"""Issue 19 end to end: `busflow-verify dump` against a real source, the manifest beside the dump
on a real S3 server, and the verify job comparing the restored tables with it."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from busflow_verify import cli
from busflow_verify.core.proc import CHILD_ENV_NAMES, CHILD_ENV_PREFIXES
from busflow_verify.core.store import producer as producer_mod
from busflow_verify.core.store.manifest import ManifestError, fetch_manifest, manifest_key
from busflow_verify.core.store.producer import ProducerError, produce
from busflow_verify.defs.resources import S3Endpoint
from busflow_verify_tests.conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    busflow_sql,
    check_evaluation,
    expected_counts,
)

pytestmark = pytest.mark.e2e

DAY, KEY = "2026-11-20", "pg_dump_20261120_0100.dump"
BASE_DAY, BASE_KEY = "2026-11-19", "pg_dump_20261119_0100.dump"
ROLE = "dump_role"
PASSWORD = "dump-secret-" + secrets.token_hex(8)
CHECK = dg.AssetCheckKey(dg.AssetKey("restored_db"), "restored_rows_match_manifest")


@pytest.fixture(scope="module")
def source(source_pg):
    """A Busflow-shaped source database, read by a role that must give its password (scram)."""
    dbname = "manifest_src_" + secrets.token_hex(4)
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE]).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(PASSWORD)
                )
            )
            hba = source_pg.data_dir / "pg_hba.conf"
            hba.write_text(f"local all {ROLE} scram-sha-256\n" + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
    with psycopg.connect(**source_pg.conninfo(dbname).kwargs(), autocommit=True) as conn:
        conn.execute(busflow_sql())
        conn.execute(
            sql.SQL(
                "GRANT SELECT ON ALL TABLES IN SCHEMA commerce, communications, operations, "
                "public TO {}; GRANT USAGE ON SCHEMA commerce, communications, operations TO {}"
            ).format(sql.Identifier(ROLE), sql.Identifier(ROLE))
        )
        conn.execute("ANALYZE")
    ci = source_pg.conninfo(dbname)
    return {
        "dsn": f"host={ci.host} port={ci.port} dbname={dbname} user={ROLE} password={PASSWORD}",
        "admin": ci,
        "pg": source_pg,
    }


def _spy_popen(monkeypatch) -> list:
    """Record what the producer starts (argv, env) and start it for real."""
    seen, real = [], subprocess.Popen

    def popen(args, *a, **kw):
        seen.append((list(args), dict(kw.get("env") or {})))
        return real(args, *a, **kw)

    monkeypatch.setattr(producer_mod.subprocess, "Popen", popen)
    return seen


def test_dump_and_manifest_come_from_one_snapshot(source, tmp_path, monkeypatch, capsys):
    seen = _spy_popen(monkeypatch)
    monkeypatch.setenv("BACKUP_SECRET_ACCESS_KEY", "must-not-reach-pg_dump")
    out = tmp_path / KEY
    code = cli.main(["dump", "--dsn", source["dsn"], "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    summary = json.loads(printed.out)
    data = out.read_bytes()
    manifest_path = tmp_path / "pg_dump_20261120_0100.manifest.json"
    assert summary["manifest"] == str(manifest_path)
    text = manifest_path.read_text()
    manifest = json.loads(text)
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() == summary["sha256"]
    assert manifest["size_bytes"] == len(data)
    assert data[:5] == b"PGDMP"
    assert manifest["count_mode"] == "exact"
    assert {t: v["rows"] for t, v in manifest["tables"].items()} == expected_counts()
    assert {v["method"] for v in manifest["tables"].values()} == {"exact"}
    assert "plpgsql" in manifest["extensions"]
    assert manifest["server_version_num"] // 10000 <= int(manifest["pg_dump_version"].split(".")[0])
    # the password reaches pg_dump only as PGPASSWORD; nothing else of ours goes with it
    [(argv, env)] = [s for s in seen if "-Fc" in s[0]]
    assert "--snapshot=" + manifest["snapshot"] in argv
    assert not any(PASSWORD in a for a in argv)
    assert env["PGPASSWORD"] == PASSWORD
    extra = {k for k in env if k not in CHILD_ENV_NAMES and not k.startswith(CHILD_ENV_PREFIXES)}
    assert extra == {"PGPASSWORD"}
    for where in (text, printed.out, printed.err):
        assert PASSWORD not in where
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.tmp"))


def test_listed_tables_exact_the_rest_reltuples(source, tmp_path):
    result = produce(source["dsn"], tmp_path / KEY, exact_tables=["commerce.bookings"])
    tables = result.manifest.tables
    assert result.manifest.count_mode == "listed"
    assert (tables["commerce.bookings"].rows, tables["commerce.bookings"].method) == (1000, "exact")
    assert tables["communications.messages"].method == "reltuples"
    assert tables["communications.messages"].rows == 3012  # ANALYZEd: reltuples is exact here
    with pytest.raises(ProducerError, match="no such table in the source: commerce.nope"):
        produce(source["dsn"], tmp_path / "pg_dump_20261120_0200.dump", ["commerce.nope"])


def test_failed_pg_dump_leaves_no_dump_and_no_manifest(source, tmp_path):
    admin = source["admin"]
    with psycopg.connect(**admin.kwargs(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("REVOKE SELECT ON public.attachments FROM {}").format(sql.Identifier(ROLE))
        )
    try:
        out = tmp_path / KEY
        with pytest.raises(ProducerError) as info:  # the counts avoid the table; pg_dump cannot
            produce(source["dsn"], out, exact_tables=["commerce.bookings"])
    finally:
        with psycopg.connect(**admin.kwargs(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("GRANT SELECT ON public.attachments TO {}").format(sql.Identifier(ROLE))
            )
    message = str(info.value)
    assert "pg_dump failed" in message and "permission denied" in message
    assert "attachments" in message and PASSWORD not in message
    assert list(tmp_path.iterdir()) == []


def test_wrong_password_is_named_without_the_dsn(source, tmp_path):
    dsn = source["dsn"].replace(PASSWORD, "wrong-" + PASSWORD)
    with pytest.raises(ProducerError, match="cannot connect to the source") as info:
        produce(dsn, tmp_path / KEY)
    assert PASSWORD not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def _produce_into(harness, source, key: str, tmp_path) -> dict:
    out = tmp_path / key
    result = produce(source["dsn"], out)
    harness.put(key, out)
    harness.put(manifest_key(key), result.manifest_path)
    return result.manifest.to_dict()


def _evaluation(run_id: str):
    return check_evaluation(run_id, CHECK)


def test_verify_compares_restored_tables_with_the_manifest(harness, source, tmp_path):
    _produce_into(harness, source, KEY, tmp_path)
    code, verdict = harness.verify(DAY)
    assert code == 0, verdict
    checks = {c["check"]: c["passed"] for c in verdict["checks"]}
    assert checks["restored_db:restored_rows_match_manifest"] is True
    evaluation = _evaluation(verdict["run_id"])
    assert "5 table(s) compared exactly" in evaluation.description
    assert evaluation.metadata["tables_compared_exactly"].value == 5


def test_no_manifest_passes_saying_so(harness, make_dump):
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 0, verdict
    evaluation = _evaluation(verdict["run_id"])
    assert evaluation.passed is True
    assert evaluation.description == "no manifest beside the dump (older dumps have none)"


def test_malformed_manifest_is_named_by_key_and_field(harness, s3, source, tmp_path):
    manifest = _produce_into(harness, source, KEY, tmp_path)
    del manifest["sha256"]
    harness.put(manifest_key(KEY), json.dumps(manifest).encode())
    client = S3Endpoint(
        endpoint_url=s3.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
    ).client()
    with pytest.raises(ManifestError) as info:
        fetch_manifest(client, harness.bucket, KEY)
    assert info.value.field == "sha256" and manifest_key(KEY) in str(info.value)
    assert fetch_manifest(client, harness.bucket, "pg_dump_20261120_0200.dump") is None
    harness.put(manifest_key(KEY), b"{not json")
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = [f for f in verdict["failures"] if f["name"] == "DUMP_INCOMPLETE"]
    assert failure["details"]["cause"] == "manifest_invalid"
    assert manifest_key(KEY) in failure["summary"]


def test_planted_rows_missing_fail_naming_table_and_both_counts(harness, source, tmp_path, slack):
    """A manifest reused with a dump that lost 2% of one table's rows: within the row-count
    tolerance (5%) of the last verified dump and the size guard, yet a P1 F2."""
    _produce_into(harness, source, BASE_KEY, tmp_path)
    code, base = harness.verify(BASE_DAY)
    assert code == 0, base
    manifest = _produce_into(harness, source, KEY, tmp_path)
    # the same source, 60 messages fewer in the dump than the manifest counted
    admin, pg = source["admin"], source["pg"]
    lossy = admin.dbname + "_lossy"
    with psycopg.connect(**admin.on("postgres").kwargs(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(lossy), sql.Identifier(admin.dbname)
            )
        )
    with psycopg.connect(**admin.on(lossy).kwargs(), autocommit=True) as conn:
        conn.execute("DELETE FROM communications.messages WHERE id <= 60")
    dump = tmp_path / "lossy.dump"
    subprocess.run(
        [pg.tool("pg_dump"), "-Fc", *admin.on(lossy).libpq_args(), "-f", str(dump)], check=True
    )
    data = dump.read_bytes()
    manifest.update(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    harness.put(KEY, dump)
    harness.put(manifest_key(KEY), json.dumps(manifest).encode())
    code, verdict = harness.verify(DAY)
    assert code == 1, verdict
    assert verdict["verified"] is False
    checks = {c["check"]: c["passed"] for c in verdict["checks"]}
    assert checks["size_check:size_guard"] is True
    assert checks["row_count_report:row_counts_within_tolerance"] is True  # -2% < 5%
    assert checks["restored_db:restored_rows_match_manifest"] is False
    [failure] = verdict["failures"]
    assert (failure["code"], failure["name"], failure["severity"]) == (
        "F2",
        "DUMP_INCOMPLETE",
        "P1",
    )
    assert "communications.messages: source 3,012 rows, restored 2,952" in failure["summary"]
    assert failure["escalate_to"] == ["@infra-oncall", "@data-oncall"]
    [text] = [t for t in slack.texts() if DAY in t]
    assert "F2" in text and "DUMP_INCOMPLETE" in text and "communications.messages" in text


def test_f1_triage_compares_the_source_counts(harness, source, tmp_path):
    harness.write_config(min_bytes=10_000_000_000)  # F1 fires: SIZE_SHRUNK
    _produce_into(harness, source, KEY, tmp_path)
    code, verdict = harness.verify(DAY)
    assert code == 1
    [f1] = [f for f in verdict["failures"] if f["code"] == "F1"]
    assert "the source's own row counts (the producer's manifest)" in f1["summary"]
    assert f1["details"]["triage"]["source_counts"]["commerce.bookings"] == 1000


def test_dump_upload_puts_both_beside_each_other_for_verify(harness, source, tmp_path, capsys):
    out = tmp_path / KEY
    capsys.readouterr()
    code = cli.main(["dump", "--dsn", source["dsn"], "--out", str(out), "--upload"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert json.loads(printed.out)["uploaded"] == [KEY, manifest_key(KEY)]
    assert (harness.bucket_dir / KEY).read_bytes() == out.read_bytes()
    assert (harness.bucket_dir / manifest_key(KEY)).read_bytes() == (
        tmp_path / manifest_key(KEY)
    ).read_bytes()
    for secret in (PASSWORD, SECRET_KEY):
        assert secret not in printed.out + printed.err
    code, verdict = harness.verify(DAY)
    assert code == 0, verdict
    assert _evaluation(verdict["run_id"]).metadata["tables_compared_exactly"].value == 5


def test_a_manifest_of_another_dump_is_named(harness, source, tmp_path):
    out = tmp_path / BASE_KEY
    result = produce(source["dsn"], out)
    harness.put(KEY, out)  # the same bytes, under another night's name
    harness.put(manifest_key(KEY), result.manifest_path)
    code, verdict = harness.verify(DAY)
    assert code == 1, verdict
    [failure] = verdict["failures"]
    assert failure["details"]["cause"] == "manifest_of_another_dump"
    assert BASE_KEY in failure["summary"] and KEY in failure["summary"]


def test_the_download_is_checked_against_the_manifests_sha256(
    harness, source, tmp_path, fallback_s3, monkeypatch
):
    """The primary's copy has one byte damaged (same size, so only the digest can tell); the
    mirror's is intact: the primary's is refused twice (the same bytes both times: its stored
    copy, said in the notice), the mirror's verifies (F5 step 1)."""
    _produce_into(harness, source, KEY, tmp_path)
    harness.mirror_to(fallback_s3, monkeypatch)
    stored = harness.bucket_dir / KEY
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    code, verdict = harness.verify(DAY)
    assert code == 0, verdict
    assert verdict["restore"]["downloaded_from"] == "fallback"
    assert verdict["restore"]["digests_checked"] == ["sha256"]
    [notice] = verdict["notices"]
    assert notice["details"]["cause"] == "stored_digest_mismatch"
    assert "its sha256 is" in notice["summary"] and "the manifest says" in notice["summary"]


def test_an_object_of_another_size_than_the_manifest_is_not_the_dump(harness, source, tmp_path):
    """Cut short on its way into the store (the manifest says more bytes): HEAD tells, before a
    byte is downloaded, that the stored object is not the one the producer wrote: F2
    STORED_OBJECT_MISMATCH, not F5 (the endpoint answered), and no cutover halt."""
    _produce_into(harness, source, KEY, tmp_path)
    stored = harness.bucket_dir / KEY
    stored.write_bytes(stored.read_bytes()[:-100])
    code, verdict = harness.verify(DAY)
    assert code == 1
    [failure] = verdict["failures"]
    assert (failure["code"], failure["name"], failure["severity"]) == (
        "F2",
        "STORED_OBJECT_MISMATCH",
        "P1",
    )
    assert failure["details"]["cause"] == "size_mismatch"
    assert "its manifest says" in failure["summary"] and "not an outage" in failure["summary"]
    assert verdict["cutover_halt"] is None and verdict["restore"] is None
