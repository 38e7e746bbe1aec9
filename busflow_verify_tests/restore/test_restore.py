"""F2 on real dumps made by pg_dump: formats, preflight, unsafe plain dumps, COPY failures."""

from __future__ import annotations

import gzip
import subprocess
import tarfile
import uuid
from pathlib import Path

import psycopg
import pytest

from busflow_verify.core.failures import FindingError
from busflow_verify.core.postgres.cluster import DisposablePostgres
from busflow_verify.core.restore.restorer import Restorer
from busflow_verify.core.targets.server import ServerTarget
from busflow_verify_tests.conftest import restore_database, restore_server_conninfo

pytestmark = pytest.mark.e2e

KEY = "pg_dump_20261120_0100.dump"
SOURCE_SQL = """
CREATE SCHEMA commerce; CREATE SCHEMA ledger;
DO $$ BEGIN CREATE ROLE busflow_app NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE TABLE commerce.bookings(id bigint PRIMARY KEY, amount int, note text);
INSERT INTO commerce.bookings SELECT g, g * 10, 'n' || g FROM generate_series(1, 1000) g;
ALTER TABLE commerce.bookings OWNER TO busflow_app;
CREATE TABLE ledger.bookings(id bigint PRIMARY KEY);
INSERT INTO ledger.bookings SELECT generate_series(1, 10);
CREATE EXTENSION pgcrypto;
ALTER SCHEMA commerce OWNER TO busflow_app; ALTER SCHEMA ledger OWNER TO busflow_app;
ALTER TABLE ledger.bookings OWNER TO busflow_app;
"""
ROW_500 = b"500\t5000\tn500"


@pytest.fixture(scope="module")
def source(source_pg, tmp_path_factory):
    """A source database and a folder of its dumps in every format, uncompressed (-Z0) so a row
    can be corrupted in place at a known line."""
    out = tmp_path_factory.mktemp("f2dumps")
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS f2src")
        conn.execute("CREATE DATABASE f2src")
    with psycopg.connect(**source_pg.conninfo("f2src").kwargs(), autocommit=True) as conn:
        conn.execute(SOURCE_SQL)
    args = [source_pg.tool("pg_dump"), *source_pg.conninfo("f2src").libpq_args(), "-Z0"]
    for fmt, name in (("c", "custom.dump"), ("p", "plain.sql"), ("t", "tar.dump"), ("d", "dir")):
        subprocess.run([*args, f"-F{fmt}", "-f", str(out / name)], check=True)
    with tarfile.open(out / "dir.tar", "w") as tar:
        tar.add(out / "dir", arcname="pg_dump_20261120_0100")
    with open(out / "plain.sql", "rb") as src, gzip.open(out / "plain.sql.gz", "wb") as dst:
        dst.write(src.read())
    return out


@pytest.fixture(scope="module")
def target_pg():
    """The restore target: a cluster of its own, so it has none of the source's roles."""
    with DisposablePostgres() as pg:
        yield pg


@pytest.fixture(params=["ephemeral", "server"])
def target(request):
    """An empty database to restore into, fresh for each test, owned by an unprivileged restore
    role, on each restore target: `ephemeral`, a cluster of the test's own; `server`, a scratch
    database made by the server target on the shared restore server (its restore role has a
    password), dropped with its role after the test."""
    if request.param == "server":
        server = ServerTarget(restore_server_conninfo(request.getfixturevalue("restore_server")))
        yield server.open("2026-11-20", uuid.uuid4().hex)
        server.close()
        return
    target_pg = request.getfixturevalue("target_pg")
    name = "t_" + request.node.name[:40].lower().replace("[", "_").replace("]", "")
    yield restore_database(target_pg, name)


def restore(path: Path, target, source_pg, tmp_path):
    restorer = Restorer(path, KEY, target, source_pg.bin_dir, tmp_path, jobs=2)
    return restorer, restorer.run


def tables_in(db) -> list[str]:
    with psycopg.connect(**db.owner.kwargs()) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
            )
        ]


def count(db, table: str) -> int:
    with psycopg.connect(**db.owner.kwargs()) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.mark.parametrize(
    "name, kind, sections",
    [
        ("custom.dump", "custom", ["pre-data", "data", "post-data"]),
        ("tar.dump", "tar", ["pre-data", "data", "post-data"]),
        ("dir.tar", "directory_tar", ["pre-data", "data", "post-data"]),
        ("plain.sql", "plain", ["plain"]),
        ("plain.sql.gz", "plain_gzip", ["plain"]),
    ],
)
def test_every_pg_dump_format_restores(source, source_pg, target, tmp_path, name, kind, sections):
    _, run = restore(source / name, target, source_pg, tmp_path)
    report = run()
    assert report.format == kind
    assert [s.section for s in report.sections] == sections
    assert count(target, "commerce.bookings") == 1000
    assert count(target, "ledger.bookings") == 10
    assert "pgcrypto" in report.extensions


def test_custom_archive_records_version_and_writer(source, source_pg, target, tmp_path):
    report = restore(source / "custom.dump", target, source_pg, tmp_path)[1]()
    major = source_pg.major_version()
    assert report.archive_version == {15: "1.14", 16: "1.15"}.get(major, "1.16")
    assert report.dumped_by.startswith(f"{major}.")
    assert report.toc_entries > 5


def owners(db, schema: str) -> set[str]:
    with psycopg.connect(**db.owner.kwargs()) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = %s", (schema,)
            )
        }


@pytest.mark.parametrize("name", ["custom.dump", "plain.sql"])
def test_everything_is_owned_by_the_restore_role_and_no_role_is_made(
    source, source_pg, target, tmp_path, name
):
    """The source gives its tables to busflow_app; the restore gives them to the unprivileged
    restore role instead (archives: --no-owner; plain dumps: OWNER TO left out) and creates no
    role of the dump's."""
    report = restore(source / name, target, source_pg, tmp_path)[1]()
    assert owners(target, "commerce") == owners(target, "ledger") == {target.owner.user}
    assert report.restore_role == target.owner.user
    with psycopg.connect(**target.admin.kwargs()) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'busflow_app'"
        ).fetchone() == (0,)
    if name == "plain.sql":
        left_out = {e["kind"] for e in report.left_out}
        assert {"owner", "extension"} <= left_out, report.left_out
    else:
        assert {
            "entry": "EXTENSION pgcrypto",
            "reason": "created by the administrative step before the restore",
        } in report.left_out


def test_a_plain_dump_of_the_source_superuser_restores_on_a_shared_server(
    source_pg, restore_server, tmp_path
):
    """OWNER TO postgres (the source's superuser) is left out, so such a plain dump restores
    without the restore role ever taking on a superuser; its role is dropped with the database."""
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS pgownsrc")
        conn.execute("CREATE DATABASE pgownsrc")
    with psycopg.connect(**source_pg.conninfo("pgownsrc").kwargs(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE owned_by_superuser(id int); INSERT INTO owned_by_superuser VALUES (1)"
        )
    dump = tmp_path / "superuser.sql"
    subprocess.run(
        [
            source_pg.tool("pg_dump"),
            "-Fp",
            *source_pg.conninfo("pgownsrc").libpq_args(),
            "-f",
            str(dump),
        ],
        check=True,
    )
    assert "OWNER TO postgres;" in dump.read_text()
    server = ServerTarget(restore_server_conninfo(restore_server))
    try:
        db = server.open("2026-11-20", uuid.uuid4().hex)
        restore(dump, db, source_pg, tmp_path)[1]()
        assert count(db, "public.owned_by_superuser") == 1
        assert owners(db, "public") == {db.owner.user}
    finally:
        server.close()
    with psycopg.connect(**restore_server.conninfo().kwargs()) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = %s", (db.owner.user,)
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (db.dbname,)
        ).fetchone() == (0,)


def test_copy_failure_names_schema_table_line_and_column(source, source_pg, target, tmp_path):
    data = (source / "custom.dump").read_bytes()
    assert data.count(ROW_500) == 1
    bad = tmp_path / "bad.dump"
    bad.write_bytes(data.replace(ROW_500, b"500\t50x0\tn500"))
    with pytest.raises(FindingError) as err:
        restore(bad, target, source_pg, tmp_path)[1]()
    finding = err.value.finding.to_dict()
    assert finding["details"]["cause"] == "copy_failed"
    assert finding["details"]["table"] == "commerce.bookings"  # not ledger.bookings
    assert finding["details"]["line"] == 500
    assert finding["details"]["column"] == "amount"
    assert finding["severity"] == "P1"
    assert "PITR" in finding["next_step"] and "Ubicloud" in finding["next_step"]
    assert finding["details"]["section"] == "data"


def test_copy_failure_in_a_plain_dump(source, source_pg, target, tmp_path):
    bad = tmp_path / "bad.sql"
    bad.write_bytes((source / "plain.sql").read_bytes().replace(ROW_500, b"500\t50x0\tn500"))
    with pytest.raises(FindingError) as err:
        restore(bad, target, source_pg, tmp_path)[1]()
    details = err.value.finding.details
    assert (details["cause"], details["table"], details["line"]) == (
        "copy_failed",
        "commerce.bookings",
        500,
    )


def test_truncated_archive(source, source_pg, target, tmp_path):
    data = (source / "custom.dump").read_bytes()
    cut = tmp_path / "cut.dump"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FindingError) as err:
        restore(cut, target, source_pg, tmp_path)[1]()
    finding = err.value.finding
    assert finding.details["cause"] == "truncated"
    assert finding.to_dict()["severity"] == "P1"


def test_newer_archive_version_is_a_version_mismatch_naming_both(
    source, source_pg, target, tmp_path
):
    data = bytearray((source / "custom.dump").read_bytes())
    data[6] = 17  # archive 1.17: newer than any pg_dump this machine has (18 writes 1.16)
    newer = tmp_path / "newer.dump"
    newer.write_bytes(bytes(data))
    with pytest.raises(FindingError) as err:
        restore(newer, target, source_pg, tmp_path)[1]()
    details = err.value.finding.details
    assert details["cause"] == "version_mismatch"
    assert details["archive_version"] == "1.17"
    ours = f"pg_restore (PostgreSQL) {source_pg.major_version()}"
    assert ours in details["pg_restore"]
    assert "1.17" in err.value.finding.summary and ours in err.value.finding.summary
    assert tables_in(target) == []


def test_plain_dump_with_a_shell_escape_is_refused_and_nothing_runs(
    source, source_pg, target, tmp_path
):
    marker = tmp_path / "pwned"
    text = (source / "plain.sql").read_text()
    evil = tmp_path / "evil.sql"
    evil.write_text(
        text.replace("CREATE SCHEMA commerce;", f"CREATE SCHEMA commerce;\n\\! touch {marker}\n", 1)
    )
    with pytest.raises(FindingError) as err:
        restore(evil, target, source_pg, tmp_path)[1]()
    details = err.value.finding.details
    assert (details["cause"], details["command"]) == ("unsafe_plain_dump", "\\!")
    assert not marker.exists()
    assert tables_in(target) == []


@pytest.fixture
def vanishing_extension(source_pg):
    """A real extension installed for the source's pg_dump and gone before the restore; named
    per test, as tests in other workers share the server's extension folder."""
    share = (
        Path(
            subprocess.run(
                [str(source_pg.bin_dir / "pg_config"), "--sharedir"], capture_output=True, text=True
            ).stdout.strip()
        )
        / "extension"
    )
    name = f"busflow_probe_{uuid.uuid4().hex[:8]}"
    files = [share / f"{name}.control", share / f"{name}--1.0.sql"]
    files[0].write_text("default_version = '1.0'\nrelocatable = true\n")
    files[1].write_text(f"CREATE FUNCTION {name}() RETURNS int LANGUAGE sql AS 'SELECT 1';\n")
    try:
        yield name, files
    finally:
        for f in files:
            f.unlink(missing_ok=True)


@pytest.mark.parametrize("fmt", ["c", "p"])
def test_missing_extension_fails_before_anything_is_restored(
    source_pg, target, tmp_path, vanishing_extension, fmt
):
    name, files = vanishing_extension
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS extsrc")
        conn.execute("CREATE DATABASE extsrc")
    with psycopg.connect(**source_pg.conninfo("extsrc").kwargs(), autocommit=True) as conn:
        conn.execute(f"CREATE EXTENSION {name}; CREATE TABLE t(id int); INSERT INTO t VALUES (1)")
    dump = tmp_path / f"ext.{fmt}"
    subprocess.run(
        [
            source_pg.tool("pg_dump"),
            f"-F{fmt}",
            *source_pg.conninfo("extsrc").libpq_args(),
            "-f",
            str(dump),
        ],
        check=True,
    )
    for f in files:
        f.unlink()
    restorer, run = restore(dump, target, source_pg, tmp_path)
    with pytest.raises(FindingError) as err:
        run()
    finding = err.value.finding.to_dict()
    assert finding["details"]["cause"] == "missing_extension"
    assert finding["details"]["extensions"] == [name]
    assert "docker/backup/producer.env" in finding["summary"]
    assert restorer.report.sections == []  # nothing was restored
    assert tables_in(target) == []
