"""A full disk on the verify host is the host's fault: HOST_OUT_OF_SPACE, never F2.

Each test mounts a small tmpfs (root can; elsewhere they skip, saying so) as the scratch space
(TMPDIR: the download and the disposable cluster go there) and fills it at one stage: the
free-space check before the download, the download, initdb, the data section.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from busflow_verify.cli.parser import EXIT_NOT_VERIFIED, EXIT_VERIFIER_BROKE
from busflow_verify_tests.conftest import use_server

pytestmark = pytest.mark.e2e

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"


@pytest.fixture
def small_disk(monkeypatch):
    """small_disk(megabytes) -> the mount point of a tmpfs that is now TMPDIR for the run."""
    mounted: list[Path] = []

    def make(megabytes: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root (sessions and CI run as root)")
        point = Path(tempfile.mkdtemp(prefix="busflow-small-disk-", dir="/tmp"))
        options = f"size={megabytes}m,mode=1777"
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True
        )
        if mount.returncode != 0:
            point.rmdir()
            pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
        mounted.append(point)
        monkeypatch.setattr(tempfile, "tempdir", str(point))  # the run's scratch base
        monkeypatch.setenv("TMPDIR", str(point))
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)
        with contextlib.suppress(OSError):
            point.rmdir()


def _disk_config(harness, **disk_space):
    harness.write_config(
        {
            "size_guard": {"min_bytes": 1000, "max_median_ratio": 2.0, "trailing_days": 7},
            "alerts": {"attempts": 2, "backoff_seconds": 0.01, "timeout_seconds": 1},
            "disk_space": disk_space,
        }
    )


def _assert_the_hosts_fault(code, verdict, slack, stage_words):
    assert code == EXIT_VERIFIER_BROKE, verdict
    [failure] = [f for f in verdict["failures"] if f["code"] != "F4"]
    assert (failure["code"], failure["escalate_to"]) == ("HOST_OUT_OF_SPACE", ["@infra-oncall"])
    assert any(words in failure["details"]["stage"] for words in stage_words), failure
    assert "snapshot" not in failure["summary"].lower()
    assert "not implicated" in failure["summary"]
    [text] = slack.texts()
    assert "HOST_OUT_OF_SPACE" in text and "snapshot the source" not in text
    assert "F2" not in text
    return failure


def _nothing_left(point: Path) -> None:
    assert sorted(p.name for p in point.iterdir()) == [], "the run left files in its scratch"


def test_too_little_free_space_refuses_before_anything_is_downloaded(
    harness, slack, small_disk, monkeypatch
):
    point = small_disk(96)  # the disposable cluster takes ~38 MB of it
    harness.put(KEY, os.urandom(12 * 1024 * 1024))
    _disk_config(harness, restored_per_dump_byte=5.0, headroom_ratio=1.1)
    code, verdict = harness.verify(DAY)
    failure = _assert_the_hosts_fault(code, verdict, slack, ["before the download"])
    details = failure["details"]
    assert details["cause"] == "not_enough_free_space"
    assert details["path"].startswith(str(point))
    assert details["needed_bytes"] > details["free_bytes"] > 0
    assert f"{details['needed_bytes']:,}" in failure["summary"]
    assert f"{details['free_bytes']:,}" in failure["summary"]
    assert "nothing was downloaded" in failure["summary"]
    assert {n["what"] for n in details["needs"]} == {"the downloaded dump", "the restored database"}
    _nothing_left(point)


def test_with_the_check_off_the_same_dump_downloads(harness, small_disk):
    """The refusal above was the check's: without it the 12 MB download fits (and the random
    bytes then fail the format sniff, an F2 of the dump)."""
    point = small_disk(96)
    harness.put(KEY, os.urandom(12 * 1024 * 1024))
    _disk_config(harness, check=False)
    code, verdict = harness.verify(DAY)
    assert code == EXIT_NOT_VERIFIED
    assert [f["code"] for f in verdict["failures"]] == ["F2"]
    _nothing_left(point)


def test_a_disk_that_fills_during_the_download(
    harness, slack, small_disk, restore_server, monkeypatch
):
    """The server target: only the download is local, and it does not fit."""
    use_server(monkeypatch, restore_server)
    harness.put(KEY, os.urandom(8 * 1024 * 1024))
    point = small_disk(4)
    _disk_config(harness, check=False)
    code, verdict = harness.verify(DAY)
    failure = _assert_the_hosts_fault(code, verdict, slack, ["the download"])
    assert failure["details"]["path"].startswith(str(point))
    assert failure["details"]["needed_bytes"] == 8 * 1024 * 1024
    _nothing_left(point)


def test_a_disk_too_small_for_the_disposable_cluster(harness, slack, small_disk, make_dump):
    point = small_disk(16)  # initdb needs ~38 MB
    harness.put(KEY, make_dump())
    _disk_config(harness)
    code, verdict = harness.verify(DAY)
    # initdb fills the disk in the background while the dump is located and downloaded; which
    # of the two meets the full disk first varies, and either is the host's
    _assert_the_hosts_fault(code, verdict, slack, ["initdb", "the download"])
    _nothing_left(point)


@pytest.fixture(scope="module")
def wide_dump(source_pg, tmp_path_factory):
    """A custom dump that is small (its rows compress) but restores to ~44 MB."""
    dbname = "wide_source"
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    with psycopg.connect(**source_pg.conninfo(dbname).kwargs(), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.wide(id int PRIMARY KEY, filler text)")
        conn.execute(
            "INSERT INTO public.wide SELECT g, repeat('x', 1000) FROM generate_series(1, 40000) g"
        )
    path = tmp_path_factory.mktemp("wide") / "wide.dump"
    subprocess.run(
        [
            source_pg.tool("pg_dump"),
            "-Fc",
            *source_pg.conninfo(dbname).libpq_args(),
            "-f",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return path


def test_a_disk_that_fills_during_the_data_section(
    harness, slack, small_disk, wide_dump, monkeypatch
):
    harness.put(KEY, wide_dump)
    point = small_disk(56)
    _disk_config(harness, restored_per_dump_byte=2.0)  # the estimate passes; the data does not fit
    code, verdict = harness.verify(DAY)
    failure = _assert_the_hosts_fault(
        code, verdict, slack, ["restoring data", "restoring post-data"]
    )
    assert failure["details"]["path"].startswith(str(point))
    assert failure["details"]["cause"] == "out_of_space"
    assert (
        "No space left on device" in failure["details"]["error"]
        or "could not extend" in (failure["details"]["error"])
    )
    _nothing_left(point)


def test_a_full_disk_met_by_a_later_step_is_the_hosts_too(harness, slack, make_dump, monkeypatch):
    """VACUUM ANALYZE or a count that meets a full disk crashes its step with PostgreSQL's
    DiskFull; the run's verdict reads the recorded error as the host's, not a job error."""
    import psycopg.errors

    def disk_full(*args, **kwargs):
        raise psycopg.errors.DiskFull(
            'could not extend file "base/16384/2619": No space left on device'
        )

    monkeypatch.setattr("busflow_verify.defs.row_counts.vacuum_and_count", disk_full)
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    failure = _assert_the_hosts_fault(code, verdict, slack, ["step row_count_report"])
    assert "the host of the restored database ran out of disk space" in failure["summary"]
