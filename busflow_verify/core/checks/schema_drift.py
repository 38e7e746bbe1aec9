"""Schema drift since the last verified dump: tables that appeared or disappeared, and tables
whose columns (name and type) changed.

Each run records its column signature (per table, the columns in order with their types, from
pg_attribute) in the row-count report, so the next run compares with it. A table that
disappeared is ROW_COUNT_DRIFT (core/checks/row_counts.py `compare`: status `missing`, a
failure); a new table or a changed column is a SCHEMA_DRIFT finding, reported at WARN severity:
a notice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from busflow_verify.core.checks.row_counts import USER_TABLE_FILTER
from busflow_verify.core.failures import Finding

# "schema.table" -> [[column, type], ...] in column order (a table without columns has [])
Signature = dict[str, list[list[str]]]

_COLUMNS = f"""
SELECT n.nspname, c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a
       ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE {USER_TABLE_FILTER}
ORDER BY 1, 2, a.attnum
"""

_SHOWN = 5  # tables named in a summary; the details have them all


def column_signatures(connect) -> Signature:
    """The column signature of every user table of the restored database (those it counts)."""
    signature: Signature = {}
    with connect() as conn:
        for schema, table, column, kind in conn.execute(_COLUMNS):
            columns = signature.setdefault(f"{schema}.{table}", [])
            if column is not None:
                columns.append([column, kind])
    return signature


@dataclass
class ColumnChange:
    table: str
    added: list[list[str]] = field(default_factory=list)  # [column, type]
    removed: list[list[str]] = field(default_factory=list)  # [column, type]
    retyped: list[list[str]] = field(default_factory=list)  # [column, old type, new type]

    def describe(self) -> str:
        parts = [f"{c} {old} -> {new}" for c, old, new in self.retyped]
        parts += [f"+{c} {t}" for c, t in self.added]
        parts += [f"-{c} {t}" for c, t in self.removed]
        return "; ".join(parts)


@dataclass
class SchemaDrift:
    baseline_partition: str | None
    appeared: list[str] = field(default_factory=list)
    disappeared: list[str] = field(default_factory=list)
    changed: list[ColumnChange] = field(default_factory=list)
    columns_compared: bool = False  # the baseline recorded a column signature
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "findings"}

    def rows(self) -> list[dict[str, str]]:
        """One row per table that drifted: table, change, columns."""
        return (
            [{"table": t, "change": "appeared", "columns": ""} for t in self.appeared]
            + [{"table": t, "change": "disappeared", "columns": ""} for t in self.disappeared]
            + [
                {"table": c.table, "change": "columns changed", "columns": c.describe()}
                for c in self.changed
            ]
        )


def schema_drift(
    current: Signature,
    previous: Signature | None,
    previous_tables: Iterable[str] | None,
    baseline_partition: str | None = None,
) -> SchemaDrift:
    """Compare this dump's signature with the last verified dump's.

    `previous` is that dump's signature, None when it recorded none (verified before signatures
    were kept): then tables are compared by `previous_tables` (its row counts) and columns not
    at all. With neither there is no baseline and nothing drifted.
    """
    drift = SchemaDrift(baseline_partition)
    if previous is None and previous_tables is None:
        return drift
    before = set(previous) if previous is not None else set(previous_tables or ())
    drift.appeared = sorted(set(current) - before)
    drift.disappeared = sorted(before - set(current))
    if previous is not None:
        drift.columns_compared = True
        for table in sorted(set(current) & before):
            change = _column_change(table, previous[table], current[table])
            if change is not None:
                drift.changed.append(change)
    if drift.appeared or drift.changed:
        drift.findings.append(Finding("SCHEMA_DRIFT", _summary(drift), drift.to_dict()))
    return drift


def _column_change(table: str, before: list, after: list) -> ColumnChange | None:
    old, new = dict(map(tuple, before)), dict(map(tuple, after))
    change = ColumnChange(
        table,
        added=[[c, t] for c, t in after if c not in old],
        removed=[[c, t] for c, t in before if c not in new],
        retyped=[[c, old[c], t] for c, t in after if c in old and old[c] != t],
    )
    return change if change.added or change.removed or change.retyped else None


def _summary(drift: SchemaDrift) -> str:
    parts = []
    if drift.appeared:
        parts.append(f"{len(drift.appeared)} new table(s): " + ", ".join(drift.appeared[:_SHOWN]))
    if drift.changed:
        parts.append(
            f"columns changed in {len(drift.changed)} table(s): "
            + ", ".join(f"{c.table} ({c.describe()})" for c in drift.changed[:_SHOWN])
        )
    return (
        f"schema changed since the last verified dump ({drift.baseline_partition}): "
        + "; ".join(parts)
    )
