"""Promotion of `verified-latest` after a run (defs/finish.py): only verified, only forward."""

from __future__ import annotations

from typing import Any

from busflow_verify.core.cutover import CutoverHalt
from busflow_verify.core.pointer import (
    pointer_record,
    promotion_decision,
    read_pointer,
    write_pointer,
)
from busflow_verify.core.verdict import Verdict
from busflow_verify.defs.resources import BackupStore


def promote(
    verdict: Verdict, store: BackupStore, log, halt: CutoverHalt | None = None
) -> dict[str, Any]:
    """Move the pointer to the verdict's dump if it is verified and newer; mirror it. A
    promotion ends a cutover halt: a verified dump exists again."""
    primary = store.primary.client()
    current = read_pointer(primary, store.bucket, store.prefix)
    promote_it, why = promotion_decision(verdict, current)
    log(why)
    if not promote_it:
        return {"promoted": False, "reason": why, "pointer": current}
    record = pointer_record(verdict)
    write_pointer(primary, store.bucket, store.prefix, record)
    if halt and halt.get():
        halt.clear()
        log("cutover halt lifted: a verified dump is promoted")
    mirrored = False
    if store.fallback:
        try:
            write_pointer(store.fallback.client(), store.bucket, store.prefix, record)
            mirrored = True
        except Exception as exc:  # the mirror is best effort; the primary is the pointer
            log(f"verified-latest not mirrored to the fallback ({type(exc).__name__})")
    return {"promoted": True, "reason": why, "pointer": record, "mirrored": mirrored}
