"""F3 step 3, enforced before merge: never raise a soft-FK tolerance without the scrub-log
justification — "the single most common way GDPR tombstone contracts drift".

A change to soft-fk-allowlist.yaml is compared with the version it replaces (for a pull request:
the file on the target branch). Raising a `max_orphans`, or adding an entry with a non-zero one,
needs at least one `justification` UUID that the earlier version did not have.
"""

from __future__ import annotations

from busflow_verify.core.config import SoftFKAllowlist


def unjustified_changes(base: SoftFKAllowlist, current: SoftFKAllowlist) -> list[str]:
    before = {(fk.child, fk.parent): fk for fk in base.soft_fks}
    problems = []
    for fk in current.soft_fks:
        old = before.get((fk.child, fk.parent))
        new_uuids = set(fk.justification) - set(old.justification if old else [])
        name = f"{fk.child} -> {fk.parent}"
        if old is None and fk.max_orphans > 0 and not new_uuids:
            problems.append(
                f"entry {name} is added with max_orphans {fk.max_orphans} and no "
                "justification UUID (tenant_scrub_logs id)"
            )
        elif old is not None and fk.max_orphans > old.max_orphans and not new_uuids:
            problems.append(
                f"entry {name}: max_orphans raised {old.max_orphans} -> "
                f"{fk.max_orphans} without a justification UUID the base version "
                "did not have"
            )
    return problems
