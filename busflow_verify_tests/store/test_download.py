"""The dump's one download: ranged GETs in parallel from the real S3 server, byte for byte."""

from __future__ import annotations

import hashlib
import os
import zlib

import pytest

from busflow_verify.core.store import download as dl
from busflow_verify.core.store.listing import DumpObject
from busflow_verify.defs.resources import S3Endpoint
from busflow_verify_tests.conftest import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.e2e

KEY = "pg_dump_20261120_0100.dump"


@pytest.fixture
def bucket(s3, request):
    """The bucket's name, `put` (the dump straight into its folder, served once it returns)
    and a client."""
    name = "dl-" + request.node.name[-20:].lower().replace("_", "-")
    client = S3Endpoint(
        endpoint_url=s3.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
    ).client()
    folder = s3.bucket_dir(name)

    def put(data: bytes) -> None:
        (folder / KEY).write_bytes(data)
        s3.settle()

    return name, put, client


def test_parts_land_at_their_offsets_with_progress_by_quarter(bucket, tmp_path, monkeypatch):
    name, put, client = bucket
    monkeypatch.setattr(dl, "PART", 64 * 1024)  # 10 parts over 4 threads
    data = os.urandom(640 * 1024 - 7)
    put(data)
    lines = []
    dest = tmp_path / "dump"
    dl.download(
        client, DumpObject(name, KEY, len(data), "", "primary", "", ""), dest, report=lines.append
    )
    assert dest.read_bytes() == data
    assert [line.split("(")[1].split(")")[0] for line in lines][-1] == "100%"
    assert 2 <= len(lines) <= 5 and all(line.startswith(f"downloading {KEY}: ") for line in lines)


def test_an_object_shorter_than_head_said_is_a_download_error(bucket, tmp_path):
    name, put, client = bucket
    put(b"x" * 1000)
    with pytest.raises(
        dl.DownloadError,
        match=rf"s3://{name}/{KEY} ends before byte 1000, "
        "short of the 1500 bytes HEAD said",
    ):
        dl.download(client, DumpObject(name, KEY, 1500, "", "primary", "", ""), tmp_path / "dump")


def test_every_digest_is_computed_while_downloading_in_order(bucket, tmp_path, monkeypatch):
    """Parts land out of order over 4 threads; the digests follow them in order."""
    name, put, client = bucket
    monkeypatch.setattr(dl, "PART", 64 * 1024)
    data = os.urandom(1000 * 1024 + 3)
    put(data)
    want = [
        dl.Expected("md5", hashlib.md5(data).hexdigest(), "the ETag"),
        dl.Expected("sha256", hashlib.sha256(data).hexdigest(), "the manifest"),
        dl.Expected("crc32", (zlib.crc32(data)).to_bytes(4, "big").hex(), "x-amz-checksum-crc32"),
    ]
    dump = DumpObject(name, KEY, len(data), "", "primary", "", "")
    got = dl.download(client, dump, tmp_path / "dump", expected=want)
    assert got == {e.algorithm: e.hex for e in want}


def test_a_digest_that_differs_is_an_integrity_error_naming_both(bucket, tmp_path):
    name, put, client = bucket
    data = os.urandom(200 * 1024)
    put(data)
    wrong = hashlib.sha256(b"not it").hexdigest()
    dump = DumpObject(name, KEY, len(data), "", "primary", "", "")
    with pytest.raises(dl.IntegrityError) as caught:
        dl.download(
            client, dump, tmp_path / "dump", expected=[dl.Expected("sha256", wrong, "the manifest")]
        )
    message = str(caught.value)
    assert hashlib.sha256(data).hexdigest() in message and wrong in message
    assert "the manifest says" in message and "damaged in transfer" in message


def test_what_the_store_gives_to_check_by(bucket):
    """The ETag is an MD5 only for a single-part, non-KMS object; composite checksums are not
    the object's."""
    from busflow_verify.core.store.listing import etag_md5, full_object_checksums

    md5 = "0123456789abcdef0123456789abcdef"
    assert etag_md5({"ETag": f'"{md5}"'}) == md5
    assert etag_md5({"ETag": f'"{md5}-3"'}) is None  # multipart
    assert etag_md5({"ETag": f'"{md5}"', "ServerSideEncryption": "aws:kms"}) is None
    assert etag_md5({"ETag": f'"{md5}"', "ServerSideEncryption": "AES256"}) == md5
    assert etag_md5({"ETag": '""'}) is None  # rclone with --etag-hash ""
    sha = hashlib.sha256(b"x").digest()
    import base64

    b64 = base64.b64encode(sha).decode()
    assert full_object_checksums({"ChecksumSHA256": b64}) == {"sha256": sha.hex()}
    assert full_object_checksums({"ChecksumSHA256": b64, "ChecksumType": "COMPOSITE"}) == {}
    assert full_object_checksums({"ChecksumCRC32": "AAAAAA==-2"}) == {}
