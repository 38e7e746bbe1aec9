"""The split-section restore without WAL for the table data.

One pg_restore run that creates a table loads it with TRUNCATE and COPY in one transaction,
which `wal_level=minimal` does not write to the WAL. The runbook's split-section restore
(pre-data, then data, then post-data; F2 step 4) runs the data section in a later pg_restore that
created nothing, so every row is written twice, to the table and to the WAL (274 MB of WAL for a
430 MB database, docs/performance.md). The restore target is thrown away after the run, so
between pre-data and data its ordinary tables are made UNLOGGED: the data and the indexes are then
written once, and what is verified (the data loads, the indexes and constraints build, the counts
and the orphans) is the same.

Left logged, with the reason in the restore report, when a table must stay logged: partitioned
tables exist (they cannot be made unlogged, and a logged table's foreign key may not reference an
unlogged one), or the archive adds tables to a publication (unlogged tables cannot be published).
Extension member tables are never touched.
"""

from __future__ import annotations

from psycopg import sql

_PARTITIONED = """
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relkind = 'p')
"""
_LOGGED_TABLES = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
ORDER BY 1, 2
"""


def unlog_tables(conn, publishes: bool) -> tuple[int, str | None]:
    """Make the restored database's ordinary tables UNLOGGED (they are still empty, so this is
    cheap). Returns how many, and why none when they were left logged."""
    if publishes:
        return 0, "the archive adds tables to a publication"
    if conn.execute(_PARTITIONED).fetchone()[0]:
        return 0, "the database has partitioned tables"
    tables = conn.execute(_LOGGED_TABLES).fetchall()
    for schema, table in tables:
        conn.execute(sql.SQL("ALTER TABLE {} SET UNLOGGED").format(sql.Identifier(schema, table)))
    return len(tables), None
