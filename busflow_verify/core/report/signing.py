"""Signing the evidence and checking its signature: Ed25519 keys, in-toto Statement v1 in a DSSE
envelope (docs/security.md: The evidence's keys).

The crypto is not ours: Ed25519 is pyca/cryptography's, the DSSE envelope and its pre-auth
encoding (PAE) securesystemslib's (`Envelope`, `CryptoSigner`, `SSlibKey`). The envelope's
signature carries the key id securesystemslib derives from the public key, so a verifier given
several public keys (a rotation) knows which one to try; it never trusts a key the evidence
itself carries (it carries none).

The private key is a secret: it is read from the value handed in (PEM text, or the path of a
PEM file) and never put in a message, an exception or a file. Errors name the variable and the
file, never the key's bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SIGNING_KEY_ENV = "BUSFLOW_EVIDENCE_SIGNING_KEY"
PUBLIC_KEY_ENV = "BUSFLOW_EVIDENCE_PUBLIC_KEY"
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.S)
GENPKEY = "openssl genpkey -algorithm ed25519 -out evidence-signing.pem"


class KeyProblem(ValueError):
    """A key could not be used: unreadable, no PEM key in it, not Ed25519, encrypted."""


class EvidenceInvalid(ValueError):
    """An evidence object does not hold: not an envelope, not our statement, a bad signature."""


def _pem_text(value: str, variable: str) -> tuple[str, str]:
    """(the PEM text, where it came from) of a variable that holds PEM text or a file's path."""
    value = value.strip()
    if value.startswith("-----BEGIN"):
        return value, variable
    path = Path(value)
    try:
        return path.read_text(), f"{variable} ({path})"
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyProblem(
            f"{variable}: the key file {path} cannot be read ({type(exc).__name__}); give the "
            "path of a readable PEM file, or the PEM text itself"
        ) from None


def _blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(text)]


@dataclass(frozen=True)
class SigningKey:
    """The evidence's signer (securesystemslib's CryptoSigner over an Ed25519 key). repr shows
    the key id only."""

    signer: Any

    @property
    def keyid(self) -> str:
        return self.signer.public_key.keyid

    def __repr__(self) -> str:
        return f"SigningKey(keyid={self.keyid})"


def load_signing_key(value: str, variable: str = SIGNING_KEY_ENV) -> SigningKey:
    """The Ed25519 private key of `value` (PEM text, or a PEM file's path), as `openssl genpkey
    -algorithm ed25519` writes it. Raises KeyProblem, naming `variable` and the file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    text, where = _pem_text(value, variable)
    private = [block for kind, block in _blocks(text) if "PRIVATE KEY" in kind]
    if not private:
        raise KeyProblem(f"{where} holds no PEM private key; make one with `{GENPKEY}`")
    try:
        key = load_pem_private_key(private[0].encode(), password=None)
    except TypeError:
        raise KeyProblem(f"{where}: the private key is encrypted; give it unencrypted") from None
    except ValueError:
        raise KeyProblem(f"{where}: the PEM private key cannot be read") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyProblem(
            f"{where} holds a {type(key).__name__.lstrip('_')}, not an Ed25519 key; make one "
            f"with `{GENPKEY}`"
        )
    return SigningKey(CryptoSigner(key))


def load_public_keys(value: str, variable: str = PUBLIC_KEY_ENV) -> list[Any]:
    """Every Ed25519 public key of `value` (PEM text or a file's path; several PEM blocks: the
    keys of a rotation), as securesystemslib keys. Raises KeyProblem."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    text, where = _pem_text(value, variable)
    blocks = _blocks(text)
    if any("PRIVATE KEY" in kind for kind, _ in blocks):
        raise KeyProblem(
            f"{where} holds a PRIVATE key: give the public key only "
            "(openssl pkey -in evidence-signing.pem -pubout)"
        )
    keys = []
    for n, (kind, block) in enumerate(blocks, 1):
        try:
            key = load_pem_public_key(block.encode())
        except ValueError:
            raise KeyProblem(f"{where}: PEM block {n} ({kind}) is not a public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyProblem(f"{where}: PEM block {n} is not an Ed25519 public key")
        keys.append(SSlibKey.from_crypto(key))
    if not keys:
        raise KeyProblem(f"{where} holds no PEM public key (-----BEGIN PUBLIC KEY-----)")
    return keys


def canonical_json(data: Any) -> bytes:
    """The statement's bytes: sorted keys, no spaces (the payload is signed as these bytes)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign_statement(statement: dict[str, Any], key: SigningKey) -> bytes:
    """The DSSE envelope (JSON bytes) of `statement`, signed with `key`."""
    from securesystemslib.dsse import Envelope

    envelope = Envelope(canonical_json(statement), PAYLOAD_TYPE, {})
    envelope.sign(key.signer)
    return json.dumps(envelope.to_dict(), indent=2).encode() + b"\n"


@dataclass(frozen=True)
class Verified:
    statement: dict[str, Any]
    keyid: str  # the configured key that verified it


def _envelope(data: bytes, where: str):
    from securesystemslib.dsse import Envelope

    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or not isinstance(raw.get("signatures"), list):
            raise ValueError("no signatures list")
        signatures = [dict(s) for s in raw["signatures"]]
        envelope = Envelope.from_dict({**raw, "signatures": signatures})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EvidenceInvalid(
            f"{where} is not a DSSE envelope ({type(exc).__name__}: "
            f"{str(exc)[:120]}); it was damaged or replaced"
        ) from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise EvidenceInvalid(
            f"{where}: payloadType is {envelope.payload_type!r}, not {PAYLOAD_TYPE}"
        )
    if not envelope.signatures:
        raise EvidenceInvalid(f"{where} carries no signature")
    return envelope


def verify_envelope(data: bytes, keys: list[Any], where: str) -> Verified:
    """The statement of the envelope `data`, once a signature verifies with one of `keys` (the
    configured public keys, never anything in the envelope). Raises EvidenceInvalid."""
    from securesystemslib.exceptions import VerificationError

    envelope = _envelope(data, where)
    signed_by = sorted(envelope.signatures)
    trusted = {k.keyid for k in keys}
    if not trusted & set(signed_by):
        raise EvidenceInvalid(
            f"{where} is signed by key {', '.join(signed_by)}, which is not among the "
            f"{len(keys)} configured public key(s) ({PUBLIC_KEY_ENV})"
        )
    try:
        accepted = envelope.verify(keys, 1)
    except VerificationError:
        raise EvidenceInvalid(
            f"{where}: the signature does not verify with key {', '.join(signed_by)}: the "
            "envelope was altered after it was signed"
        ) from None
    return Verified(_statement(envelope.payload, where), next(iter(accepted)))


def _statement(payload: bytes, where: str) -> dict[str, Any]:
    """The in-toto Statement v1 of a verified payload, its shape checked."""
    try:
        statement = json.loads(payload)
    except ValueError:
        raise EvidenceInvalid(f"{where}: the signed payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise EvidenceInvalid(f"{where}: the payload is not an in-toto Statement v1")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise EvidenceInvalid(f"{where}: the statement has no subject")
    for subject in subjects:
        digest = subject.get("digest") if isinstance(subject, dict) else None
        if not isinstance(digest, dict) or not digest:
            raise EvidenceInvalid(f"{where}: a subject of the statement has no digest")
    if not isinstance(statement.get("predicate"), dict):
        raise EvidenceInvalid(f"{where}: the statement has no predicate")
    return statement


def signature_keyids(data: bytes) -> list[str]:
    """The key ids an envelope's signatures name (for listing; nothing is verified)."""
    try:
        return [str(s.get("keyid")) for s in json.loads(data).get("signatures", [])]
    except (ValueError, AttributeError):
        return []
