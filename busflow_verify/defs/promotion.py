"""Promotion of `verified-latest` after a run (defs/finish.py): only verified, only forward.

The read, the decision and the write are one compare-and-swap (core/store/pointer.py
`advance_pointer`): a conditional write where the store honours it, else a lock object; so
promotions of different dates at once end on the newest and never move the pointer back.
"""

from __future__ import annotations

from typing import Any

from busflow_verify.core.report.cutover import CutoverHalt
from busflow_verify.core.store.pointer import (
    advance_pointer,
    moves_forward,
    pointer_record,
    promotion_decision,
)
from busflow_verify.core.verdict import Verdict
from busflow_verify.defs.resources import BackupStore


def promote(
    verdict: Verdict, store: BackupStore, log, halt: CutoverHalt | None = None, **cas
) -> dict[str, Any]:
    """Move the pointer to the verdict's dump if it is verified and newer than the pointer as it
    stands when written; mirror it (only forward there too). A promotion ends a cutover halt: a
    verified dump exists again. `cas`: advance_pointer's knobs (the tests')."""

    def decide(current):
        promote_it, why = promotion_decision(verdict, current)
        return promote_it, why, pointer_record(verdict) if promote_it else None

    advanced = advance_pointer(store.primary.client(), store.bucket, store.prefix, decide, **cas)
    log(advanced.why)
    if not advanced.moved:
        return {"promoted": False, "reason": advanced.why, "pointer": advanced.pointer}
    record = advanced.pointer
    if halt and halt.get():
        halt.clear()
        log("cutover halt lifted: a verified dump is promoted")
    mirrored = False
    if store.fallback:
        try:
            mirror = advance_pointer(
                store.fallback.client(),
                store.bucket,
                store.prefix,
                lambda current: (moves_forward(current, record), "mirrored", record),
                **cas,
            )
            mirrored = mirror.moved
            if not mirror.moved:
                log("verified-latest not mirrored: the fallback's pointer is already newer")
        except Exception as exc:  # the mirror is best effort; the primary is the pointer
            log(f"verified-latest not mirrored to the fallback ({type(exc).__name__})")
    return {
        "promoted": True,
        "reason": advanced.why,
        "pointer": record,
        "mirrored": mirrored,
        "method": advanced.method,
    }
