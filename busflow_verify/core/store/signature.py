"""The manifest's detached signature: Ed25519 over the manifest file's exact bytes.

`busflow-verify dump --signing-key FILE` signs the manifest it writes with an Ed25519 private key
(PEM, PKCS#8: `openssl genpkey -algorithm ed25519 -out key.pem`) and writes
`<name>.manifest.json.sig` beside it: the raw 64-byte signature, base64-encoded on one line. The
manifest itself stays as it was (readable JSON), so any Ed25519 verifier can check it, e.g.
`base64 -d x.manifest.json.sig > sig.bin && openssl pkeyutl -verify -pubin -inkey pub.pem -rawin
-in x.manifest.json -sigfile sig.bin`.

Verify with `BUSFLOW_MANIFEST_PUBLIC_KEY=FILE` checks it before anything is downloaded. FILE holds
one or more PEM `PUBLIC KEY` blocks (`openssl pkey -in key.pem -pubout`): any one of them
verifying is enough, which is how a key is rotated (docs/security.md).

The private key's bytes are read here and nowhere else: they are never logged, never put in an
error, never handed to a child process; `SigningKey` shows only its file's name.

Plain Python, no Dagster.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

SIGNATURE_SUFFIX = ".sig"
SIGNATURE_BYTES = 64
MAX_SIGNATURE_FILE = 4096
_PUBLIC_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----\s+.*?-----END PUBLIC KEY-----", re.DOTALL)

# What dump_object records (its metadata `manifest_signature`)
VERIFIED = "verified"
NOT_SIGNED = "not_signed"
NOT_CHECKED = "not_checked"  # no public key configured
NO_MANIFEST = "no_manifest"


class KeyFileError(ValueError):
    """A key file that cannot be used: names the file and what to do; never its content."""


class SignatureError(ValueError):
    """A signature file that is not one base64 line of 64 bytes."""


def signature_path(manifest_path: str | Path) -> Path:
    return Path(str(manifest_path) + SIGNATURE_SUFFIX)


def signature_key(manifest_key: str) -> str:
    """The signature's object key beside the manifest's."""
    return manifest_key + SIGNATURE_SUFFIX


def _read(path: str | Path, what: str, env_hint: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(
            f"{what} {path} cannot be read ({exc.strerror or type(exc).__name__}): {env_hint}"
        ) from None


class SigningKey:
    """An Ed25519 private key loaded from a PEM (PKCS#8) file; shows only the file's name."""

    def __init__(self, path: str | Path):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.path = str(path)
        hint = "give --signing-key an Ed25519 private key (openssl genpkey -algorithm ed25519)"
        data = _read(path, "the signing key", hint)
        try:
            key = load_pem_private_key(data, password=None)
        except TypeError:
            raise KeyFileError(
                f"the signing key {self.path} is encrypted: give an unencrypted PKCS#8 PEM key "
                "file readable only by the producer's user"
            ) from None
        except Exception:
            raise KeyFileError(
                f"the signing key {self.path} is not a PEM private key: {hint}"
            ) from None
        finally:
            del data
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"the signing key {self.path} is not an Ed25519 key: {hint}")
        self._key = key

    def sign(self, data: bytes) -> bytes:
        """The signature file's content: base64 of the raw 64-byte signature, one line."""
        return base64.b64encode(self._key.sign(data)) + b"\n"

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __repr__(self) -> str:
        return f"SigningKey({self.path})"

    def __reduce__(self):
        raise TypeError("a signing key is never pickled")


@dataclass(frozen=True)
class PublicKey:
    key_id: str  # the first 16 hex digits of the SHA-256 of its raw 32 bytes
    key: object  # Ed25519PublicKey


def load_public_keys(path: str | Path, variable: str = "BUSFLOW_MANIFEST_PUBLIC_KEY") -> list:
    """Every PEM `PUBLIC KEY` block of `path` (rotation: several are allowed), each Ed25519."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    hint = f"set {variable} to a PEM file of Ed25519 public keys (openssl pkey -pubout)"
    blocks = _PUBLIC_BLOCK.findall(_read(path, "the manifest public key file", hint))
    if not blocks:
        raise KeyFileError(f"the manifest public key file {path} holds no PUBLIC KEY block: {hint}")
    keys = []
    for number, block in enumerate(blocks, start=1):
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError:
            key = None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(
                f"the manifest public key file {path}: PUBLIC KEY block {number} is not an "
                f"Ed25519 public key: {hint}"
            )
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys.append(PublicKey(hashlib.sha256(raw).hexdigest()[:16], key))
    return keys


def decode_signature(text: bytes) -> bytes:
    """The raw signature from a `.sig` file's content; SignatureError when it is not one line of
    base64 that decodes to 64 bytes."""
    line = text.strip()
    if len(text) > MAX_SIGNATURE_FILE or b"\n" in line:
        raise SignatureError("not one line of base64")
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("not base64") from None
    if len(raw) != SIGNATURE_BYTES:
        raise SignatureError(f"{len(raw)} bytes, an Ed25519 signature is {SIGNATURE_BYTES}")
    return raw


@dataclass(frozen=True)
class SignatureCheck:
    """The signature of one manifest against the configured keys."""

    status: str  # VERIFIED, or why not: "not_signed", "malformed", "mismatch"
    key_id: str | None = None  # the key that verified it
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == VERIFIED


def check_signature(data: bytes, signature: bytes | None, keys: list) -> SignatureCheck:
    """`signature` (a `.sig` file's content, None when there is none) over `data` (the manifest's
    exact bytes) against `keys`: any one verifying is enough."""
    from cryptography.exceptions import InvalidSignature

    if signature is None:
        return SignatureCheck(NOT_SIGNED, problem="there is no signature beside it")
    try:
        raw = decode_signature(signature)
    except SignatureError as exc:
        return SignatureCheck("malformed", problem=f"the signature is malformed: {exc}")
    for public in keys:
        try:
            public.key.verify(raw, data)
        except InvalidSignature:
            continue
        return SignatureCheck(VERIFIED, key_id=public.key_id)
    ids = ", ".join(k.key_id for k in keys)
    return SignatureCheck(
        "mismatch",
        problem=f"the signature does not verify with any configured public key ({ids}): the "
        "manifest was changed after it was signed, or signed by another key",
    )
