"""Production's dumps on the default target (issue 14): written by pg_dump 18 with vector and an
HNSW index, by PostgreSQL 15 with pgcrypto and a pg_cron job that must never run against the
copy, with pgsodium (which no server here has), and F1 step 3's deadline from the scrub job.

`make install` puts PostgreSQL 18 with pgcrypto, vector and pg_cron beside Debian's 15
(tools/postgres-newest); a machine without them skips these tests, saying which is missing.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from busflow_verify.core.postgres.cluster import DisposablePostgres
from busflow_verify.core.postgres.privilege import RESTORE_ROLE
from busflow_verify.core.postgres.servers import installed
from busflow_verify.core.restore.restorer import Restorer
from busflow_verify.core.targets.base import RESTORED_DB
from busflow_verify.core.targets.ephemeral import EphemeralTarget
from busflow_verify_tests.conftest import busflow_sql, expected_counts

pytestmark = pytest.mark.e2e

KEY = "pg_dump_20261120_0100.dump"


def server_with(major: int, *extensions: str):
    found = [s for s in installed() if s.major == major and set(extensions) <= s.extensions]
    if not found:
        pytest.skip(f"no PostgreSQL {major} with {', '.join(extensions)} here: run `make install`")
    return found[0]


def dump_of(pg: DisposablePostgres, dbname: str, script: str, out: Path) -> Path:
    with psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {dbname}")
        conn.execute(f"CREATE DATABASE {dbname}")
    with psycopg.connect(**pg.conninfo(dbname).kwargs(), autocommit=True) as conn:
        conn.execute(script)
    dump = out / f"{dbname}.dump"
    subprocess.run(
        [pg.tool("pg_dump"), "-Fc", *pg.conninfo(dbname).libpq_args(), "-f", str(dump)], check=True
    )
    return dump


VECTORS = """
CREATE EXTENSION vector;
ALTER TABLE communications.messages ADD COLUMN embedding vector(3);
UPDATE communications.messages SET embedding = ARRAY[id % 7, id % 11, id % 13]::real[]::vector;
CREATE INDEX messages_embedding ON communications.messages USING hnsw (embedding vector_l2_ops);
"""


def test_a_pg18_dump_with_vector_and_an_hnsw_index_verifies_on_the_default_target(
    harness, tmp_path
):
    server = server_with(18, "vector")
    with DisposablePostgres(bin_dir=str(server.bin_dir)) as pg:
        dump = dump_of(pg, "pg18src", busflow_sql() + VECTORS, tmp_path)
    assert dump.read_bytes()[5:7] == bytes([1, 16])  # archive 1.16: pg_restore 15 cannot read it
    harness.put(KEY, dump)
    code, verdict = harness.verify("2026-11-20")
    assert (code, verdict["verified"]) == (0, True), verdict["failures"]
    assert verdict["row_counts"] == expected_counts()
    restore = verdict["restore"]
    assert restore["archive_version"] == "1.16" and restore["dumped_by"].startswith("18.")
    assert restore["server"]["version"].startswith("18.")
    assert "reads pg_dump 18" in restore["server"]["why"]
    assert restore["extensions_created"] == {"vector": "public"}


SCRUB = """
CREATE EXTENSION pgcrypto;
CREATE EXTENSION pg_cron;
ALTER TABLE commerce.bookings ADD COLUMN card_token text;
UPDATE commerce.bookings SET card_token = encode(digest(id::text, 'sha256'), 'hex');
CREATE TABLE public.cron_trace(at timestamptz);
SELECT cron.schedule('tenant-scrub', '0 4 * * *', 'INSERT INTO public.cron_trace VALUES (now())');
"""


def test_a_pg15_dump_with_pgcrypto_and_a_pg_cron_job_verifies(harness, tmp_path):
    server = server_with(15, "pgcrypto", "pg_cron")
    server_with(18, "pg_cron")
    with DisposablePostgres(
        bin_dir=str(server.bin_dir), cron_database="pg15src", run_cron_jobs=True
    ) as pg:
        dump = dump_of(pg, "pg15src", busflow_sql() + SCRUB, tmp_path)
    harness.put(KEY, dump)
    code, verdict = harness.verify("2026-11-20")
    assert (code, verdict["verified"]) == (0, True), verdict["failures"]
    assert verdict["row_counts"] == {**expected_counts(), "public.cron_trace": 0}
    restore = verdict["restore"]
    assert restore["dumped_by"].startswith("15.") and restore["server"]["version"] >= "18"
    assert restore["cron_jobs"] == [
        {
            "jobname": "tenant-scrub",
            "schedule": "0 4 * * *",
            "database": "pg15src",
            "active": True,
            "command": "INSERT INTO public.cron_trace VALUES (now())",
        }
    ]


def _restored_job_runs(dump: Path) -> int:
    """Restore `dump` on the ephemeral target (its server chosen as in a run), make the restored
    job due every second, wait, and count what it left."""
    target = EphemeralTarget()
    try:
        restorer = Restorer(dump, KEY, None, target.bin_dir, target.scratch_dir()).inspect()
        choice = target.select_server(restorer.needs())
        db = target.open("2026-11-20", "cron-test", choice)
        restorer.attach(db, target.bin_dir, choice)
        restorer.run()
        with psycopg.connect(**db.admin.kwargs(), autocommit=True) as conn:
            conn.execute(
                "SELECT cron.alter_job(jobid, schedule := '1 seconds', "
                "database := %s, username := %s) FROM cron.job",
                (RESTORED_DB, RESTORE_ROLE),
            )
            conn.execute(
                "UPDATE cron.job SET nodename = current_setting('unix_socket_directories'),"
                " nodeport = current_setting('port')::int"
            )  # this cluster, not the source
            time.sleep(4)
            return conn.execute("SELECT count(*) FROM public.cron_trace").fetchone()[0]
    finally:
        target.close()


def test_a_restored_pg_cron_job_never_runs_against_the_copy(tmp_path, monkeypatch):
    """launch_active_jobs = off from the first second: the job, made due every second, leaves no
    trace in 4 s; the same restore with jobs allowed to launch does leave one (the check can
    fail)."""
    server = server_with(18, "pg_cron", "pgcrypto")
    assert server.cron_can_hold_jobs
    with DisposablePostgres(bin_dir=str(server.bin_dir), cron_database="cronsrc") as pg:
        dump = dump_of(pg, "cronsrc", busflow_sql() + SCRUB, tmp_path)
    assert _restored_job_runs(dump) == 0
    original = DisposablePostgres.__init__

    def launching(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "run_cron_jobs": True})

    monkeypatch.setattr(DisposablePostgres, "__init__", launching)
    assert _restored_job_runs(dump) > 0


@pytest.fixture
def pgsodium_for_a_moment():
    """A stand-in pgsodium installed in PostgreSQL 18 for the source's pg_dump, gone before the
    restore (no registry here has pgsodium itself)."""
    server = server_with(18)
    share = server.sharedir / "extension"
    files = [share / "pgsodium.control", share / "pgsodium--3.1.9.sql"]
    files[0].write_text("default_version = '3.1.9'\nrelocatable = false\nschema = pgsodium\n")
    files[1].write_text(
        "CREATE FUNCTION pgsodium.randombytes_random() RETURNS int LANGUAGE sql AS 'SELECT 4';\n"
    )
    try:
        yield server, files
    finally:
        for f in files:
            f.unlink(missing_ok=True)


def test_a_pgsodium_dump_is_an_f2_naming_the_server_and_the_docker_remedy(
    harness, tmp_path, pgsodium_for_a_moment
):
    server, files = pgsodium_for_a_moment
    with DisposablePostgres(bin_dir=str(server.bin_dir)) as pg:
        dump = dump_of(pg, "sodiumsrc", busflow_sql() + "CREATE EXTENSION pgsodium;", tmp_path)
    for f in files:
        f.unlink()
    harness.put(KEY, dump)
    code, verdict = harness.verify("2026-11-20")
    assert code == 1 and verdict["verified"] is False
    [failure] = [f for f in verdict["failures"] if f["code"] == "F2"]
    assert failure["details"]["cause"] == "missing_extension"
    assert failure["details"]["extensions"] == ["pgsodium"]
    summary = failure["summary"]
    assert f"PostgreSQL {server.version}" in summary
    assert (
        "pgsodium is on no PostgreSQL of this machine (it is in no Debian 12 or PyPI package)"
        in summary
    )
    assert "docker target" in summary and "docker/backup/producer.env" in summary


def test_f1_names_the_next_run_of_the_last_verified_dumps_scrub_job(harness, tmp_path):
    server = server_with(18, "pg_cron", "pgcrypto")
    with DisposablePostgres(bin_dir=str(server.bin_dir), cron_database="f1src") as pg:
        dump = dump_of(pg, "f1src", busflow_sql() + SCRUB, tmp_path)
    harness.put("pg_dump_20261119_0100.dump", dump)
    code, verdict = harness.verify("2026-11-19")
    assert (code, verdict["verified"]) == (0, True), verdict["failures"]
    harness.put("pg_dump_20261120_0100.dump", dump)
    harness.write_config(min_bytes=10**9)  # today's dump is "too small": F1 SIZE_SHRUNK
    code, verdict = harness.verify("2026-11-20")
    [f1] = [f for f in verdict["failures"] if f["code"] == "F1"]
    deadline = f1["details"]["scrub_deadline"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT04:00:00Z", deadline["next_run_utc"])
    assert (
        f"Re-run pg_dump before {deadline['next_run_utc']} (UTC): the next run of the pg_cron "
        "scrub job tenant-scrub (0 4 * * *) recorded in the last verified dump (2026-11-19)"
    ) in f1["next_step"]
