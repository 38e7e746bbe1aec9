"""Runbook step 5 and F3: the soft-foreign-key sweep against the allowlist.

One anti-join per soft FK: child rows whose non-null key has no parent row. Identifiers come
from configuration and are quoted by the driver.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from busflow_verify.core.config import ColumnRef, SoftFK, SoftFKAllowlist
from busflow_verify.core.failures import Finding


@dataclass
class OrphanResult:
    child: str
    parent: str
    orphans: int | None
    max_orphans: int
    passed: bool
    error: str | None = None


@dataclass
class SweepReport:
    results: list[OrphanResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.results]


def orphan_count_query(child: ColumnRef, parent: ColumnRef) -> sql.Composed:
    return sql.SQL(
        "SELECT count(*) FROM {cs}.{ct} AS c WHERE c.{cc} IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM {ps}.{pt} AS p WHERE p.{pc} = c.{cc})"
    ).format(
        cs=sql.Identifier(child.schema_name), ct=sql.Identifier(child.table),
        cc=sql.Identifier(child.column), ps=sql.Identifier(parent.schema_name),
        pt=sql.Identifier(parent.table), pc=sql.Identifier(parent.column),
    )


def sweep_one(conn, fk: SoftFK) -> OrphanResult:
    try:
        count = conn.execute(orphan_count_query(fk.child_ref, fk.parent_ref)).fetchone()[0]
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn,
            psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction) as exc:
        conn.rollback()
        error = exc.diag.message_primary or str(exc)
        return OrphanResult(fk.child, fk.parent, None, fk.max_orphans, False, error)
    return OrphanResult(fk.child, fk.parent, count, fk.max_orphans, count <= fk.max_orphans)


def sweep(conn, allowlist: SoftFKAllowlist) -> SweepReport:
    report = SweepReport()
    for fk in allowlist.soft_fks:
        report.results.append(sweep_one(conn, fk))
    surged = [r for r in report.results if r.orphans is not None and not r.passed]
    broken = [r for r in report.results if r.error]
    if surged:
        report.findings.append(Finding(
            "ORPHAN_FK_SURGE",
            "; ".join(f"{r.child} -> {r.parent}: {r.orphans} orphans, allowlist max_orphans "
                      f"{r.max_orphans}" for r in surged),
            {"surges": [asdict(r) for r in surged]},
        ))
    if broken:
        report.findings.append(Finding(
            "ORPHAN_FK_SURGE",
            "soft-fk-allowlist.yaml names columns the restored dump does not have, so they could "
            "not be swept: " + "; ".join(f"{r.child} -> {r.parent}: {r.error}" for r in broken) +
            " (fix the allowlist entry or find out why the schema changed)",
            {"unsweepable": [asdict(r) for r in broken]},
        ))
    return report
