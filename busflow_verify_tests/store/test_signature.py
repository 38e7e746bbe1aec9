"""The signed manifest end to end: `busflow-verify dump --signing-key` signs what it writes, an
independent verifier (openssl) accepts the signature, and verify with
BUSFLOW_MANIFEST_PUBLIC_KEY refuses before any download a manifest edited after signing, an
unsigned one and a missing one. The private key reaches no log, metadata or child process."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess

import dagster as dg
import pytest

from busflow_verify import cli
from busflow_verify.core.store import producer as producer_mod
from busflow_verify.core.store.manifest import manifest_key
from busflow_verify_tests.conftest import busflow_sql, database_with

pytestmark = pytest.mark.e2e

DAY, KEY = "2026-11-20", "pg_dump_20261120_0100.dump"
SIG = manifest_key(KEY) + ".sig"


def _openssl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl here")
    return subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two Ed25519 key pairs, as `openssl genpkey` writes them, and their public halves."""
    folder = tmp_path_factory.mktemp("keys")
    for name in ("old", "new"):
        made = _openssl("genpkey", "-algorithm", "ed25519", "-out", str(folder / f"{name}.pem"))
        assert made.returncode == 0, made.stderr
        _openssl(
            "pkey",
            "-in",
            str(folder / f"{name}.pem"),
            "-pubout",
            "-out",
            str(folder / f"{name}.pub"),
        )
    return folder


@pytest.fixture(scope="module")
def source_dsn(source_pg):
    return database_with(source_pg, "signed_src", busflow_sql())


def _signed_dump(tmp_path, source_dsn, key) -> dict:
    out = tmp_path / KEY
    code = cli.main(["dump", "--dsn", source_dsn, "--out", str(out), "--signing-key", str(key)])
    assert code == 0
    return {
        "dump": out,
        "manifest": tmp_path / manifest_key(KEY),
        "sig": tmp_path / SIG,
    }


def _dump_object_metadata(run_id: str) -> dict:
    with dg.DagsterInstance.get() as instance:
        record = instance.get_latest_materialization_event(dg.AssetKey("dump_object"))
        assert record is not None and record.run_id == run_id
        return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_a_signed_manifest_verifies_and_openssl_agrees(
    harness, source_dsn, keys, tmp_path, monkeypatch
):
    files = _signed_dump(tmp_path, source_dsn, keys / "new.pem")
    text = files["sig"].read_text()
    assert text.endswith("\n") and len(text.strip().splitlines()) == 1
    raw = base64.b64decode(text)
    assert len(raw) == 64
    assert json.loads(files["manifest"].read_text())["tables"]  # readable, as it was
    # an independent verifier: OpenSSL's Ed25519 over the manifest file's bytes
    (tmp_path / "sig.bin").write_bytes(raw)
    checked = _openssl(
        "pkeyutl", "-verify", "-pubin", "-inkey", str(keys / "new.pub"), "-rawin",
        "-in", str(files["manifest"]), "-sigfile", str(tmp_path / "sig.bin"),
    )  # fmt: skip
    assert checked.returncode == 0 and "Signature Verified Successfully" in checked.stdout
    for name in ("dump", "sig", "manifest"):
        harness.put({"dump": KEY, "sig": SIG, "manifest": manifest_key(KEY)}[name], files[name])
    # rotation: the file holds the old key and the new one; either verifying is enough
    ring = tmp_path / "ring.pem"
    ring.write_bytes((keys / "old.pub").read_bytes() + (keys / "new.pub").read_bytes())
    monkeypatch.setenv("BUSFLOW_MANIFEST_PUBLIC_KEY", str(ring))
    code, verdict = harness.verify(DAY)
    assert (code, verdict["verified"]) == (0, True), verdict["failures"]
    metadata = _dump_object_metadata(verdict["run_id"])
    assert metadata["manifest_signature"] == "verified"
    assert metadata["manifest_sha256"] == hashlib.sha256(files["manifest"].read_bytes()).hexdigest()


def _refused(harness, verdict) -> dict:
    [failure] = verdict["failures"]
    assert (failure["code"], failure["name"], failure["severity"]) == (
        "F2",
        "MANIFEST_SIGNATURE_INVALID",
        "P1",
    )
    assert failure["escalate_to"] == ["@infra-oncall", "@data-oncall", "@security-oncall"]
    assert f"s3://{harness.bucket}/{KEY}" in failure["summary"]
    assert verdict["restore"] is None and verdict["row_counts"] == {}  # nothing restored
    assert verdict["cutover_halt"] is None
    return failure


def test_a_manifest_edited_after_signing_is_refused(
    harness, source_dsn, keys, tmp_path, monkeypatch
):
    files = _signed_dump(tmp_path, source_dsn, keys / "new.pem")
    manifest = json.loads(files["manifest"].read_text())
    manifest["tables"]["commerce.bookings"]["rows"] -= 7  # whoever swapped the dump
    harness.put(KEY, files["dump"])
    harness.put(SIG, files["sig"])
    harness.put(manifest_key(KEY), json.dumps(manifest, indent=2).encode() + b"\n")
    monkeypatch.setenv("BUSFLOW_MANIFEST_PUBLIC_KEY", str(keys / "new.pub"))
    code, verdict = harness.verify(DAY)
    assert code == 1, verdict
    failure = _refused(harness, verdict)
    assert failure["details"]["cause"] == "signature_mismatch"
    assert "does not verify with any configured public key" in failure["summary"]


def test_an_unsigned_manifest_and_no_manifest_are_refused_when_a_key_is_configured(
    harness, source_dsn, keys, tmp_path, monkeypatch
):
    files = _signed_dump(tmp_path, source_dsn, keys / "new.pem")
    harness.put(KEY, files["dump"])
    harness.put(manifest_key(KEY), files["manifest"])  # no .sig beside it
    monkeypatch.setenv("BUSFLOW_MANIFEST_PUBLIC_KEY", str(keys / "new.pub"))
    code, verdict = harness.verify(DAY)
    assert code == 1, verdict
    assert _refused(harness, verdict)["details"]["cause"] == "signature_missing"
    harness.put(SIG, b"not base64 at all!\n")
    code, verdict = harness.verify(DAY)
    assert _refused(harness, verdict)["details"]["cause"] == "signature_malformed"
    (harness.bucket_dir / SIG).unlink()
    (harness.bucket_dir / manifest_key(KEY)).unlink()
    harness.s3.settle()
    code, verdict = harness.verify(DAY)
    assert _refused(harness, verdict)["details"]["cause"] == "no_manifest"
    # without a key, nothing changes: the same unsigned dump verifies
    monkeypatch.delenv("BUSFLOW_MANIFEST_PUBLIC_KEY")
    code, verdict = harness.verify(DAY)
    assert (code, verdict["verified"]) == (0, True), verdict["failures"]
    assert _dump_object_metadata(verdict["run_id"])["manifest_signature"] == "no_manifest"


def test_a_public_key_file_that_cannot_be_used_is_a_configuration_error(
    harness, tmp_path, monkeypatch, capsys
):
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    for path, said in (
        (empty, "holds no PUBLIC KEY block"),
        (tmp_path / "nope.pem", "cannot be read"),
    ):
        monkeypatch.setenv("BUSFLOW_MANIFEST_PUBLIC_KEY", str(path))
        capsys.readouterr()
        assert cli.main(["verify", "--date", DAY, "--json"]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and said in err and "BUSFLOW_MANIFEST_PUBLIC_KEY" in err


def test_the_private_key_reaches_no_log_metadata_or_child_process(
    harness, source_dsn, keys, tmp_path, monkeypatch, capsys
):
    pem = (keys / "new.pem").read_text()
    body = "".join(line for line in pem.splitlines() if "-----" not in line)
    seen, real = [], subprocess.Popen

    def popen(args, *a, **kw):
        seen.append((list(args), dict(kw.get("env") or {})))
        return real(args, *a, **kw)

    monkeypatch.setattr(producer_mod.subprocess, "Popen", popen)
    capsys.readouterr()
    out = tmp_path / KEY
    code = cli.main(
        ["dump", "--dsn", source_dsn, "--out", str(out), "--signing-key", str(keys / "new.pem"),
         "--upload"]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert json.loads(printed.out)["uploaded"] == [KEY, SIG, manifest_key(KEY)]
    assert seen, "pg_dump was not started"
    for argv, env in seen:
        everything = " ".join(argv) + " ".join(f"{k}={v}" for k, v in env.items())
        assert body not in everything and body[:40] not in everything
        assert not any("new.pem" in v for v in env.values())
    written = [printed.out, printed.err, (tmp_path / manifest_key(KEY)).read_text()]
    written.append((tmp_path / SIG).read_text())
    for text in written:
        assert body[:40] not in text
    monkeypatch.setenv("BUSFLOW_MANIFEST_PUBLIC_KEY", str(keys / "new.pub"))
    code, verdict = harness.verify(DAY)
    assert code == 0, verdict
    assert body[:40] not in json.dumps(verdict) + harness.last_stderr
    # a key file that is not a key: named, its content never repeated
    bad = tmp_path / "bad.pem"
    bad.write_text(
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldC1zZWNyZXQ=\n-----END PRIVATE KEY-----\n"
    )
    capsys.readouterr()
    assert (
        cli.main(["dump", "--dsn", source_dsn, "--out", str(out), "--signing-key", str(bad)]) == 2
    )
    err = capsys.readouterr().err
    assert str(bad) in err and "c2VjcmV0" not in err and "not a PEM private key" in err
