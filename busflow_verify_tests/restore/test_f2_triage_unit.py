"""F2's triage from its facts alone (core/restore/f2_triage.py): no Restorer, no database.

test_restore_classify_unit.py walks every cause through `Restorer.classify`; here the facts are
built by hand, as a caller without a Restorer would, and the plain dump's side is exercised: the
failing psql line names the COPY block and the statement of the scanned dump.
"""

from __future__ import annotations

import io
from pathlib import Path

from busflow_verify.core.restore.dump_format import DumpFormat
from busflow_verify.core.restore.f2_triage import RestoreFacts, classify, truncated
from busflow_verify.core.restore.plain_scan import scan_plain

KEY = "pg_dump_20261120_0100.sql"
PLAIN = """\
SET statement_timeout = 0;
CREATE TABLE commerce.bookings (id bigint, amount integer);
COPY commerce.bookings (id, amount) FROM stdin;
1\t100
2\t50x0
\\.
CREATE FUNCTION public.sneaky() RETURNS int LANGUAGE sql AS 'select 1';
"""


def facts(scan=None, dependents=()) -> RestoreFacts:
    return RestoreFacts(
        key=KEY,
        format=DumpFormat("plain"),
        toc=None,
        scan=scan,
        bin_dir=Path("/nowhere"),
        restore_role="busflow_restore",
        choice=None,
        server=None,
        data_path=None,
        data_host="the verify host",
        dependents_of=lambda function: list(dependents),
    )


def test_a_plain_dumps_copy_failure_is_named_from_its_copy_block():
    scan = scan_plain(io.StringIO(PLAIN))
    stderr = (
        'psql:restorable.sql:6: ERROR:  invalid input syntax for type integer: "50x0"\n'
        'CONTEXT:  COPY bookings, line 2, column amount: "50x0"\n'
    )
    finding = classify(facts(scan), stderr, "plain")
    details = finding.details
    assert (details["cause"], details["table"], details["line"]) == (
        "copy_failed",
        "commerce.bookings",
        2,
    )
    assert details["table_candidates"] == ["commerce.bookings"]
    assert details["format"] == "plain" and details["key"] == KEY
    assert finding.to_dict()["severity"] == "P1"


def test_a_plain_dumps_refused_statement_is_named_by_its_line():
    scan = scan_plain(io.StringIO(PLAIN))
    stderr = "psql:restorable.sql:7: ERROR:  permission denied for schema public\n"
    finding = classify(facts(scan), stderr, "plain")
    assert finding.details["cause"] == "insufficient_privilege"
    assert finding.details["object"].startswith("line 7: CREATE FUNCTION public.sneaky()")
    assert finding.details["restore_role"] == "busflow_restore"
    assert "@security-oncall" in finding.to_dict()["escalate_to"]


def test_a_truncated_dump_without_a_section_names_the_key_and_the_error():
    finding = truncated(KEY, "the gzip stream ends early")
    assert finding.details == {
        "cause": "truncated",
        "key": KEY,
        "error": "the gzip stream ends early",
    }
    assert finding.summary.startswith(f"{KEY} ends early")
