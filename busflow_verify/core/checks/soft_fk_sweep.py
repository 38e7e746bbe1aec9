"""Runbook step 5 and F3: the soft-foreign-key sweep, triaged against the scrub log.

One anti-join per soft FK: child rows whose non-null key has no parent row (integer keys are
probed against a bitmap of the parent's keys, see ParentKeys). Where the allowlist
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
_SCHEMA_ERRORS = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.UndefinedFunction,
)


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
    return {
        "s": sql.Identifier(ref.schema_name),
        "t": sql.Identifier(ref.table),
        "c": sql.Identifier(ref.column),
    }


def _scrub_ids(scrub: ScrubLogConfig) -> dict[str, sql.Identifier]:
    schema, table = scrub.table.split(".")
    return {
        "ss": sql.Identifier(schema),
        "st": sql.Identifier(table),
        "sid": sql.Identifier(scrub.id_column),
        "stc": sql.Identifier(scrub.tenant_column),
    }


# Parent keys spanning up to 64 * 4 M ids are tested against a bitmap (32 MB per process);
# wider or non-integer keys fall back to the hash anti join.
BITMAP_MAX_WORDS = 1 << 22
_INTEGER_TYPES = {"smallint", "integer", "bigint"}


@dataclass(frozen=True)
class ParentKeys:
    """How a sweep tests "this child key has a parent row".

    With integer keys the parent's key set becomes a bitmap of 64-bit words (bit k of word w is
    key 64 * w + k), built once per query and probed by array subscript. A hash anti join probes
    a table of ~50 bytes per parent row, which stops fitting any cache long before 10 M child
    rows; the bitmap is 1 bit per id in the parent's key range, so the sweep runs at about the
    speed of scanning the child. `lo`/`hi` are the parent's smallest and largest key; None means
    the hash anti join (non-integer keys, an empty parent, or a key range too wide).
    """

    lo: int | None = None
    hi: int | None = None

    @property
    def bitmap(self) -> bool:
        return self.lo is not None


def parent_keys(conn, child: ColumnRef, parent: ColumnRef) -> ParentKeys:
    if {_column_type(conn, child), _column_type(conn, parent)} - _INTEGER_TYPES:
        return ParentKeys()
    p = _ids(parent)
    lo, hi = conn.execute(
        sql.SQL("SELECT min({c})::bigint, max({c})::bigint FROM {s}.{t}").format(**p)
    ).fetchone()
    if lo is None or (hi >> 6) - (lo >> 6) + 1 > BITMAP_MAX_WORDS:
        return ParentKeys()
    return ParentKeys(lo, hi)


def _column_type(conn, ref: ColumnRef) -> str | None:
    row = conn.execute(
        "SELECT format_type(a.atttypid, NULL) FROM pg_attribute AS a "
        "WHERE a.attrelid = to_regclass(quote_ident(%s) || '.' || quote_ident(%s)) "
        "AND a.attname = %s AND NOT a.attisdropped",
        (ref.schema_name, ref.table, ref.column),
    ).fetchone()
    return row[0] if row else None


def _no_parent(child: ColumnRef, parent: ColumnRef, keys: ParentKeys) -> sql.Composed:
    """A predicate over child row `c`: its key has no parent row.

    The bitmap test is written as "the key's bit = 0", an equality on an integer: the planner
    then estimates few orphans (an equality's default selectivity) where a boolean test would
    be half the table, and runs the scan in parallel. CASE keeps the subscript (an int4) from
    being computed for keys outside the parent's range.
    """
    c, p = _ids(child), _ids(parent)
    names = {"cc": c["c"], "ps": p["s"], "pt": p["t"], "pc": p["c"]}
    if not keys.bitmap:
        return sql.SQL("NOT EXISTS (SELECT 1 FROM {ps}.{pt} AS p WHERE p.{pc} = c.{cc})").format(
            **names
        )
    return sql.SQL("""(CASE WHEN c.{cc}::bigint BETWEEN {lo} AND {hi} THEN
        ((SELECT array_agg(coalesce(b.bits, 0) ORDER BY w.word)
          FROM generate_series({lo_word}, {hi_word}) AS w(word)
          LEFT JOIN (SELECT p.{pc}::bigint >> 6 AS word,
                            bit_or(1::bigint << (p.{pc}::bigint & 63)::int) AS bits
                     FROM {ps}.{pt} AS p WHERE p.{pc} IS NOT NULL GROUP BY 1) AS b USING (word))
         [(c.{cc}::bigint >> 6) - {lo_word} + 1] >> (c.{cc}::bigint & 63)::int) & 1
        ELSE 0 END) = 0""").format(
        lo=sql.Literal(keys.lo),
        hi=sql.Literal(keys.hi),
        lo_word=sql.Literal(keys.lo >> 6),
        hi_word=sql.Literal(keys.hi >> 6),
        **names,
    )


def orphan_count_query(
    child: ColumnRef, parent: ColumnRef, keys: ParentKeys = ParentKeys()
) -> sql.Composed:
    c = _ids(child)
    return sql.SQL(
        "SELECT count(*) FROM {cs}.{ct} AS c WHERE c.{cc} IS NOT NULL AND {orphan}"
    ).format(cs=c["s"], ct=c["t"], cc=c["c"], orphan=_no_parent(child, parent, keys))


def triage_query(
    fk: SoftFK, scrub: ScrubLogConfig, keys: ParentKeys = ParentKeys()
) -> sql.Composed:
    """Count, tenants, expected, samples per class and the scrub-log ids, in one pass.

    The scan is its own (materialized, parallel) step; the scrub log is consulted only for the
    orphans it returns: a per-row subquery in the scan would keep it from running in parallel.
    """
    c = _ids(fk.child_ref)
    return sql.SQL("""
        WITH orphan_rows AS MATERIALIZED (
            SELECT c.{cc} AS key, c.{tc} AS tenant FROM {cs}.{ct} AS c
            WHERE c.{cc} IS NOT NULL AND {orphan}),
        orphans AS (
            SELECT key, tenant,
                   EXISTS (SELECT 1 FROM {ss}.{st} AS s WHERE s.{stc} = tenant) AS expected
            FROM orphan_rows)
        SELECT count(*), count(DISTINCT tenant), count(*) FILTER (WHERE expected),
               ((array_agg(DISTINCT key) FILTER (WHERE expected))[1:{n}])::text[],
               ((array_agg(DISTINCT key) FILTER (WHERE NOT expected))[1:{n}])::text[],
               (SELECT array_agg(DISTINCT s.{sid}::text) FROM {ss}.{st} AS s
                WHERE s.{stc} IN (SELECT tenant FROM orphans))
        FROM orphans
    """).format(
        cs=c["s"],
        ct=c["t"],
        cc=c["c"],
        orphan=_no_parent(fk.child_ref, fk.parent_ref, keys),
        tc=sql.Identifier(fk.tenant_column),
        n=sql.Literal(SAMPLE),
        **_scrub_ids(scrub),
    )


def unknown_justification(conn, fk: SoftFK, scrub: ScrubLogConfig) -> list[str]:
    if not fk.justification:
        return []
    wanted = [str(u) for u in fk.justification]
    query = sql.SQL("SELECT {sid}::text FROM {ss}.{st} WHERE {sid}::text = ANY(%s)").format(
        **_scrub_ids(scrub)
    )
    found = {r[0] for r in conn.execute(query, (wanted,))}
    return [u for u in wanted if u not in found]


def sweep_one(conn, fk: SoftFK, scrub: ScrubLogConfig) -> OrphanResult:
    result = OrphanResult(
        fk.child,
        fk.parent,
        None,
        fk.max_orphans,
        False,
        justification=[str(u) for u in fk.justification],
    )
    try:
        # JIT compiling a query the planner costs this high took longer than running it.
        conn.execute("SET jit = off")
        keys = parent_keys(conn, fk.child_ref, fk.parent_ref)
        if fk.tenant_column:
            row = conn.execute(triage_query(fk, scrub, keys)).fetchone()
            result.orphans, result.tenants, result.expected_orphans = row[0], row[1], row[2]
            result.unexpected_orphans = row[0] - row[2]
            result.sample_expected, result.sample_unexpected = row[3] or [], row[4] or []
            result.scrub_log_ids = sorted(row[5] or [])
        else:
            result.orphans = conn.execute(
                orphan_count_query(fk.child_ref, fk.parent_ref, keys)
            ).fetchone()[0]
        result.unknown_justification = unknown_justification(conn, fk, scrub)
    except _SCHEMA_ERRORS as exc:
        result.error = exc.diag.message_primary or str(exc)
        return result
    result.passed = result.orphans <= fk.max_orphans and not result.unknown_justification
    return result


def sweep(
    connect,
    allowlist: SoftFKAllowlist,
    scrub: ScrubLogConfig,
    max_connections: int = 2,
    on_done=None,
) -> SweepReport:
    """`connect()` opens one autocommit connection to the restored database per sweep;
    `on_done(result)`, when given, is called (from the sweep's thread) as each sweep ends."""

    def run(fk: SoftFK) -> OrphanResult:
        with connect() as conn:
            result = sweep_one(conn, fk, scrub)
        if on_done:
            on_done(result)
        return result

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
            {"unsweepable": asdict(r)},
        )
    if r.unknown_justification:
        return Finding(
            "ORPHAN_FK_SURGE",
            f"{r.child} -> {r.parent}: justification UUID(s) {', '.join(r.unknown_justification)} "
            "do not exist in the restored scrub log: a tolerance justified by nothing is not "
            f"justified ({r.orphans} orphans, max_orphans {r.max_orphans})",
            {"cause": "unknown_justification", "surges": [asdict(r)]},
            next_step="Fix the justification in soft-fk-allowlist.yaml with real tenant_scrub_logs "
            "UUIDs, or lower max_orphans back.",
        )
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
        next_step=_triage_step(r),
    )


def _triage_sentence(r: OrphanResult) -> str:
    if r.expected_orphans is None:
        return "No tenant_column in the allowlist entry: triage by hand against tenant_scrub_logs."
    if r.unexpected_orphans == 0:
        return (
            f"All {r.orphans} are expected: their tenants have scrub-log entries "
            f"({', '.join(r.scrub_log_ids[:5])}); raising max_orphans is allowed with these "
            "UUIDs in justification"
        )
    return (
        f"{r.unexpected_orphans} unexpected (no scrub-log entry for their tenant, e.g. keys "
        f"{', '.join(r.sample_unexpected)}), {r.expected_orphans} expected: an application "
        "bug deleted referenced rows"
    )


def _triage_step(r: OrphanResult) -> str:
    if r.expected_orphans is not None and r.unexpected_orphans == 0:
        return (
            "Expected: raise max_orphans only with the scrub-log UUIDs in justification "
            "(F3 step 2); never blanket-raise."
        )
    return (
        "Unexpected: open a P2 issue and pin the FK (F3 step 2). Never blanket-raise a tolerance."
    )
