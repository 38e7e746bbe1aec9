"""Runbook step 5 and F3: the soft-foreign-key sweep, triaged against the scrub log.

One anti-join per soft FK: child rows whose non-null key has no parent row. Where the allowlist
names the child's tenant column, each orphan is classified in the same query: *expected* when its
tenant has a tenant_scrub_logs entry (a scheduled scrub tombstoned the parent), *unexpected*
otherwise (an application bug). Orphans spanning more than one tenant make an F3 a P1. A
`justification` UUID missing from the restored scrub log fails the check: a tolerance justified
by nothing is not justified. Identifiers come from configuration and are quoted by the driver.
Independent sweeps run concurrently, one connection each, up to `sweep.max_connections`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from busflow_verify.core.config import ColumnRef, ScrubLogConfig, SoftFK, SoftFKAllowlist
from busflow_verify.core.failures import Finding

SAMPLE = 5
_SCHEMA_ERRORS = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn,
                  psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction)


@dataclass
class OrphanResult:
    child: str
    parent: str
    orphans: int | None
    max_orphans: int
    passed: bool
    error: str | None = None
    tenants: int | None = None  # distinct tenants among the orphans (tenant_column set)
    expected_orphans: int | None = None  # whose tenant has a scrub-log entry
    unexpected_orphans: int | None = None
    sample_expected: list = field(default_factory=list)
    sample_unexpected: list = field(default_factory=list)
    scrub_log_ids: list[str] = field(default_factory=list)  # entries of the orphans' tenants
    justification: list[str] = field(default_factory=list)
    unknown_justification: list[str] = field(default_factory=list)


@dataclass
class SweepReport:
    results: list[OrphanResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.results]


def _ids(ref: ColumnRef) -> dict[str, sql.Identifier]:
    return {"s": sql.Identifier(ref.schema_name), "t": sql.Identifier(ref.table),
            "c": sql.Identifier(ref.column)}


def _scrub_ids(scrub: ScrubLogConfig) -> dict[str, sql.Identifier]:
    schema, table = scrub.table.split(".")
    return {"ss": sql.Identifier(schema), "st": sql.Identifier(table),
            "sid": sql.Identifier(scrub.id_column), "stc": sql.Identifier(scrub.tenant_column)}


def orphan_count_query(child: ColumnRef, parent: ColumnRef) -> sql.Composed:
    c, p = _ids(child), _ids(parent)
    return sql.SQL(
        "SELECT count(*) FROM {cs}.{ct} AS c WHERE c.{cc} IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM {ps}.{pt} AS p WHERE p.{pc} = c.{cc})"
    ).format(cs=c["s"], ct=c["t"], cc=c["c"], ps=p["s"], pt=p["t"], pc=p["c"])


def triage_query(fk: SoftFK, scrub: ScrubLogConfig) -> sql.Composed:
    """Count, tenants, expected, samples per class and the scrub-log ids, in one pass."""
    c, p = _ids(fk.child_ref), _ids(fk.parent_ref)
    return sql.SQL("""
        WITH orphans AS (
            SELECT c.{cc} AS key, c.{tc} AS tenant,
                   EXISTS (SELECT 1 FROM {ss}.{st} AS s WHERE s.{stc} = c.{tc}) AS expected
            FROM {cs}.{ct} AS c
            WHERE c.{cc} IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM {ps}.{pt} AS p WHERE p.{pc} = c.{cc}))
        SELECT count(*), count(DISTINCT tenant), count(*) FILTER (WHERE expected),
               (array_agg(key::text ORDER BY key) FILTER (WHERE expected))[1:{n}],
               (array_agg(key::text ORDER BY key) FILTER (WHERE NOT expected))[1:{n}],
               (SELECT array_agg(DISTINCT s.{sid}::text) FROM {ss}.{st} AS s
                WHERE s.{stc} IN (SELECT tenant FROM orphans))
        FROM orphans
    """).format(cs=c["s"], ct=c["t"], cc=c["c"], ps=p["s"], pt=p["t"], pc=p["c"],
                tc=sql.Identifier(fk.tenant_column), n=sql.Literal(SAMPLE), **_scrub_ids(scrub))


def unknown_justification(conn, fk: SoftFK, scrub: ScrubLogConfig) -> list[str]:
    if not fk.justification:
        return []
    wanted = [str(u) for u in fk.justification]
    query = sql.SQL("SELECT {sid}::text FROM {ss}.{st} WHERE {sid}::text = ANY(%s)").format(
        **_scrub_ids(scrub))
    found = {r[0] for r in conn.execute(query, (wanted,))}
    return [u for u in wanted if u not in found]


def sweep_one(conn, fk: SoftFK, scrub: ScrubLogConfig) -> OrphanResult:
    result = OrphanResult(fk.child, fk.parent, None, fk.max_orphans, False,
                          justification=[str(u) for u in fk.justification])
    try:
        if fk.tenant_column:
            row = conn.execute(triage_query(fk, scrub)).fetchone()
            result.orphans, result.tenants, result.expected_orphans = row[0], row[1], row[2]
            result.unexpected_orphans = row[0] - row[2]
            result.sample_expected, result.sample_unexpected = row[3] or [], row[4] or []
            result.scrub_log_ids = sorted(row[5] or [])
        else:
            result.orphans = conn.execute(
                orphan_count_query(fk.child_ref, fk.parent_ref)).fetchone()[0]
        result.unknown_justification = unknown_justification(conn, fk, scrub)
    except _SCHEMA_ERRORS as exc:
        result.error = exc.diag.message_primary or str(exc)
        return result
    result.passed = result.orphans <= fk.max_orphans and not result.unknown_justification
    return result


def sweep(connect, allowlist: SoftFKAllowlist, scrub: ScrubLogConfig,
          max_connections: int = 2) -> SweepReport:
    """`connect()` opens one autocommit connection to the restored database per sweep."""

    def run(fk: SoftFK) -> OrphanResult:
        with connect() as conn:
            return sweep_one(conn, fk, scrub)

    with ThreadPoolExecutor(max_workers=max_connections) as pool:
        results = list(pool.map(run, allowlist.soft_fks))
    report = SweepReport(results)
    report.findings = [f for r in results if (f := _finding(r))]
    return report


def _finding(r: OrphanResult) -> Finding | None:
    if r.error:
        return Finding(
            "ORPHAN_FK_SURGE",
            f"soft-fk-allowlist.yaml names columns the restored dump does not have, so "
            f"{r.child} -> {r.parent} could not be swept: {r.error} (fix the allowlist entry or "
            "find out why the schema changed)",
            {"unsweepable": asdict(r)})
    if r.unknown_justification:
        return Finding(
            "ORPHAN_FK_SURGE",
            f"{r.child} -> {r.parent}: justification UUID(s) {', '.join(r.unknown_justification)} "
            "do not exist in the restored scrub log: a tolerance justified by nothing is not "
            f"justified ({r.orphans} orphans, max_orphans {r.max_orphans})",
            {"cause": "unknown_justification", "surges": [asdict(r)]},
            next_step="Fix the justification in soft-fk-allowlist.yaml with real tenant_scrub_logs "
                      "UUIDs, or lower max_orphans back.")
    if r.passed:
        return None
    spanning = r.tenants is not None and r.tenants > 1
    return Finding(
        "ORPHAN_FK_SURGE",
        f"{r.child} -> {r.parent}: {r.orphans} orphans, allowlist max_orphans {r.max_orphans}"
        + (f", across {r.tenants} tenants" if r.tenants is not None else "")
        + f". {_triage_sentence(r)}",
        {"surges": [asdict(r)], "tenant_spanning": spanning},
        severity="P1" if spanning else None,
        next_step=_triage_step(r))


def _triage_sentence(r: OrphanResult) -> str:
    if r.expected_orphans is None:
        return "No tenant_column in the allowlist entry: triage by hand against tenant_scrub_logs."
    if r.unexpected_orphans == 0:
        return (f"All {r.orphans} are expected: their tenants have scrub-log entries "
                f"({', '.join(r.scrub_log_ids[:5])}); raising max_orphans is allowed with these "
                "UUIDs in justification")
    return (f"{r.unexpected_orphans} unexpected (no scrub-log entry for their tenant, e.g. keys "
            f"{', '.join(r.sample_unexpected)}), {r.expected_orphans} expected: an application "
            "bug deleted referenced rows")


def _triage_step(r: OrphanResult) -> str:
    if r.expected_orphans is not None and r.unexpected_orphans == 0:
        return ("Expected: raise max_orphans only with the scrub-log UUIDs in justification "
                "(F3 step 2); never blanket-raise.")
    return "Unexpected: open a P2 issue and pin the FK (F3 step 2). Never blanket-raise a tolerance."
