"""The demo's Busflow-shaped database, its loopback S3 server, and `make demo` itself."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import boto3
import psycopg
import pytest
from botocore.config import Config

from busflow_verify.demo.busflow_db import build_day, write_nightly_dumps
from busflow_verify.demo.s3server import RcloneS3Server

ORPHANS = """SELECT count(*), count(DISTINCT m.tenant_id) FROM communications.messages m
             WHERE m.booking_id IS NOT NULL AND NOT EXISTS
             (SELECT 1 FROM commerce.bookings b WHERE b.id = m.booking_id)"""


@pytest.fixture
def demo_db(source_pg):
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS demo_shape")
        admin.execute("CREATE DATABASE demo_shape")
    with psycopg.connect(**source_pg.conninfo("demo_shape").kwargs(), autocommit=True) as conn:
        yield conn


def test_nights_grow_deterministically(demo_db):
    first = build_day(demo_db, 0)
    later = build_day(demo_db, 6)
    again = build_day(demo_db, 0)
    assert first == again
    for table in ("commerce.bookings", "communications.messages", "operations.service_legs"):
        assert later[table] > first[table]
    assert first["public.tenant_scrub_logs"] == 1


def test_tenants_are_skewed(demo_db):
    build_day(demo_db, 0)
    sizes = dict(demo_db.execute(
        "SELECT tenant_id, count(*) FROM commerce.bookings GROUP BY 1").fetchall())
    assert sizes[1] > 5 * sizes[20]


def test_baseline_orphans_are_few_and_one_tenant_and_the_surge_is_not(demo_db):
    build_day(demo_db, 3)
    orphans, tenants = demo_db.execute(ORPHANS).fetchone()
    assert 0 < orphans < 200 and tenants == 1  # the scrubbed tenant's tombstones
    build_day(demo_db, 3, planted="orphan_surge")
    orphans, tenants = demo_db.execute(ORPHANS).fetchone()
    assert orphans > 200 and tenants > 1


def test_mass_delete_drops_messages(demo_db):
    clean = build_day(demo_db, 2)["communications.messages"]
    dropped = build_day(demo_db, 2, planted="mass_delete")["communications.messages"]
    assert dropped < 0.7 * clean


def test_write_nightly_dumps_writes_real_custom_dumps(tmp_path):
    dates = [dt.date(2026, 11, 19), dt.date(2026, 11, 20)]
    paths = write_nightly_dumps(tmp_path, dates)
    assert [p.name for p in paths] == ["pg_dump_20261119_0100.dump", "pg_dump_20261120_0100.dump"]
    for path in paths:
        assert path.read_bytes()[:5] == b"PGDMP"


def test_s3_server_outage_and_recovery(tmp_path):
    server = RcloneS3Server(tmp_path / "s3", access_key="busflow-outage-test")
    server.start()
    try:
        (server.bucket_dir("b") / "pg_dump_20261120_0100.dump").write_bytes(b"x" * 1234)
        client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                              aws_access_key_id=server.access_key,
                              aws_secret_access_key=server.secret_key,
                              config=Config(s3={"addressing_style": "path"},
                                            retries={"max_attempts": 1}, connect_timeout=2))
        [obj] = client.list_objects_v2(Bucket="b")["Contents"]
        assert (obj["Key"], obj["Size"]) == ("pg_dump_20261120_0100.dump", 1234)
        server.stop()
        with pytest.raises(Exception) as err:
            client.list_objects_v2(Bucket="b")
        assert "Connect" in type(err.value).__name__
        server.restart()
        assert client.head_object(Bucket="b", Key=obj["Key"])["ContentLength"] == 1234
    finally:
        server.stop()


def test_make_demo_verifies_the_newest_date_and_catches_the_planted_problem(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "busflow_verify.demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    newest, planted = proc.stdout.split("=== the date with a planted problem")
    assert ": VERIFIED" in newest
    assert "NOT VERIFIED" in planted and "F3 ORPHAN_FK_SURGE" in planted
    assert "dagster dev -m busflow_verify.definitions" in planted
    assert (tmp_path / ".demo" / "dagster_home").is_dir()
