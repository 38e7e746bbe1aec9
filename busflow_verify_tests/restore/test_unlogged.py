"""The split-section restore loads the throwaway target's tables UNLOGGED (no WAL for the rows),
and leaves them logged where a table must stay logged, the restore passing either way."""

from __future__ import annotations

import subprocess

import psycopg
import pytest
from psycopg import sql

from busflow_verify.core.restore.restorer import Restorer
from busflow_verify_tests.conftest import restore_database

pytestmark = pytest.mark.e2e

KEY = "pg_dump_20261120_0100.dump"
BASE = """
CREATE SCHEMA commerce;
CREATE TABLE commerce.bookings(id bigint PRIMARY KEY, tenant_id int);
INSERT INTO commerce.bookings SELECT g, g % 3 FROM generate_series(1, 500) g;
CREATE TABLE commerce.messages(id bigint PRIMARY KEY,
                               booking_id bigint REFERENCES commerce.bookings);
INSERT INTO commerce.messages SELECT g, 1 + g % 500 FROM generate_series(1, 800) g;
"""
EXTRA = {
    "ordinary": ("", None),
    # a logged (partitioned) table whose foreign key references an ordinary table
    "partitioned": (
        """
        CREATE TABLE commerce.events(id bigint, booking_id bigint REFERENCES commerce.bookings)
            PARTITION BY RANGE (id);
        CREATE TABLE commerce.events_1 PARTITION OF commerce.events FOR VALUES FROM (0) TO (100);
        INSERT INTO commerce.events VALUES (1, 1), (2, 2);""",
        "partitioned tables",
    ),
    "published": ("CREATE PUBLICATION busflow_cdc FOR TABLE commerce.bookings;", "publication"),
}


def _database(pg, name: str) -> None:
    with psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@pytest.mark.parametrize("case", EXTRA)
def test_tables_are_loaded_unlogged_unless_one_must_stay_logged(source_pg, tmp_path, case):
    extra, reason = EXTRA[case]
    _database(source_pg, f"unlog_src_{case}")
    with psycopg.connect(
        **source_pg.conninfo(f"unlog_src_{case}").kwargs(), autocommit=True
    ) as conn:
        conn.execute(BASE + extra)
    dump = tmp_path / KEY
    subprocess.run(
        [
            source_pg.tool("pg_dump"),
            "-Fc",
            "-f",
            str(dump),
            *source_pg.conninfo(f"unlog_src_{case}").libpq_args(),
        ],
        check=True,
    )
    db = restore_database(source_pg, f"unlog_dst_{case}")
    report = Restorer(dump, KEY, db, source_pg.bin_dir, tmp_path, jobs=2).run()
    with psycopg.connect(**db.owner.kwargs()) as conn:
        persistence = conn.execute(
            "SELECT relpersistence FROM pg_class WHERE oid = 'commerce.bookings'::regclass"
        ).fetchone()[0]
        messages = conn.execute("SELECT count(*) FROM commerce.messages").fetchone()[0]
    assert [s.section for s in report.sections if s.ok] == ["pre-data", "data", "post-data"]
    assert messages == 800
    assert report.maintenance_work_mem.endswith(("MB", "GB"))  # the index builds' memory
    if reason is None:
        assert (report.unlogged_tables, report.kept_logged, persistence) == (2, None, "u")
    else:
        assert report.unlogged_tables == 0 and reason in report.kept_logged
        assert persistence == "p"
