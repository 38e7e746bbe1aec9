"""Runbook step 4: VACUUM ANALYZE, exact row counts, deltas against the last verified dump."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg import sql

from busflow_verify.core.checks import fingerprint
from busflow_verify.core.checks.fingerprint import Fingerprint, FingerprintRequest, Plan
from busflow_verify.core.config import RowCountConfig
from busflow_verify.core.failures import Finding
from busflow_verify.core.progress import Progress, Report

# Ordinary and partitioned tables of user schemas (c: pg_class, n: pg_namespace), not those of
# extensions; partitions are vacuumed, counted and compared through their parent.
USER_TABLE_FILTER = """
c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.objid = c.oid AND d.deptype = 'e')
"""
# The user tables, largest first
_USER_TABLES = f"""
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {USER_TABLE_FILTER}
ORDER BY (SELECT sum(pg_catalog.pg_table_size(t.relid))
          FROM pg_catalog.pg_partition_tree(c.oid) AS t) DESC NULLS LAST, 1, 2
"""


def database_bytes(connect) -> int:
    """pg_database_size of the restored database (a plotted number: restored bytes)."""
    with connect() as conn:
        return conn.execute("SELECT pg_catalog.pg_database_size(current_database())").fetchone()[0]


@dataclass
class Counted:
    """The restored tables' exact counts, and the fingerprints asked for, keyed `schema.table`."""

    counts: dict[str, int]
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)


def vacuum_and_count(
    connect,
    jobs: int = 2,
    report: Report | None = None,
    timings: dict | None = None,
    fingerprints: Mapping[str, FingerprintRequest] | None = None,
) -> Counted:
    """VACUUM ANALYZE and an exact count(*) of every user table, keyed `schema.table`; for each
    table in `fingerprints` (the producer's manifest's), its fingerprint in the same statement as
    the count (core/checks/fingerprint.py): one scan.

    `jobs` tables at a time, each worker on its own connection from `connect()` (autocommit:
    VACUUM cannot run in a transaction block), largest first: a database-wide VACUUM ANALYZE
    would keep one core busy. With `report`, a line every quarter of the tables. With `timings`,
    `vacuum_analyze_seconds` and `count_seconds` (fingerprints included), summed over the
    workers, and `vacuum_and_count_seconds`, the wall time.
    """
    started = time.monotonic()
    spent = {"vacuum_analyze_seconds": 0.0, "count_seconds": 0.0}
    lock = threading.Lock()
    with connect() as conn:
        tables = conn.execute(_USER_TABLES).fetchall()
        plans = _plans(conn, fingerprints or {})
    pending = queue.SimpleQueue()
    for table in tables:
        pending.put(table)
    progress = Progress(
        "VACUUM ANALYZE and count",
        len(tables),
        report or (lambda line: None),
        unit="tables",
        step=0.25,
    )
    counted = Counted({})

    def work() -> None:
        with connect() as conn:
            if plans:
                fingerprint.apply_settings(conn)
            while True:
                try:
                    schema, table = pending.get_nowait()
                except queue.Empty:
                    return
                t0 = time.monotonic()
                conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(schema, table)))
                t1 = time.monotonic()
                _count_one(conn, schema, table, plans.get(f"{schema}.{table}"), counted)
                with lock:
                    spent["vacuum_analyze_seconds"] += t1 - t0
                    spent["count_seconds"] += time.monotonic() - t1
                progress.add(1)

    workers = max(1, min(jobs, len(tables)))
    with ThreadPoolExecutor(workers, thread_name_prefix="vacuum-count") as pool:
        progress.watch([pool.submit(work) for _ in range(workers)])
    if timings is not None:
        spent["vacuum_and_count_seconds"] = time.monotonic() - started
        timings.update({k: round(v, 3) for k, v in spent.items()})
    return Counted(dict(sorted(counted.counts.items())), dict(sorted(counted.fingerprints.items())))


def _count_one(conn, schema: str, table: str, plan: Plan | None, counted: Counted) -> None:
    """count(*) of one table and, when planned, its fingerprint: one statement, one scan."""
    name = f"{schema}.{table}"
    hashed = [plan.columns] if plan is not None and plan.columns is not None else []
    row = conn.execute(fingerprint.count_statement(schema, table, hashed)).fetchone()
    counted.counts[name] = row[0]
    if plan is not None:
        counted.fingerprints[name] = plan.result(row[1] if hashed else None)


_COLUMNS_OF = """
SELECT n.nspname || '.' || c.relname, array_agg(a.attname::text ORDER BY a.attnum)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE (n.nspname || '.' || c.relname) = ANY(%s)
GROUP BY 1
"""


def _plans(conn, requests: Mapping[str, FingerprintRequest]) -> dict[str, Plan]:
    """What to fingerprint of each restored table the manifest fingerprinted: its columns, the
    restore database's extensions and encoding decide (fingerprint.plan)."""
    if not requests:
        return {}
    present = dict(conn.execute(_COLUMNS_OF, (list(requests),)).fetchall())
    installed = dict(conn.execute("SELECT extname, extversion FROM pg_catalog.pg_extension"))
    encoding = conn.execute("SELECT current_setting('server_encoding')").fetchone()[0]
    return {
        table: fingerprint.plan(request, present[table], installed, encoding)
        for table, request in requests.items()
        if table in present
    }


@dataclass
class TableDelta:
    table: str
    previous: int | None
    current: int | None
    delta: int | None
    ratio: float | None  # (current - previous) / previous
    max_drop_ratio: float
    max_growth_ratio: float
    status: str  # ok | dropped | grew | missing | new


@dataclass
class DriftReport:
    baseline_partition: str | None
    baseline_run_id: str | None
    tables: list[TableDelta] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(t) for t in self.tables]


def compare(
    current: dict[str, int],
    previous: dict[str, int] | None,
    cfg: RowCountConfig,
    *,
    baseline_partition: str | None = None,
    baseline_run_id: str | None = None,
) -> DriftReport:
    """ROW_COUNT_DRIFT for each table that dropped or grew beyond its tolerance, or vanished.

    Without a previous verified dump there is nothing to compare: every table is `new` and the
    report passes, saying so. A table that was empty before has no ratio and is not drift.
    """
    report = DriftReport(baseline_partition, baseline_run_id)
    previous = previous or {}
    for table in sorted(set(current) | set(previous)):
        drop_tol, growth_tol = cfg.tolerance_for(table)
        cur, prev = current.get(table), previous.get(table)
        delta = ratio = None
        if cur is None:
            status = "missing"
        elif prev is None:
            status = "new"
        else:
            delta = cur - prev
            ratio = delta / prev if prev else None
            status = "ok"
            if ratio is not None and -ratio > drop_tol:
                status = "dropped"
            elif ratio is not None and ratio > growth_tol:
                status = "grew"
        report.tables.append(
            TableDelta(table, prev, cur, delta, ratio, drop_tol, growth_tol, status)
        )
    drifted = [t for t in report.tables if t.status in ("dropped", "grew", "missing")]
    if drifted:
        report.findings.append(
            Finding(
                "ROW_COUNT_DRIFT",
                f"{len(drifted)} table(s) outside tolerance vs the last verified dump "
                f"({baseline_partition}): " + "; ".join(_describe(t) for t in drifted[:5]),
                {
                    "baseline_partition": baseline_partition,
                    "baseline_run_id": baseline_run_id,
                    "tables": [asdict(t) for t in drifted],
                },
            )
        )
    return report


def _describe(t: TableDelta) -> str:
    if t.status == "missing":
        return f"{t.table} is missing (had {t.previous} rows): it disappeared since then"
    limit = t.max_drop_ratio if t.status == "dropped" else t.max_growth_ratio
    return (
        f"{t.table} {t.status} {t.previous} -> {t.current} ({t.ratio:+.1%}, limit "
        f"{'-' if t.status == 'dropped' else '+'}{limit:.0%})"
    )
