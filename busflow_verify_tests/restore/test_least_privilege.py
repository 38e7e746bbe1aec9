"""Least privilege (issue 13): a dump's code runs as an unprivileged restore role, no secret of
the job is in reach of the restore, and a dump that asks for more is a named security finding.

The hostile dumps are made the way production could make them: an unprivileged role creates a
function that runs a shell command (COPY ... TO PROGRAM) when someone other than itself calls it,
and hangs it on a CHECK constraint, a functional index or a materialized view; pg_dump -Fc.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from busflow_verify.core.failures import FindingError
from busflow_verify.core.postgres.cluster import DisposablePostgres
from busflow_verify.core.restore.restorer import Restorer
from busflow_verify_tests.conftest import busflow_sql, expected_counts, restore_database

pytestmark = pytest.mark.e2e

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"
APP = "lp_app"  # production's application role: no superuser
SECRETS = {
    "BACKUP_SECRET_ACCESS_KEY": "s3-secret-do-not-leak",
    "SLACK_OPS_WEBHOOK": "https://hooks.slack.invalid/services/T0/B0/do-not-leak",
}

HOSTILE = """
CREATE SCHEMA s;
CREATE FUNCTION s.payload() RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  -- cat reads the row it is sent (touch would not, and COPY could then fail on a broken pipe)
  IF {condition} THEN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''cat > {canary}'''; END IF;
END $$;
CREATE FUNCTION s.looks_harmless(x int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  EXECUTE 'SELECT s.payload()';
  RETURN x IS NOT NULL;
END $$;
CREATE TABLE s.t(id int PRIMARY KEY, v int {check});
INSERT INTO s.t SELECT g, g FROM generate_series(1, 50) g;
{extra}
"""
SHAPES = {  # where the function hangs, and the object the finding must name
    "check_constraint": ({"check": "CHECK (s.looks_harmless(v))"}, "TABLE DATA s.t"),
    "functional_index": (
        {"extra": "CREATE INDEX t_probe ON s.t (s.looks_harmless(v));"},
        "INDEX s.t_probe",
    ),
    "materialized_view": (
        {"extra": "CREATE MATERIALIZED VIEW s.mv AS SELECT id FROM s.t WHERE s.looks_harmless(v);"},
        "MATERIALIZED VIEW DATA s.mv",
    ),
}
# Runs when anyone but production's own role calls it: the restore role trips over it.
NOT_PRODUCTION = f"current_user <> '{APP}'"
# Runs only for a superuser, as a patient attacker would write it: nothing to see, nothing runs.
ONLY_SUPERUSER = "current_setting('is_superuser') = 'on'"


@pytest.fixture
def canary():
    """A file the server's OS user could create if a dump's shell command ran (a folder it may
    write to), removed after the test."""
    folder = Path(tempfile.mkdtemp(prefix="busflow-canary-"))
    folder.chmod(0o777)
    path = folder / "ran"
    yield path
    path.unlink(missing_ok=True)
    folder.rmdir()


def hostile_dump(
    pg: DisposablePostgres, out: Path, shape: str, condition: str, canary: Path
) -> Path:
    """A database built by the unprivileged APP role, and its pg_dump -Fc."""
    params, _ = SHAPES[shape]
    dbname = f"lp_{shape}_{'su' if condition == ONLY_SUPERUSER else 'np'}"
    with psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute(
            f"DO $$ BEGIN CREATE ROLE {APP} LOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dbname), sql.Identifier(APP)
            )
        )
    app = pg.conninfo(dbname)
    app.user = APP
    script = HOSTILE.format(
        condition=condition, canary=canary, **{"check": "", "extra": "", **params}
    )
    with psycopg.connect(**app.kwargs(), autocommit=True) as conn:
        conn.execute(script)
    dump = out / f"{dbname}.dump"
    subprocess.run(
        [pg.tool("pg_dump"), "-Fc", *pg.conninfo(dbname).libpq_args(), "-f", str(dump)], check=True
    )
    return dump


def test_the_canary_is_real(source_pg, tmp_path, canary):
    """The hostile function does run a shell command on the host when a superuser calls it: the
    check below could fail."""
    hostile_dump(source_pg, tmp_path, "functional_index", NOT_PRODUCTION, canary)
    with psycopg.connect(**source_pg.conninfo("lp_functional_index_np").kwargs()) as conn:
        conn.execute("SELECT s.looks_harmless(1)")
    assert canary.exists()


@pytest.mark.parametrize("shape", SHAPES)
def test_a_dump_whose_code_asks_for_superuser_is_a_named_security_finding(
    harness, source_pg, tmp_path, canary, shape
):
    harness.put(KEY, hostile_dump(source_pg, tmp_path, shape, NOT_PRODUCTION, canary))
    code, verdict = harness.verify(DAY)
    assert not canary.exists(), "the dump's shell command ran on the verify host"
    assert code == 1 and verdict["verified"] is False
    [failure] = [f for f in verdict["failures"] if f["code"] == "F2"]
    details = failure["details"]
    assert details["cause"] == "insufficient_privilege"
    assert details["object"] == SHAPES[shape][1]
    assert details["functions"] == ["s.payload()", "s.looks_harmless(integer)"]
    assert "COPY to or from an external program" in details["message"]  # 15 and 18 word it apart
    assert failure["severity"] == "P1"
    assert failure["escalate_to"] == ["@infra-oncall", "@data-oncall", "@security-oncall"]
    assert SHAPES[shape][1] in failure["summary"] and "security event" in failure["summary"]


def test_code_that_waits_for_a_superuser_never_gets_one(harness, source_pg, tmp_path, canary):
    """A function that runs its command only for a superuser finds none: the dump restores and
    verifies, and nothing ran."""
    harness.put(KEY, hostile_dump(source_pg, tmp_path, "functional_index", ONLY_SUPERUSER, canary))
    harness.write_config(
        allowlist={"soft_fks": [{"child": "s.t.v", "parent": "s.t.id", "max_orphans": 0}]}
    )
    code, verdict = harness.verify(DAY)
    assert not canary.exists()
    assert (code, verdict["verified"]) == (0, True), verdict["failures"]
    assert verdict["restore"]["restore_role"] == "busflow_restore"
    assert verdict["row_counts"]["s.t"] == 50


CLEAN_EXTRAS = """
CREATE FUNCTION commerce.cents(x int) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT x / 100.0';
CREATE INDEX bookings_euros ON commerce.bookings (commerce.cents(amount_cents));
CREATE MATERIALIZED VIEW commerce.tenant_totals AS
    SELECT tenant_id, sum(commerce.cents(amount_cents)) AS euros FROM commerce.bookings GROUP BY 1;
CREATE TABLE commerce.audit(booking_id bigint, at timestamptz DEFAULT now());
CREATE FUNCTION commerce.audit_booking() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO commerce.audit(booking_id) VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER audit_booking AFTER INSERT ON commerce.bookings
    FOR EACH ROW EXECUTE FUNCTION commerce.audit_booking();
ALTER TABLE communications.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE communications.messages FORCE ROW LEVEL SECURITY;
CREATE POLICY nobody ON communications.messages USING (false);
ALTER TABLE commerce.bookings ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_one ON commerce.bookings USING (tenant_id = 1);
CREATE EXTENSION IF NOT EXISTS pgcrypto;
"""


def test_a_clean_dump_with_functions_matviews_rls_and_triggers_verifies_exactly(
    harness, source_pg, tmp_path
):
    """Row-level security (FORCE included) hides no rows from the counts or the sweep, and
    functions, a functional index, a materialized view and a trigger restore as the owner."""
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS lp_clean")
        conn.execute("CREATE DATABASE lp_clean")
    with psycopg.connect(**source_pg.conninfo("lp_clean").kwargs(), autocommit=True) as conn:
        conn.execute(busflow_sql() + CLEAN_EXTRAS)
    dump = tmp_path / KEY
    subprocess.run(
        [
            source_pg.tool("pg_dump"),
            "-Fc",
            *source_pg.conninfo("lp_clean").libpq_args(),
            "-f",
            str(dump),
        ],
        check=True,
    )
    harness.put(KEY, dump)
    code, verdict = harness.verify(DAY)
    assert (code, verdict["verified"]) == (0, True), verdict
    assert verdict["row_counts"] == {**expected_counts(), "commerce.audit": 0}
    assert [o["orphans"] for o in verdict["orphans"]] == [7]
    assert verdict["restore"]["extensions_created"] == {"pgcrypto": "public"}


def test_no_secret_of_the_job_reaches_the_server_or_the_restore_tools(
    source_pg, make_dump, tmp_path, monkeypatch
):
    """The disposable server (read from /proc/<postmaster>/environ) and pg_restore (a wrapper
    that records its environment, then runs the real one) start from the allow-list."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in source_pg.bin_dir.iterdir():
        (tools / tool.name).symlink_to(tool)
    (tools / "pg_restore").unlink()
    (tools / "pg_restore").write_text(
        f'#!/bin/sh\nenv >> {tmp_path}/pg_restore.env\nexec {source_pg.bin_dir}/pg_restore "$@"\n'
    )
    (tools / "pg_restore").chmod(0o755)
    with DisposablePostgres(bin_dir=str(source_pg.bin_dir)) as pg:
        pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        server_env = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        db = restore_database(pg, "lp_env")
        Restorer(make_dump(), KEY, db, tools, tmp_path, jobs=2).run()
    restore_env = (tmp_path / "pg_restore.env").read_text()
    assert "PATH=" in server_env and "PATH=" in restore_env
    for name, value in SECRETS.items():
        assert name not in server_env and value not in server_env
        assert name not in restore_env and value not in restore_env


def test_an_extension_outside_the_allow_list_is_refused_by_name(source_pg, tmp_path):
    """file_fdw reads the server's files: neither trusted nor in producer.env, so it is not
    created and nothing is restored."""
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS lp_fdw")
        conn.execute("CREATE DATABASE lp_fdw")
    with psycopg.connect(**source_pg.conninfo("lp_fdw").kwargs(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION file_fdw; CREATE TABLE t(id int)")
    dump = tmp_path / "fdw.dump"
    subprocess.run(
        [
            source_pg.tool("pg_dump"),
            "-Fc",
            *source_pg.conninfo("lp_fdw").libpq_args(),
            "-f",
            str(dump),
        ],
        check=True,
    )
    db = restore_database(source_pg, "lp_fdw_restored")
    restorer = Restorer(dump, KEY, db, source_pg.bin_dir, tmp_path)
    with pytest.raises(FindingError) as err:
        restorer.run()
    details = err.value.finding.details
    assert (details["cause"], details["extensions"]) == ("extension_not_allowed", ["file_fdw"])
    assert "docker/backup/producer.env" in err.value.finding.summary
    assert restorer.report.sections == []
    with psycopg.connect(**db.admin.kwargs()) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'file_fdw'"
        ).fetchone() == (0,)


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT 1) TO PROGRAM 'cat > {canary}';",
        "SELECT pg_catalog.lo_export(pg_catalog.lo_import('/etc/hostname'), '{canary}');",
        "COPY commerce.bookings FROM '/etc/hostname';",
    ],
)
def test_a_plain_dump_reaching_outside_the_database_is_refused_before_anything_runs(
    make_dump, source_pg, tmp_path, canary, statement
):
    text = make_dump(fmt="plain").read_text()
    evil = tmp_path / "evil.sql"
    evil.write_text(
        text.replace(
            "SET statement_timeout = 0;",
            "SET statement_timeout = 0;\n" + statement.format(canary=canary),
            1,
        )
    )
    db = restore_database(source_pg, "lp_plain_" + str(abs(hash(statement)) % 10_000))
    with pytest.raises(FindingError) as err:
        Restorer(evil, KEY, db, source_pg.bin_dir, tmp_path).run()
    details = err.value.finding.details
    assert details["cause"] == "unsafe_plain_dump"
    assert details["line"] == text.splitlines().index("SET statement_timeout = 0;") + 2
    assert not canary.exists()
    with psycopg.connect(**db.owner.kwargs()) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'commerce'"
        ).fetchone() == (0,)


def test_the_restore_role_has_no_server_rights(source_pg):
    db = restore_database(source_pg, "lp_rights")
    with psycopg.connect(**db.owner.kwargs()) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, "
            "pg_has_role(current_user, 'pg_execute_server_program', 'USAGE'), "
            "pg_has_role(current_user, 'pg_read_server_files', 'USAGE'), "
            "pg_has_role(current_user, 'pg_write_server_files', 'USAGE') "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()[0]
    assert row == (False, False, False, False, True, False, False, False)
    assert owner == db.owner.user
