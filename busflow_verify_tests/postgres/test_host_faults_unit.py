"""The host's faults named as the host's (core/hostfaults.py) and the free-space check before
the download (core/diskspace.py): pure logic, real filesystems."""

from __future__ import annotations

import errno
import shutil

import pytest

from busflow_verify.core.diskspace import SpaceNeed, check_space, restored_estimate
from busflow_verify.core.hostfaults import host_fault


class DiskFull(Exception):
    sqlstate = "53100"  # as psycopg.errors.DiskFull carries it


def test_an_enospc_from_the_download_names_the_file(tmp_path):
    exc = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "pg_dump.dump"))
    finding = host_fault(exc, "the download", needed_bytes=123_456)
    assert finding.name == "HOST_OUT_OF_SPACE"
    assert finding.details["path"] == str(tmp_path / "pg_dump.dump")
    assert finding.details["needed_bytes"] == 123_456 and finding.details["free_bytes"] > 0
    assert "123,456 needed" in finding.summary and "during the download" in finding.summary


def test_postgres_disk_full_wrapped_in_another_error_is_found_through_the_cause(tmp_path):
    try:
        try:
            raise DiskFull('could not write to file "pg_wal/xlogtemp.1"')
        except DiskFull as inner:
            raise RuntimeError("CREATE DATABASE failed") from inner
    except RuntimeError as outer:
        finding = host_fault(outer, "CREATE DATABASE", tmp_path)
    assert finding.name == "HOST_OUT_OF_SPACE" and finding.details["path"] == str(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "ERROR:  permission denied for table bookings",  # the dump's privileges: F2's to say
        "pg_restore: error: out of memory",  # a corrupt archive's absurd length
        'ERROR:  invalid input syntax for type integer: "x"',
    ],
)
def test_what_is_not_the_hosts_is_left_alone(text):
    assert host_fault(text, "restoring data") is None


def test_a_refused_path_and_a_server_that_will_not_start_are_host_faults():
    refused = host_fault(
        'initdb: error: could not create directory "/scratch/data": Permission denied', "initdb"
    )
    assert (refused.name, refused.details["cause"], refused.details["path"]) == (
        "VERIFY_HOST_FAULT",
        "permission_denied",
        "/scratch/data",
    )
    stuck = host_fault("ClusterStartError: disposable Postgres did not start: ...", "initdb")
    assert (stuck.name, stuck.details["cause"]) == ("VERIFY_HOST_FAULT", "server_not_starting")
    assert stuck.to_dict()["escalate_to"] == ["@infra-oncall"]


def test_needs_on_one_filesystem_add_up(tmp_path):
    # margins of 20-40% of the free space: other tests fill and empty the same filesystem
    free = shutil.disk_usage(tmp_path).free
    part = int(free * 0.6)
    needs = [
        SpaceNeed(tmp_path / "scratch", part, "the downloaded dump"),
        SpaceNeed(tmp_path / "cluster", part, "the restored database"),
    ]
    assert check_space(needs[:1]) is None  # either alone fits
    finding = check_space(needs)
    assert finding.name == "HOST_OUT_OF_SPACE"
    assert finding.details["cause"] == "not_enough_free_space"
    assert finding.details["needed_bytes"] == 2 * part
    assert "the downloaded dump" in finding.summary and "the restored database" in finding.summary


def test_headroom_is_asked_for(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    need = [SpaceNeed(tmp_path, int(free * 0.8), "the downloaded dump")]
    assert check_space(need, headroom=1.0) is None
    assert check_space(need, headroom=1.5) is not None


def test_the_restored_size_is_estimated_from_the_highest_measured_ratio():
    restored, how = restored_estimate(1_000, [(100, 300), (100, 450), (0, 5)], 5.0)
    assert restored == 4_500 and "last 2 verified run(s)" in how
    restored, how = restored_estimate(1_000, [], 5.0)
    assert restored == 5_000 and "restored_per_dump_byte" in how


def test_maintenance_work_mem_is_half_the_available_memory_shared_by_the_jobs(monkeypatch):
    from busflow_verify.core.postgres import cluster as pgcluster

    gib = 1024**3
    monkeypatch.setattr(pgcluster, "_available_memory_bytes", lambda: 24 * gib)
    assert pgcluster.host_maintenance_work_mem(2) == "6144MB"
    assert pgcluster.host_maintenance_work_mem(8) == "1536MB"
    monkeypatch.setattr(pgcluster, "_available_memory_bytes", lambda: 1 * gib)
    assert pgcluster.host_maintenance_work_mem(4) == "512MB"  # never below the old fixed value
    monkeypatch.setattr(pgcluster, "_available_memory_bytes", lambda: 1024 * gib)
    assert pgcluster.host_maintenance_work_mem(1) == "16384MB"  # capped
    monkeypatch.setattr(pgcluster, "_available_memory_bytes", lambda: None)
    assert pgcluster.host_maintenance_work_mem(2) == "512MB"
