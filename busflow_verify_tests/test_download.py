"""The dump's one download: ranged GETs in parallel from the real S3 server, byte for byte."""

from __future__ import annotations

import os

import pytest

from busflow_verify.core import download as dl
from busflow_verify.core.store import DumpObject
from busflow_verify.defs.resources import S3Endpoint
from busflow_verify_tests.conftest import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.e2e

KEY = "pg_dump_20261120_0100.dump"


@pytest.fixture
def bucket(s3, request):
    name = "dl-" + request.node.name[-20:].lower().replace("_", "-")
    client = S3Endpoint(
        endpoint_url=s3.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
    ).client()
    return name, s3.bucket_dir(name), client


def test_parts_land_at_their_offsets_with_progress_by_quarter(bucket, tmp_path, monkeypatch):
    name, folder, client = bucket
    monkeypatch.setattr(dl, "PART", 64 * 1024)  # 10 parts over 4 threads
    data = os.urandom(640 * 1024 - 7)
    (folder / KEY).write_bytes(data)
    lines = []
    dest = dl.download(
        client,
        DumpObject(name, KEY, len(data), "", "primary", "", ""),
        tmp_path / "dump",
        report=lines.append,
    )
    assert dest.read_bytes() == data
    assert [line.split("(")[1].split(")")[0] for line in lines][-1] == "100%"
    assert 2 <= len(lines) <= 5 and all(line.startswith(f"downloading {KEY}: ") for line in lines)


def test_an_object_shorter_than_head_said_is_a_download_error(bucket, tmp_path):
    name, folder, client = bucket
    (folder / KEY).write_bytes(b"x" * 1000)
    with pytest.raises(
        dl.DownloadError,
        match=rf"s3://{name}/{KEY} ends before byte 1000, "
        "short of the 1500 bytes HEAD said",
    ):
        dl.download(client, DumpObject(name, KEY, 1500, "", "primary", "", ""), tmp_path / "dump")
