"""The signature's and the stored object's pure logic: key files that cannot be used are named
(never their content), signatures malformed or failing, several public keys (rotation), and which
faults of the download blame the stored object rather than the endpoints."""

from __future__ import annotations

import base64
import pickle

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from busflow_verify.core.failures import Finding
from busflow_verify.core.store import signature as sig
from busflow_verify.core.store.integrity import signature_finding, stored_object_finding
from busflow_verify.core.store.listing import DumpObject
from busflow_verify.core.store.manifest import ManifestRead
from busflow_verify.core.store.transfer import _unavailable

PEM, PKCS8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def _private(path, key=None, password=None) -> ed25519.Ed25519PrivateKey:
    key = key or ed25519.Ed25519PrivateKey.generate()
    crypt = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(key.private_bytes(PEM, PKCS8, crypt))
    return key


def _public(key) -> bytes:
    return key.public_key().public_bytes(PEM, SPKI)


def test_signing_and_checking_with_rotation(tmp_path):
    old, new = _private(tmp_path / "old.pem"), _private(tmp_path / "new.pem")
    signer = sig.SigningKey(tmp_path / "new.pem")
    assert repr(signer) == f"SigningKey({tmp_path / 'new.pem'})"
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    text = signer.sign(b"manifest bytes")
    assert text.endswith(b"\n") and len(base64.b64decode(text)) == 64
    ring = tmp_path / "ring.pem"
    ring.write_bytes(b"# rotated 2026-12\n" + _public(old) + _public(new))
    keys = sig.load_public_keys(ring)
    assert len(keys) == 2
    check = sig.check_signature(b"manifest bytes", text, keys)
    assert check.ok and check.key_id == keys[1].key_id
    assert sig.check_signature(b"manifest bytes!", text, keys).status == "mismatch"
    only_old = tmp_path / "old.pub"
    only_old.write_bytes(_public(old))
    failed = sig.check_signature(b"manifest bytes", text, sig.load_public_keys(only_old))
    assert failed.status == "mismatch" and keys[0].key_id in failed.problem


@pytest.mark.parametrize(
    "text, problem",
    [
        (None, "there is no signature beside it"),
        (b"abc\ndef\n", "not one line of base64"),
        (b"not base64!\n", "not base64"),
        (base64.b64encode(b"x" * 63) + b"\n", "63 bytes, an Ed25519 signature is 64"),
    ],
)
def test_signatures_that_are_not_one(tmp_path, text, problem):
    _private(tmp_path / "k.pem")
    keys = [sig.PublicKey("id", sig.SigningKey(tmp_path / "k.pem")._key.public_key())]
    check = sig.check_signature(b"m", text, keys)
    assert not check.ok and problem in check.problem


def test_key_files_that_cannot_be_used_are_named_not_shown(tmp_path):
    secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END PRIVATE KEY-----\n"
    (tmp_path / "bad.pem").write_bytes(secret)
    _private(tmp_path / "locked.pem", password=b"pass")
    (tmp_path / "rsa.pem").write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            PEM, PKCS8, serialization.NoEncryption()
        )
    )
    cases = {
        "missing.pem": "cannot be read",
        "bad.pem": "is not a PEM private key",
        "locked.pem": "is encrypted",
        "rsa.pem": "is not an Ed25519 key",
    }
    for name, said in cases.items():
        with pytest.raises(sig.KeyFileError) as info:
            sig.SigningKey(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and said in str(info.value)
        assert "c2VjcmV0" not in str(info.value)
    (tmp_path / "none.pub").write_text("no key here\n")
    with pytest.raises(sig.KeyFileError, match="holds no PUBLIC KEY block"):
        sig.load_public_keys(tmp_path / "none.pub")
    rsa_public = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    (tmp_path / "rsa.pub").write_bytes(rsa_public.public_bytes(PEM, SPKI))
    with pytest.raises(sig.KeyFileError, match="block 1 is not an Ed25519 public key"):
        sig.load_public_keys(tmp_path / "rsa.pub")


DUMP = DumpObject("b", "pg_dump_20261120_0100.dump", 1000, "", "primary", "http://p", "2026-11-20")


def test_the_signature_finding_names_the_object_and_the_cause():
    assert signature_finding(DUMP, ManifestRead("w", signature=sig.VERIFIED, sha256="s")) is None
    finding = signature_finding(DUMP, ManifestRead("s3://b/m (primary endpoint)"))
    assert (
        finding.name == "MANIFEST_SIGNATURE_INVALID" and finding.details["cause"] == "no_manifest"
    )
    assert "s3://b/pg_dump_20261120_0100.dump has no manifest beside it" in finding.summary
    read = ManifestRead(
        "w",
        sha256="s",
        signature="malformed",
        signature_problem="the signature is malformed: not base64",
    )
    finding = signature_finding(DUMP, read)
    assert finding.details["cause"] == "signature_malformed" and "not base64" in finding.summary
    assert "@security-oncall" in finding.to_dict()["escalate_to"]


def test_a_head_that_matches_the_manifest_is_no_finding():
    from busflow_verify.core.store.manifest import Manifest

    m = Manifest.__new__(Manifest)
    m.size_bytes, m.sha256 = 1000, "ab" * 32
    assert stored_object_finding(DUMP, m, []) is None
    m.size_bytes = 1001
    finding = stored_object_finding(DUMP, m, [])
    assert (
        finding.details["cause"] == "size_mismatch" and "no mirror is configured" in finding.summary
    )


def _fault(cause: str, endpoint: str = "primary") -> Finding:
    return Finding(
        "OFFSITE_ENDPOINT_DOWN", f"{endpoint}: {cause}", {"cause": cause, "endpoint": endpoint}
    )


@pytest.mark.parametrize(
    "causes, name",
    [
        (["stored_digest_mismatch", "stored_digest_mismatch"], "STORED_OBJECT_MISMATCH"),
        (["stored_digest_mismatch", "unreachable"], "STORED_OBJECT_MISMATCH"),
        (["stored_digest_mismatch", "size_mismatch"], "STORED_OBJECT_MISMATCH"),
        (["stored_digest_mismatch", "integrity_mismatch"], "OFFSITE_ENDPOINT_DOWN"),
        (["transfer_incomplete", "unreachable"], "OFFSITE_ENDPOINT_DOWN"),
        (["unreachable", "not_mirrored"], "OFFSITE_ENDPOINT_DOWN"),
    ],
)
def test_which_download_faults_blame_the_stored_object(causes, name):
    faults = [_fault(c, e) for c, e in zip(causes, ["primary", "fallback"])]
    finding = _unavailable(DUMP, [], faults)
    assert finding.name == name
    if name == "OFFSITE_ENDPOINT_DOWN":
        assert finding.details["cause"] == "all_endpoints_down"
