"""`busflow-verify dump`: the producer (core/store/producer.py), with `--signing-key` to sign the
manifest and `--upload` to the primary endpoint and bucket of the verify configuration. Dagster is imported only for the upload: a
dump alone does not wait for it."""

from __future__ import annotations

import json
import os
import sys

from busflow_verify.cli.parser import UsageError
from busflow_verify.core.store.producer import ProducerError, produce, upload
from busflow_verify.core.store.signature import KeyFileError, SigningKey


def dump(args) -> int:
    if not args.dsn:
        raise UsageError("dump: --dsn (or BUSFLOW_SOURCE_DSN) is required")
    if args.upload:
        from busflow_verify.defs import environment

        if missing := [n for n in environment.REQUIRED[:2] if not environment.is_set(n)]:
            raise UsageError(f"dump --upload: {', '.join(missing)} not set")
    listed = (
        [t.strip() for t in args.exact_tables.split(",") if t.strip()]
        if args.exact_tables
        else None
    )
    key = _signing_key(args.signing_key)  # before pg_dump: a bad key file costs no dump
    try:
        result = produce(
            args.dsn,
            args.out,
            listed,
            args.pg_bin,
            log=lambda line: print(line, file=sys.stderr),
            password=os.environ.get("PGPASSWORD"),  # libpq's own variable, for a DSN without one
            fingerprints=not args.no_fingerprints,
            signing_key=key,
        )
    except ProducerError as exc:
        print(f"busflow-verify dump: {exc}", file=sys.stderr)
        return 1
    uploaded = _upload(result) if args.upload else []
    print(
        json.dumps(
            {
                "uploaded": uploaded,
                "dump": str(result.dump_path),
                "manifest": str(result.manifest_path),
                "signature": str(result.signature_path) if result.signature_path else None,
                "fingerprint_method": result.manifest.fingerprint_method,
                "size_bytes": result.manifest.size_bytes,
                "sha256": result.manifest.sha256,
                "tables": len(result.manifest.tables),
                "seconds": result.seconds,
            }
        )
    )
    return 0


def _signing_key(path: str | None) -> SigningKey | None:
    """--signing-key's key, loaded (the file's name in any error, never its content)."""
    if path is None:
        return None
    try:
        return SigningKey(path)
    except KeyFileError as exc:
        raise UsageError(f"dump --signing-key: {exc}") from None


def _upload(result) -> list[str]:
    from busflow_verify.defs.resources import built_backup_store

    with built_backup_store() as store:
        return upload(store.primary.client(), store.bucket, store.prefix, result)
