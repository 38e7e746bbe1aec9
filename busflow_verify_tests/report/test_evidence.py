"""The signed evidence of each verify run, on the real servers: `rclone serve s3` primary and
fallback, real verify runs through the CLI.

The evidence is checked here by an implementation that is not the project's: sigstore's DSSE
envelope model and pre-auth encoding and its in-toto Statement v1 model (PyPI `sigstore`), with
the Ed25519 signature checked by PyNaCl (libsodium, not the OpenSSL that pyca/cryptography
wraps) and by the `openssl pkeyutl -verify -rawin` command line.
"""

from __future__ import annotations

import base64
import json
import subprocess

import dagster as dg
import pytest

from busflow_verify import cli
from busflow_verify.core.proc import child_env
from busflow_verify.core.store.evidence import EvidenceExists, create_only, folder
from busflow_verify.core.store.pointer import POINTER_NAME
from busflow_verify_tests.conftest import ed25519_keypair as keypair

pytestmark = pytest.mark.e2e

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"
PREDICATE_TYPE = "https://busflow.example/verify-evidence/v1"


@pytest.fixture
def keys(tmp_path, monkeypatch):
    private, public = keypair(tmp_path)
    monkeypatch.setenv("BUSFLOW_EVIDENCE_SIGNING_KEY", str(private))
    monkeypatch.setenv("BUSFLOW_EVIDENCE_PUBLIC_KEY", str(public))
    return private, public


def independently_verified(envelope: bytes, public_pem, tmp_path) -> dict:
    """The statement, once sigstore's DSSE and in-toto models, PyNaCl and openssl accept it."""
    from nacl.signing import VerifyKey
    from sigstore.dsse import Envelope, Statement

    parsed = Envelope._from_json(envelope)  # sigstore's model of the DSSE envelope
    assert parsed._inner.payload_type == "application/vnd.in-toto+json"
    pae = parsed.pae()  # sigstore's pre-auth encoding
    spki = base64.b64decode("".join(public_pem.read_text().strip().splitlines()[1:-1]))
    VerifyKey(spki[-32:]).verify(pae, parsed.signature)  # raises BadSignatureError
    (tmp_path / "pae").write_bytes(pae)
    (tmp_path / "sig").write_bytes(parsed.signature)
    subprocess.run(
        [
            "openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public_pem), "-rawin",
            "-in", str(tmp_path / "pae"), "-sigfile", str(tmp_path / "sig"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    statement = Statement(parsed._inner.payload)  # sigstore's in-toto Statement v1 model
    assert statement._inner.predicate_type == PREDICATE_TYPE
    return json.loads(parsed._inner.payload)


def evidence_cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["evidence", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def stored(harness, key: str, bucket_dir=None) -> bytes:
    return ((bucket_dir or harness.bucket_dir) / key).read_bytes()


def test_a_verified_run_is_signed_chained_recorded_by_the_pointer_and_verified(
    harness, make_dump, keys, fallback_s3, monkeypatch, tmp_path, capsys
):
    harness.put(KEY, make_dump())
    mirror = harness.mirror_to(fallback_s3, monkeypatch)
    code, first = harness.verify(DAY)
    assert code == 0 and first["verified"] is True
    written = first["evidence"]
    assert written["written"] is True and written["previous"] is None
    assert written["key"].startswith(folder("", DAY)) and written["key"].endswith(
        f"-{first['run_id']}.dsse.json"
    )
    assert written["method"] == "read-back"  # rclone ignores If-None-Match
    assert written["mirrored"] is True
    assert stored(harness, written["key"], mirror) == stored(harness, written["key"])

    statement = independently_verified(stored(harness, written["key"]), keys[1], tmp_path)
    [subject] = statement["subject"]
    body = statement["predicate"]
    assert subject["name"] == KEY
    assert subject["digest"]["sha256"] == body["dump"]["sha256"]
    assert body["dump"]["size_bytes"] == harness.bucket_dir.joinpath(KEY).stat().st_size
    assert (body["partition"], body["verified"], body["run"]["run_id"]) == (
        DAY,
        True,
        first["run_id"],
    )
    assert body["run"]["status"] == "SUCCESS" and body["run"]["ended_at"]
    assert body["dump"]["endpoint"] == "primary" and body["dump"]["endpoint_url"]
    assert body["manifest"] == {"sha256": None, "signature": "no_manifest"}
    assert {c["check"] for c in body["checks"]} >= {
        "orphan_report:soft_fk_orphans_within_allowlist"
    }
    assert all(c["passed"] for c in body["checks"] if c["severity"] == "ERROR")
    assert body["row_counts"]["commerce.bookings"] == 1000
    assert body["orphans"][0]["orphans"] == 7
    assert body["restore"]["restore_seconds"] > 0 and body["restore"]["postgres_major"]

    code, second = harness.verify(DAY, "--promote")  # the same date again: chained to the first
    chained = second["evidence"]
    assert chained["previous"] == {"key": written["key"], "sha256": written["sha256"]}
    pointer = json.loads((harness.bucket_dir / POINTER_NAME).read_text())
    assert pointer["evidence"] == {"key": chained["key"], "sha256": chained["sha256"]}

    code, out = evidence_cli(capsys, "verify", "--date", DAY)
    assert code == 0, out
    assert "HOLDS" in out and second["run_id"] in out and "1 earlier evidence object" in out
    code, out = evidence_cli(capsys, "verify", "--date", DAY, "--run", first["run_id"], "--json")
    assert code == 0 and json.loads(out)["run_id"] == first["run_id"]
    code, out = evidence_cli(capsys, "list", "--date", DAY)
    assert code == 0 and out.count(".dsse.json") == 2

    # never overwritten: the store refuses a second write of a key, here and through the CLI
    client = harness_client(harness)
    with pytest.raises(EvidenceExists):
        create_only(client, harness.bucket, "", written["key"], b"{}")
    assert stored(harness, written["key"]).startswith(b'{\n  "payload"')
    code, out = evidence_cli(capsys, "write", "--date", DAY, "--run", first["run_id"])
    assert code == 0 and f"written {written['key']}" in out
    assert json.loads(stored(harness, written["key"])) == json.loads(
        stored(harness, written["key"], mirror)
    )

    # the first evidence altered after the second chained to it: the chain is broken
    altered = json.loads(stored(harness, written["key"]))
    altered["signatures"][0]["sig"] = base64.b64encode(b"\0" * 64).decode()
    harness.put(written["key"], json.dumps(altered).encode())
    code, out = evidence_cli(capsys, "verify", "--date", DAY)
    assert code == 1 and "the chain is broken" in out and written["key"] in out


def harness_client(harness):
    import boto3
    from botocore.config import Config

    from busflow_verify_tests.conftest import ACCESS_KEY, SECRET_KEY

    return boto3.client(
        "s3",
        endpoint_url=harness.s3.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def test_a_replaced_dump_a_tampered_envelope_and_a_wrong_key_are_refused(
    harness, make_dump, keys, tmp_path, monkeypatch, capsys
):
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    written = verdict["evidence"]
    assert evidence_cli(capsys, "verify", "--date", DAY)[0] == 0

    _, other = keypair(tmp_path, "other")
    monkeypatch.setenv("BUSFLOW_EVIDENCE_PUBLIC_KEY", str(other))
    code, out = evidence_cli(capsys, "verify", "--date", DAY)
    assert code == 1 and "not among the 1 configured public key(s)" in out
    both = tmp_path / "rotation.pem"  # a rotation: the new key and the old one
    both.write_text(other.read_text() + keys[1].read_text())
    monkeypatch.setenv("BUSFLOW_EVIDENCE_PUBLIC_KEY", str(both))
    assert evidence_cli(capsys, "verify", "--date", DAY)[0] == 0

    original = stored(harness, written["key"])
    envelope = json.loads(original)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["verified"] = not statement["predicate"]["verified"]
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    harness.put(written["key"], json.dumps(envelope).encode())
    code, out = evidence_cli(capsys, "verify", "--date", DAY, "--json")
    [problem] = json.loads(out)["problems"]
    assert code == 1 and "the signature does not verify" in problem and written["key"] in problem
    harness.put(written["key"], b"<html>not an envelope</html>")
    code, out = evidence_cli(capsys, "verify", "--date", DAY)
    assert code == 1 and "is not a DSSE envelope" in out

    harness.put(written["key"], original)
    harness.put(KEY, make_dump(bookings=1001))  # the dump replaced after it was verified
    code, out = evidence_cli(capsys, "verify", "--date", DAY)
    assert code == 1 and f"{KEY} was replaced after it was verified" in out
    assert verdict["run_id"] in out


def test_without_a_signing_key_nothing_is_written_and_status_says_so(
    harness, make_dump, monkeypatch, capsys
):
    monkeypatch.delenv("BUSFLOW_EVIDENCE_SIGNING_KEY", raising=False)
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 0 and verdict["failures"] == []
    assert verdict["evidence"]["written"] is False
    assert "BUSFLOW_EVIDENCE_SIGNING_KEY is not set" in verdict["evidence"]["reason"]
    assert not (harness.bucket_dir / "verify-evidence").exists()
    capsys.readouterr()
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "evidence: NOT written (BUSFLOW_EVIDENCE_SIGNING_KEY is not set" in out


def test_a_failed_write_is_named_leaves_verified_and_is_retried(
    harness, make_dump, keys, monkeypatch, capsys, slack
):
    """The key given as PEM text this time: it must appear nowhere."""
    pem = keys[0].read_text()
    monkeypatch.setenv("BUSFLOW_EVIDENCE_SIGNING_KEY", pem)
    secret = "".join(pem.strip().splitlines()[1:-1])
    harness.put(KEY, make_dump())
    harness.put("verify-evidence", b"a file where the folder must go: writes there fail")
    code, verdict = harness.verify(DAY)
    assert code == 0 and verdict["verified"] is True  # the backup itself is fine
    [failure] = verdict["failures"]
    assert (failure["code"], failure["severity"], failure["escalate_to"]) == (
        "EVIDENCE_NOT_WRITTEN",
        "P2",
        ["@platform-oncall"],
    )
    assert f"evidence write --date {DAY} --run {verdict['run_id']}" in failure["next_step"]
    assert verdict["evidence"]["pending"] is True
    capsys.readouterr()
    cli.main(["status", "--json"])
    status = json.loads(capsys.readouterr().out)
    assert status["evidence"]["signing"] is True
    assert status["evidence"]["pending"] == [{"partition": DAY, "run_id": verdict["run_id"]}]

    (harness.bucket_dir / "verify-evidence").unlink()
    harness.s3.settle()
    capsys.readouterr()
    assert cli.main(["alerts", "repost"]) == 0
    out = capsys.readouterr().out
    assert f"evidence {DAY}  {verdict['run_id']}  written verify-evidence/{DAY}/" in out
    assert evidence_cli(capsys, "verify", "--date", DAY)[0] == 0

    with dg.DagsterInstance.get() as instance:
        logs = json.dumps([str(e) for e in instance.all_logs(verdict["run_id"])])
    posted = json.dumps(slack.posts)
    for text in (json.dumps(verdict), harness.last_stderr, logs, posted, json.dumps(status)):
        assert secret not in text
    assert "BUSFLOW_EVIDENCE_SIGNING_KEY" not in child_env()


def test_a_run_that_found_no_dump_has_evidence_too(harness, keys, tmp_path, capsys):
    harness.put("pg_dump_20261119_0100.dump", b"yesterday only")
    code, verdict = harness.verify(DAY)
    assert code == 1 and verdict["failures"][0]["code"] == "DUMP_MISSING"
    statement = independently_verified(
        stored(harness, verdict["evidence"]["key"]), keys[1], tmp_path
    )
    assert statement["subject"][0]["name"] == f"run/{verdict['run_id']}"
    assert statement["predicate"]["verified"] is False and statement["predicate"]["dump"] is None
    assert statement["predicate"]["failures"][0]["code"] == "DUMP_MISSING"
    code, out = evidence_cli(capsys, "verify", "--date", DAY)
    assert code == 0 and "NOT VERIFIED" in out


def test_an_unreachable_bucket_and_a_missing_key_are_named(harness, keys, capsys, monkeypatch):
    monkeypatch.setenv("BACKUP_PRIMARY_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    code, out = evidence_cli(capsys, "verify", "--date", DAY)
    assert code == 1 and "the bucket could not be read (EndpointConnectionError" in out
    assert "Traceback" not in out
    monkeypatch.delenv("BUSFLOW_EVIDENCE_PUBLIC_KEY")
    code, out = evidence_cli(capsys, "verify", "--date", DAY)
    assert code == 2 and "BUSFLOW_EVIDENCE_PUBLIC_KEY is not set" in out
