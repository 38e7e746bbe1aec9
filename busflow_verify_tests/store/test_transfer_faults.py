"""Transfer faults are the endpoint's (F5), never the backup's (F2).

The primary is a real `rclone serve s3` behind a proxy that damages the download's ranged GETs
(busflow_verify_tests/faultyproxy.py); the fallback is a second rclone (the on-site mirror).
"""

from __future__ import annotations

import pytest

from busflow_verify.core.report.cutover import CutoverHalt
from busflow_verify.demo.s3server import RcloneS3Server
from busflow_verify_tests.conftest import ACCESS_KEY, SECRET_KEY, expected_counts
from busflow_verify_tests.faultyproxy import FaultyProxy

pytestmark = pytest.mark.e2e

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"


@pytest.fixture
def md5_primary(harness, tmp_path, monkeypatch):
    """A primary whose ETags are the objects' MD5s (as S3's are), holding the harness's bucket."""
    server = RcloneS3Server(
        tmp_path / "md5-primary", access_key=ACCESS_KEY, secret_key=SECRET_KEY, etag_hash="MD5"
    ).start()
    yield server
    server.stop()


def _behind_proxy(monkeypatch, backend_port: int, mode: str, times=None) -> FaultyProxy:
    proxy = FaultyProxy(backend_port, mode, times=times)
    monkeypatch.setenv("BACKUP_PRIMARY_ENDPOINT", proxy.endpoint)
    return proxy


def test_a_primary_that_cuts_every_transfer_is_read_from_the_mirror(
    harness, slack, make_dump, fallback_s3, monkeypatch
):
    harness.put(KEY, make_dump())
    harness.mirror_to(fallback_s3, monkeypatch)
    proxy = _behind_proxy(monkeypatch, harness.s3.port, "cut")
    try:
        code, verdict = harness.verify(DAY)
    finally:
        proxy.close()
    assert code == 0, verdict
    assert verdict["verified"] is True and verdict["failures"] == []
    assert verdict["row_counts"] == expected_counts()
    assert proxy.damaged >= 5  # every part's retries were cut
    [notice] = verdict["notices"]
    assert (notice["code"], notice["severity"]) == ("F5", "info")
    assert notice["details"]["cause"] == "transfer_incomplete"
    assert "primary endpoint could not deliver" in notice["summary"]
    assert "cut off" in notice["summary"]
    states = {c["check"]: c["passed"] for c in verdict["checks"]}
    assert states["restored_db:offsite_transfer_completed"] is False  # WARN: informational
    assert states["dump_object:offsite_endpoint_reachable"] is True  # the listing worked
    assert "RESTORE_FAILED" not in slack.texts()[0]


def test_a_damaged_transfer_is_caught_by_the_etag_retried_once_then_mirrored(
    harness, make_dump, fallback_s3, md5_primary, monkeypatch
):
    dump = make_dump()
    harness.put(KEY, dump)
    harness.mirror_to(fallback_s3, monkeypatch)
    md5_primary.bucket_dir(harness.bucket).joinpath(KEY).write_bytes(dump.read_bytes())
    proxy = _behind_proxy(monkeypatch, md5_primary.port, "flip")
    try:
        code, verdict = harness.verify(DAY)
    finally:
        proxy.close()
    assert code == 0, verdict
    assert proxy.damaged == 2  # the first download and its one retry
    [notice] = verdict["notices"]
    assert notice["details"]["cause"] == "integrity_mismatch"
    assert "its md5 is" in notice["summary"] and "the ETag says" in notice["summary"]
    assert verdict["restore"]["downloaded_from"] == "fallback"


def test_one_damaged_transfer_is_retried_on_the_primary(
    harness, make_dump, md5_primary, monkeypatch
):
    dump = make_dump()
    md5_primary.bucket_dir(harness.bucket).joinpath(KEY).write_bytes(dump.read_bytes())
    proxy = _behind_proxy(monkeypatch, md5_primary.port, "flip", times=1)
    try:
        code, verdict = harness.verify(DAY)
    finally:
        proxy.close()
    assert code == 0, verdict
    assert proxy.damaged == 1 and verdict["notices"] == []
    assert verdict["restore"]["downloaded_from"] == "primary"
    assert verdict["restore"]["digests_checked"] == ["md5"]


def test_when_no_endpoint_can_deliver_it_is_f5_both_down(
    harness, slack, make_dump, fallback_s3, monkeypatch
):
    harness.put(KEY, make_dump())
    harness.mirror_to(fallback_s3, monkeypatch)
    primary = _behind_proxy(monkeypatch, harness.s3.port, "cut")
    fallback = FaultyProxy(fallback_s3.port, "cut")
    monkeypatch.setenv("BACKUP_FALLBACK_ENDPOINT", fallback.endpoint)
    try:
        code, verdict = harness.verify(DAY)
    finally:
        primary.close()
        fallback.close()
    assert code == 1 and verdict["verified"] is False
    [failure] = verdict["failures"]
    assert (failure["code"], failure["severity"], failure["escalate_to"]) == (
        "F5",
        "P1",
        ["@infra-oncall"],
    )
    assert failure["summary"].startswith("dump inaccessible")
    assert [e["endpoint"] for e in failure["details"]["endpoints"]] == ["primary", "fallback"]
    assert {e["cause"] for e in failure["details"]["endpoints"]} == {"transfer_incomplete"}
    assert CutoverHalt(str(harness.home)).get()  # F5 step 2: cutover work halted
    assert "RESTORE_FAILED" not in slack.texts()[0]
