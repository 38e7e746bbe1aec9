"""Progress of the long steps: in the run's event log and on the CLI's stderr, never on --json's
stdout (which stays one JSON object)."""

from __future__ import annotations

import json
import re
import threading

import dagster as dg
import pytest

from busflow_verify import cli
from busflow_verify.core.progress import Progress, human_bytes

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"


def assert_progress_lines(text: str, key: str, size: int) -> None:
    """What a verify of `key` (a custom dump of the test database) reports while it runs: bytes
    downloaded of the total with the rate, each restore section, tables counted, sweeps done."""
    total = re.escape(human_bytes(size))
    assert re.search(
        rf"downloading {re.escape(key)}: {total} of {total} \(100%\), "
        r"[\d.,]+ [KMG]?B/s",
        text,
    ), text
    for section in ("pre-data", "data", "post-data"):
        assert f"restoring {section} of {key}" in text
    assert "VACUUM ANALYZE and count: 5 of 5 tables (100%)" in text
    assert "sweep 1 of 1 done: communications.messages.booking_id -> commerce.bookings.id" in text


def test_progress_says_each_tenth_a_stall_and_the_end_once():
    lines, now = [], [0.0]
    progress = Progress("downloading k", 1000, lines.append, seconds=10, clock=lambda: now[0])
    now[0] = 1.0
    progress.add(50)
    progress.maybe_report()  # 5 %, 1 s in: nothing yet
    assert not progress.wake.is_set()
    progress.add(60)
    assert progress.wake.is_set()  # crossed 10 %: the waiting thread wakes
    progress.maybe_report()
    now[0] = 12.0
    progress.maybe_report()  # 11 s without a line and no new bytes: the stall shows
    progress.add(890)
    progress.maybe_report()
    now[0] = 60.0
    progress.maybe_report()  # finished and said: nothing more
    assert lines == [
        "downloading k: 110 B of 1.0 KB (11%), 110 B/s",
        "downloading k: 110 B of 1.0 KB (11%), 9 B/s",
        "downloading k: 1.0 KB of 1.0 KB (100%), 83 B/s",
    ]


def test_work_counted_by_threads_is_reported_by_the_waiting_one():
    from concurrent.futures import ThreadPoolExecutor

    lines, threads = [], set()
    progress = Progress(
        "VACUUM ANALYZE and count",
        8,
        lambda line: (lines.append(line), threads.add(threading.get_ident())),
        unit="tables",
        step=0.25,
    )
    with ThreadPoolExecutor(2) as pool:
        progress.watch([pool.submit(lambda: [progress.add(1) for _ in range(4)]) for _ in range(2)])
    assert lines[-1] == "VACUUM ANALYZE and count: 8 of 8 tables (100%)"
    assert 1 <= len(lines) <= 4 and threads == {threading.get_ident()}


@pytest.mark.e2e
def test_a_run_reports_progress_in_its_event_log_and_json_stdout_stays_one_object(
    harness, make_dump, capsys
):
    harness.put(KEY, make_dump())
    code = cli.main(["verify", "--date", DAY, "--json"])  # default log level INFO
    out, err = capsys.readouterr()
    verdict = json.loads(out)  # anything but one JSON object on stdout fails here
    assert code == 0 and verdict["verified"] is True
    size = (harness.bucket_dir / KEY).stat().st_size
    assert_progress_lines(err, KEY, size)
    with dg.DagsterInstance.get() as instance:
        logged = "\n".join(entry.user_message for entry in instance.all_logs(verdict["run_id"]))
    assert_progress_lines(logged, KEY, size)
