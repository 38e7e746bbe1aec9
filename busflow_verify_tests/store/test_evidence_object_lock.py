"""Object Lock retention of the evidence objects (core/store/evidence.py `create_only`).

`rclone serve s3`, the suite's S3 server, has no Object Lock, so this runs against moto's S3
server (PyPI `moto[server]`, `moto_server` on loopback), which implements buckets with Object
Lock enabled, COMPLIANCE retention on PUT (it refuses to delete a retained version) and
`If-None-Match: *`. moto 5.2.5 answers GetObjectRetention with a 500, so the retention is read
back from HEAD (`x-amz-object-lock-mode`, `x-amz-object-lock-retain-until-date`).
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from busflow_verify.core.store.evidence import EvidenceExists, create_only, evidence_key

pytestmark = pytest.mark.e2e

KEY = evidence_key("backups/", "2026-11-20", dt.datetime(2026, 11, 20, 3, 4, 5), "run-1")


@pytest.fixture(scope="module")
def moto_s3():
    """moto's S3 server on a free loopback port, stopped (by its pid) after the module."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="moto",
        aws_secret_access_key="moto",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield client
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_locked_bucket_keeps_the_evidence_in_compliance_mode(moto_s3):
    moto_s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
    now = dt.datetime(2026, 11, 20, 3, 5, tzinfo=dt.timezone.utc)
    written = create_only(moto_s3, "locked", "backups/", KEY, b'{"payload": "x"}', 30, now=now)
    assert written.method == "conditional-write"  # moto honours If-None-Match
    assert written.retain_until == "2026-12-20T03:05:00+00:00"
    head = moto_s3.head_object(Bucket="locked", Key=KEY)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].astimezone(dt.timezone.utc) == now + dt.timedelta(
        days=30
    )
    with pytest.raises(ClientError, match="AccessDenied"):
        moto_s3.delete_object(Bucket="locked", Key=KEY, VersionId=head["VersionId"])
    with pytest.raises(EvidenceExists) as exists:
        create_only(moto_s3, "locked", "backups/", KEY, b"{}", 30)
    assert exists.value.sha256 == written.sha256  # the first object, untouched


def test_without_object_lock_or_days_no_retention_is_asked(moto_s3):
    moto_s3.create_bucket(Bucket="plain")
    written = create_only(moto_s3, "plain", "", KEY, b"{}", 30)
    assert written.retain_until is None
    assert "ObjectLockMode" not in moto_s3.head_object(Bucket="plain", Key=KEY)
    moto_s3.create_bucket(Bucket="locked-no-days", ObjectLockEnabledForBucket=True)
    assert create_only(moto_s3, "locked-no-days", "", KEY, b"{}", 0).retain_until is None
