"""The demo's database shape (skew, planted problems) and `make demo` itself."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from busflow_verify.demo.busflow_db import build_day

@pytest.fixture
def demo_db(source_pg):
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS demo_shape")
        admin.execute("CREATE DATABASE demo_shape")
    with psycopg.connect(**source_pg.conninfo("demo_shape").kwargs(), autocommit=True) as conn:
        yield conn


def test_tenants_are_skewed(demo_db):
    build_day(demo_db, 0)
    sizes = dict(demo_db.execute(
        "SELECT tenant_id, count(*) FROM commerce.bookings GROUP BY 1").fetchall())
    assert sizes[1] > 5 * sizes[20]


def test_mass_delete_drops_messages(demo_db):
    clean = build_day(demo_db, 2)["communications.messages"]
    dropped = build_day(demo_db, 2, planted="mass_delete")["communications.messages"]
    assert dropped < 0.7 * clean


def test_make_demo_verifies_the_newest_date_and_catches_the_planted_problem(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "busflow_verify.demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    newest, planted = proc.stdout.split("=== the date with a planted problem")
    assert ": VERIFIED" in newest
    assert "NOT VERIFIED" in planted and "F3 ORPHAN_FK_SURGE" in planted
    assert "dagster dev -m busflow_verify.definitions" in planted
    assert (tmp_path / ".demo" / "dagster_home").is_dir()
