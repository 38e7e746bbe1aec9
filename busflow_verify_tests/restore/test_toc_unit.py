"""The archive's table of contents from captured `pg_restore -l` listings, the -L list the restore
role runs from, and the CREATE EXTENSION lines pg_restore prints. No server, no pg_restore.

pg_restore -l prints "id; tableoid oid desc schema tag owner" (schema "-" when none; the owner
empty, so the line ends in a space, for EXTENSION entries and their comments)."""

from __future__ import annotations

import pytest

from busflow_verify.core.restore.toc import extension_schemas, parse_entry, parse_toc, unquote

LISTING = """\
;
; Archive created at 2026-11-20 01:00:03 UTC
;     dbname: busflow
;     TOC Entries: 22
;     Compression: gzip
;     Dump Version: 1.15-0
;     Format: CUSTOM
;     Integer: 4 bytes
;     Offset: 8 bytes
;     Dumped from database version: 15.8
;     Dumped by pg_dump version: 15.8
;
;
; Selected TOC Entries:
;
5; 2615 16386 SCHEMA - commerce postgres
6; 2615 16387 SCHEMA - extensions postgres
7; 2615 16388 SCHEMA - communications postgres
2; 3079 16389 EXTENSION - pgcrypto 
4321; 0 0 COMMENT - EXTENSION pgcrypto 
3; 3079 16390 EXTENSION - vector 
4322; 0 0 COMMENT - EXTENSION vector 
216; 1259 16400 TABLE commerce bookings postgres
217; 1259 16410 TABLE communications messages postgres
218; 1259 16420 SEQUENCE commerce bookings_id_seq postgres
219; 0 0 SEQUENCE OWNED BY commerce bookings_id_seq postgres
220; 1259 16430 MATERIALIZED VIEW commerce daily_totals postgres
3350; 0 16400 TABLE DATA commerce bookings postgres
3351; 0 16410 TABLE DATA communications messages postgres
3370; 0 0 SEQUENCE SET commerce bookings_id_seq postgres
3200; 2606 16440 CONSTRAINT commerce bookings bookings_pkey postgres
3201; 1259 16450 INDEX communications messages_booking_id_idx postgres
3210; 2606 16460 FK CONSTRAINT communications messages messages_booking_id_fkey postgres
3380; 826 16470 DEFAULT ACL commerce DEFAULT PRIVILEGES FOR TABLES postgres
3390; 3466 16480 EVENT TRIGGER - audit_ddl postgres
3391; 0 0 COMMENT - EVENT TRIGGER audit_ddl postgres
3400; 0 16430 MATERIALIZED VIEW DATA commerce daily_totals postgres
"""


# -- one entry ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rest, desc, schema, tag",
    [
        ("SCHEMA - commerce postgres", "SCHEMA", "-", "commerce"),
        ("TABLE commerce bookings postgres", "TABLE", "commerce", "bookings"),
        ("TABLE DATA commerce bookings postgres", "TABLE DATA", "commerce", "bookings"),
        (
            "MATERIALIZED VIEW commerce daily_totals postgres",
            "MATERIALIZED VIEW",
            "commerce",
            "daily_totals",
        ),
        # the longest desc wins: not MATERIALIZED VIEW with the tag "DATA commerce ..."
        (
            "MATERIALIZED VIEW DATA commerce daily_totals postgres",
            "MATERIALIZED VIEW DATA",
            "commerce",
            "daily_totals",
        ),
        (
            "FK CONSTRAINT communications messages messages_booking_id_fkey postgres",
            "FK CONSTRAINT",
            "communications",
            "messages messages_booking_id_fkey",
        ),
        (
            "CONSTRAINT commerce bookings bookings_pkey postgres",
            "CONSTRAINT",
            "commerce",
            "bookings bookings_pkey",
        ),
        (
            "CHECK CONSTRAINT commerce bookings amount_positive postgres",
            "CHECK CONSTRAINT",
            "commerce",
            "bookings amount_positive",
        ),
        ("SEQUENCE commerce bookings_id_seq postgres", "SEQUENCE", "commerce", "bookings_id_seq"),
        (
            "SEQUENCE SET commerce bookings_id_seq postgres",
            "SEQUENCE SET",
            "commerce",
            "bookings_id_seq",
        ),
        (
            "SEQUENCE OWNED BY commerce bookings_id_seq postgres",
            "SEQUENCE OWNED BY",
            "commerce",
            "bookings_id_seq",
        ),
        (
            "DEFAULT ACL commerce DEFAULT PRIVILEGES FOR TABLES postgres",
            "DEFAULT ACL",
            "commerce",
            "DEFAULT PRIVILEGES FOR TABLES",
        ),
        (
            "DEFAULT ACL - DEFAULT PRIVILEGES FOR SEQUENCES app_owner",
            "DEFAULT ACL",
            "-",
            "DEFAULT PRIVILEGES FOR SEQUENCES",
        ),
        # the owner is empty: the line ends in the separating space
        ("EXTENSION - pgcrypto ", "EXTENSION", "-", "pgcrypto"),
        ("COMMENT - EXTENSION pgcrypto ", "COMMENT", "-", "EXTENSION pgcrypto"),
        ("COMMENT - EXTENSION vector ", "COMMENT", "-", "EXTENSION vector"),
        # ... or the trailing space was lost (a hand-edited list): the tag is still read
        ("EXTENSION - pgcrypto", "EXTENSION", "-", "pgcrypto"),
        ("COMMENT commerce TABLE bookings postgres", "COMMENT", "commerce", "TABLE bookings"),
        (
            "COMMENT commerce COLUMN bookings.amount_cents postgres",
            "COMMENT",
            "commerce",
            "COLUMN bookings.amount_cents",
        ),
        ("EVENT TRIGGER - audit_ddl postgres", "EVENT TRIGGER", "-", "audit_ddl"),
        ("COMMENT - EVENT TRIGGER audit_ddl postgres", "COMMENT", "-", "EVENT TRIGGER audit_ddl"),
        ("PUBLICATION - busflow_pub postgres", "PUBLICATION", "-", "busflow_pub"),
        (
            "PUBLICATION TABLE commerce busflow_pub bookings postgres",
            "PUBLICATION TABLE",
            "commerce",
            "busflow_pub bookings",
        ),
        (
            "INDEX ATTACH commerce bookings_2026_pkey postgres",
            "INDEX ATTACH",
            "commerce",
            "bookings_2026_pkey",
        ),
        ("ROW SECURITY commerce bookings postgres", "ROW SECURITY", "commerce", "bookings"),
        (
            "POLICY commerce bookings tenant_isolation postgres",
            "POLICY",
            "commerce",
            "bookings tenant_isolation",
        ),
        ("ACL - SCHEMA public pg_database_owner", "ACL", "-", "SCHEMA public"),
        ("FUNCTION public exfiltrate() postgres", "FUNCTION", "public", "exfiltrate()"),
        ("LARGE OBJECTS - 16500..16510 postgres", "LARGE OBJECTS", "-", "16500..16510"),
    ],
)
def test_parse_entry_reads_multi_word_descs_and_tags(rest, desc, schema, tag):
    assert parse_entry(rest) == (desc, schema, tag)


@pytest.mark.parametrize(
    "ident, name",
    [
        ("pgcrypto", "pgcrypto"),
        ('"uuid-ossp"', "uuid-ossp"),
        ('"My ""odd"" schema"', 'My "odd" schema'),
    ],
)
def test_unquote(ident, name):
    assert unquote(ident) == name


# -- the whole listing -------------------------------------------------------------------------
def test_parse_toc_skips_the_header_and_keeps_every_entry_line():
    toc = parse_toc(LISTING)
    entry_lines = [ln for ln in LISTING.splitlines() if ln and not ln.startswith(";")]
    assert [e.line for e in toc.entries] == entry_lines
    assert len(toc.entries) == 22


@pytest.mark.parametrize(
    "dump_id, desc, schema, name, label",
    [
        (5, "SCHEMA", "-", "commerce", "SCHEMA commerce"),
        (2, "EXTENSION", "-", "pgcrypto", "EXTENSION pgcrypto"),
        (4321, "COMMENT", "-", "EXTENSION pgcrypto", "COMMENT EXTENSION pgcrypto"),
        (3350, "TABLE DATA", "commerce", "bookings", "TABLE DATA commerce.bookings"),
        (
            3400,
            "MATERIALIZED VIEW DATA",
            "commerce",
            "daily_totals",
            "MATERIALIZED VIEW DATA commerce.daily_totals",
        ),
        (
            3210,
            "FK CONSTRAINT",
            "communications",
            "messages messages_booking_id_fkey",
            "FK CONSTRAINT communications.messages messages_booking_id_fkey",
        ),
        (
            3370,
            "SEQUENCE SET",
            "commerce",
            "bookings_id_seq",
            "SEQUENCE SET commerce.bookings_id_seq",
        ),
        (
            3380,
            "DEFAULT ACL",
            "commerce",
            "DEFAULT PRIVILEGES FOR TABLES",
            "DEFAULT ACL commerce.DEFAULT PRIVILEGES FOR TABLES",
        ),
        (3391, "COMMENT", "-", "EVENT TRIGGER audit_ddl", "COMMENT EVENT TRIGGER audit_ddl"),
    ],
)
def test_parse_toc_entries_and_labels(dump_id, desc, schema, name, label):
    entry = parse_toc(LISTING).entry(dump_id)
    assert (entry.desc, entry.schema, entry.name, entry.label) == (desc, schema, name, label)


def test_an_unknown_dump_id_has_no_entry():
    assert parse_toc(LISTING).entry(9999) is None


@pytest.mark.parametrize(
    "listing, data, extensions, publishes",
    [
        (
            LISTING,
            {3350: "commerce.bookings", 3351: "communications.messages"},
            ["pgcrypto", "vector"],
            False,
        ),
        ("", {}, [], False),
        (";\n; Selected TOC Entries:\n;\n", {}, [], False),
        (
            "10; 0 16400 TABLE DATA commerce bookings postgres\n"
            "11; 6106 16600 PUBLICATION TABLE commerce busflow_pub bookings postgres\n",
            {10: "commerce.bookings"},
            [],
            True,
        ),
        # MATERIALIZED VIEW DATA is not table data (REFRESH, not COPY)
        ("12; 0 16430 MATERIALIZED VIEW DATA commerce daily_totals postgres\n", {}, [], False),
        (
            '13; 3079 16700 EXTENSION - "uuid-ossp" \n14; 0 0 COMMENT - EXTENSION "uuid-ossp" \n',
            {},
            ['"uuid-ossp"'],
            False,
        ),
    ],
)
def test_data_extensions_and_publishes(listing, data, extensions, publishes):
    toc = parse_toc(listing)
    assert (toc.data, toc.extensions, toc.publishes) == (data, extensions, publishes)


@pytest.mark.parametrize(
    "table, qualified",
    [
        ("bookings", ["commerce.bookings"]),
        ("commerce.bookings", ["commerce.bookings"]),
        ("messages", ["communications.messages"]),
        ("daily_totals", []),  # a materialized view has no TABLE DATA
        ("nope", []),
    ],
)
def test_qualify_names_the_schema_of_a_copy_table(table, qualified):
    assert parse_toc(LISTING).qualify(table) == qualified


def test_extension_list_holds_the_extension_entries_alone():
    assert parse_toc(LISTING).extension_list() == (
        "2; 3079 16389 EXTENSION - pgcrypto \n3; 3079 16390 EXTENSION - vector \n"
    )


# -- the restore role's -L list ----------------------------------------------------------------
ADMIN = "created by the administrative step before the restore"
HOLDS = "created by the administrative step to hold an extension"
EVENT = "an event trigger: superuser-only, and it would run on the restore's own DDL"


@pytest.mark.parametrize(
    "made_schemas, left_out",
    [
        (
            ["extensions"],
            [
                ("SCHEMA extensions", HOLDS),
                ("EXTENSION pgcrypto", ADMIN),
                ("COMMENT EXTENSION pgcrypto", ADMIN),
                ("EXTENSION vector", ADMIN),
                ("COMMENT EXTENSION vector", ADMIN),
                ("EVENT TRIGGER audit_ddl", EVENT),
                ("COMMENT EVENT TRIGGER audit_ddl", EVENT),
            ],
        ),
        (
            [],
            [  # the extensions went to an existing schema: every SCHEMA entry stays
                ("EXTENSION pgcrypto", ADMIN),
                ("COMMENT EXTENSION pgcrypto", ADMIN),
                ("EXTENSION vector", ADMIN),
                ("COMMENT EXTENSION vector", ADMIN),
                ("EVENT TRIGGER audit_ddl", EVENT),
                ("COMMENT EVENT TRIGGER audit_ddl", EVENT),
            ],
        ),
        (
            ["extensions", "commerce"],
            [
                ("SCHEMA commerce", HOLDS),
                ("SCHEMA extensions", HOLDS),
                ("EXTENSION pgcrypto", ADMIN),
                ("COMMENT EXTENSION pgcrypto", ADMIN),
                ("EXTENSION vector", ADMIN),
                ("COMMENT EXTENSION vector", ADMIN),
                ("EVENT TRIGGER audit_ddl", EVENT),
                ("COMMENT EVENT TRIGGER audit_ddl", EVENT),
            ],
        ),
    ],
)
def test_restore_list_comments_out_what_the_restore_role_must_not_run(made_schemas, left_out):
    toc = parse_toc(LISTING)
    listing, why = toc.restore_list(made_schemas)
    assert [(w["entry"], w["reason"]) for w in why] == left_out
    lines = listing.splitlines()
    assert len(lines) == len(toc.entries)  # every entry is listed, in order
    commented = [ln[1:] for ln in lines if ln.startswith(";")]
    assert [parse_toc(ln).entries[0].label for ln in commented] == [e for e, _ in left_out]
    kept = [ln for ln in lines if not ln.startswith(";")]
    assert [e.line for e in toc.entries if e.line in kept] == kept
    for label in (
        "TABLE DATA commerce.bookings",
        "FK CONSTRAINT communications.messages messages_booking_id_fkey",
        "SEQUENCE SET commerce.bookings_id_seq",
        "DEFAULT ACL commerce.DEFAULT PRIVILEGES FOR TABLES",
        "MATERIALIZED VIEW DATA commerce.daily_totals",
    ):
        assert label not in dict(left_out)


@pytest.mark.parametrize(
    "line, reason",
    [
        ("1; 2615 1 SCHEMA - extensions postgres", HOLDS),
        ('1; 2615 1 SCHEMA - "extensions" postgres', HOLDS),  # a quoted name is compared unquoted
        ("1; 2615 1 SCHEMA - commerce postgres", None),
        ("1; 3079 1 EXTENSION - pg_cron ", ADMIN),
        ("1; 0 0 COMMENT - EXTENSION pg_cron ", ADMIN),
        ("1; 0 0 COMMENT commerce TABLE bookings postgres", None),
        ("1; 3466 1 EVENT TRIGGER - audit_ddl postgres", EVENT),
        ("1; 0 0 COMMENT - EVENT TRIGGER audit_ddl postgres", EVENT),
        ("1; 0 0 SECURITY LABEL - EVENT TRIGGER audit_ddl postgres", EVENT),
        ("1; 1255 1 FUNCTION public audit_ddl() postgres", None),  # its function is restored
        ("1; 0 1 TRIGGER commerce bookings audit_bookings postgres", None),  # a table trigger
        ("1; 0 1 ACL - SCHEMA extensions postgres", None),
    ],
)
def test_the_reason_of_one_entry(line, reason):
    _, why = parse_toc(line + "\n").restore_list(["extensions"])
    assert [w["reason"] for w in why] == ([reason] if reason else [])


# -- CREATE EXTENSION lines --------------------------------------------------------------------
@pytest.mark.parametrize(
    "script, schemas",
    [
        (
            "CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions;\n",
            {"pgcrypto": "extensions"},
        ),
        ("CREATE EXTENSION IF NOT EXISTS vector;\n", {"vector": None}),
        (
            'CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA public;\n',
            {"uuid-ossp": "public"},
        ),
        (
            'CREATE EXTENSION IF NOT EXISTS "odd""name" WITH SCHEMA "My Schema";\n',
            {'odd"name': "My Schema"},
        ),
        (
            "CREATE EXTENSION IF NOT EXISTS pg_cron WITH SCHEMA pg_catalog;\n",
            {"pg_cron": "pg_catalog"},
        ),
        (
            "--\n-- Name: pgcrypto; Type: EXTENSION; Schema: -; Owner: -\n--\n\n"
            "CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions;\n\n\n"
            "--\n-- Name: EXTENSION pgcrypto; Type: COMMENT; Schema: -; Owner: \n--\n\n"
            "COMMENT ON EXTENSION pgcrypto IS 'cryptographic functions';\n\n"
            "CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;\n",
            {"pgcrypto": "extensions", "vector": "public"},
        ),
        ("COMMENT ON EXTENSION pgcrypto IS 'x';\n", {}),
        ("CREATE EXTENSION pgcrypto;\n", {}),  # pg_restore always writes IF NOT EXISTS
        ("  CREATE EXTENSION IF NOT EXISTS pgcrypto;\n", {}),  # not at the start of a line
        ("", {}),
    ],
)
def test_extension_schemas(script, schemas):
    assert extension_schemas(script) == schemas
