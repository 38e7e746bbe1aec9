"""The evidence without a server: keys and their named errors, the envelope's checks, the
statement's subject, the exit status with EVIDENCE_NOT_WRITTEN."""

from __future__ import annotations

import json
import subprocess

import pytest

from busflow_verify.cli.verify import exit_status
from busflow_verify.core.failures import Finding
from busflow_verify.core.report.evidence import (
    PREDICATE_TYPE,
    EvidenceFacts,
    RunTimes,
    statement,
)
from busflow_verify.core.report.signing import (
    EvidenceInvalid,
    KeyProblem,
    load_public_keys,
    load_signing_key,
    sign_statement,
    verify_envelope,
)
from busflow_verify.core.verdict import Verdict


def genpkey(path, *args: str):
    subprocess.run(
        ["openssl", "genpkey", *args, "-out", str(path)], check=True, capture_output=True
    )
    return path


@pytest.fixture(scope="module")
def ed25519(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    private = genpkey(folder / "k.pem", "-algorithm", "ed25519")
    public = folder / "k.pub.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)], check=True
    )
    return private, public


def body_of(pem: str) -> str:
    return "".join(pem.strip().splitlines()[1:-1])


def test_bad_signing_keys_are_named_without_their_bytes(tmp_path, ed25519):
    with pytest.raises(
        KeyProblem, match=r"BUSFLOW_EVIDENCE_SIGNING_KEY: the key file .*nope\.pem cannot be read"
    ):
        load_signing_key(str(tmp_path / "nope.pem"))
    with pytest.raises(
        KeyProblem, match="holds no PEM private key; make one with `openssl genpkey"
    ):
        load_signing_key(str(ed25519[1]))
    rsa = genpkey(tmp_path / "rsa.pem", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024")
    with pytest.raises(KeyProblem, match="RSAPrivateKey, not an Ed25519 key") as problem:
        load_signing_key(str(rsa))
    assert body_of(rsa.read_text())[:40] not in str(problem.value)
    locked = genpkey(tmp_path / "locked.pem", "-algorithm", "ed25519", "-aes256", "-pass", "pass:x")
    with pytest.raises(KeyProblem, match="is encrypted"):
        load_signing_key(str(locked))
    pem = ed25519[0].read_text()
    key = load_signing_key(pem)  # the PEM text itself, as a secret store may inject it
    assert body_of(pem) not in repr(key) and key.keyid in repr(key)


def test_bad_public_keys_are_named(tmp_path, ed25519):
    with pytest.raises(KeyProblem, match="holds a PRIVATE key: give the public key only"):
        load_public_keys(str(ed25519[0]))
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(
        KeyProblem, match=r"BUSFLOW_EVIDENCE_PUBLIC_KEY \(.*empty\.pem\) holds no PEM"
    ):
        load_public_keys(str(empty))
    assert len(load_public_keys(ed25519[1].read_text() * 2)) == 2  # a rotation's file


def verdict(**kw) -> Verdict:
    return Verdict(partition="2026-11-20", verified=False, run_id="r1", run_status="FAILURE", **kw)


FACTS = EvidenceFacts(RunTimes("r1", "FAILURE", "2026-11-20T03:00:00+00:00", None))


def test_a_run_without_dump_bytes_has_the_run_as_subject():
    made = statement(verdict(), FACTS)
    assert made["predicateType"] == PREDICATE_TYPE
    [subject] = made["subject"]
    assert subject["name"] == "run/r1" and len(subject["digest"]["sha256"]) == 64
    assert made["predicate"]["dump"] is None and made["predicate"]["previous"] is None


def test_envelopes_that_do_not_hold_are_named(ed25519):
    key = load_signing_key(str(ed25519[0]))
    keys = load_public_keys(str(ed25519[1]))
    good = sign_statement(statement(verdict(), FACTS), key)
    assert verify_envelope(good, keys, "e").statement["predicate"]["run"]["run_id"] == "r1"
    with pytest.raises(EvidenceInvalid, match="s3://b/k is not a DSSE envelope"):
        verify_envelope(b"<html>", keys, "s3://b/k")
    raw = json.loads(good)
    with pytest.raises(EvidenceInvalid, match="payloadType is 'text/plain'"):
        verify_envelope(json.dumps({**raw, "payloadType": "text/plain"}).encode(), keys, "e")
    with pytest.raises(EvidenceInvalid, match="carries no signature"):
        verify_envelope(json.dumps({**raw, "signatures": []}).encode(), keys, "e")
    not_a_statement = sign_statement({"hello": "world"}, key)
    with pytest.raises(EvidenceInvalid, match="not an in-toto Statement v1"):
        verify_envelope(not_a_statement, keys, "e")


def test_evidence_not_written_never_decides_the_exit_status():
    lost = Finding("EVIDENCE_NOT_WRITTEN", "the bucket refused").to_dict()
    assert (lost["code"], lost["severity"], lost["escalate_to"]) == (
        "EVIDENCE_NOT_WRITTEN",
        "P2",
        ["@platform-oncall"],
    )
    assert exit_status(Verdict("2026-11-20", True, failures=(lost,))) == 0
    crashed = Finding("VERIFY_JOB_ERROR", "a step crashed").to_dict()
    assert exit_status(Verdict("2026-11-20", False, failures=(crashed, lost))) == 3
    f3 = Finding("ORPHAN_FK_SURGE", "orphans").to_dict()
    assert exit_status(Verdict("2026-11-20", False, failures=(f3, lost))) == 1
