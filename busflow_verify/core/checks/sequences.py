"""Sequences behind their columns: what a cutover to the restored dump would trip on first.

A sequence owned by a column (`serial`, `bigserial`, an identity column: pg_depend's 'a' and 'i'
dependencies) hands out that column's next value. When its `last_value` is below the column's
max (a `setval` to a lower value at the source, a sequence dumped before the rows that used it),
the dump restores and counts fine, and after a cutover the first inserts fail on duplicate keys.
Each such sequence is SEQUENCE_BEHIND, a WARN check: it never blocks the pointer.

Runs as the restore role, which owns the restored objects (their sequences included). Plain
Python, no Dagster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from psycopg import sql

from busflow_verify.core.checks.row_counts import USER_TABLE_FILTER
from busflow_verify.core.failures import Finding

# Sequences owned by an integer column of a user table (c, n: the table), with their increment
_OWNED = f"""
SELECT sn.nspname, s.relname, n.nspname, c.relname, a.attname, q.seqincrement
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid
JOIN pg_catalog.pg_class c ON c.oid = d.refobjid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_catalog.pg_class'::regclass
  AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
  AND a.atttypid IN ('pg_catalog.int2'::regtype, 'pg_catalog.int4'::regtype,
                     'pg_catalog.int8'::regtype)
  AND {USER_TABLE_FILTER}
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class SequenceState:
    sequence: str  # schema.name
    column: str  # schema.table.column
    last_value: int
    is_called: bool
    next_value: int  # what nextval would return
    compared_with: str  # "max" (min for a descending sequence)
    column_extreme: int | None  # the column's max (or min); None: no rows
    behind: bool


def sequence_states(connect) -> list[SequenceState]:
    """Every sequence owned by an integer column of a user table, against that column."""
    with connect() as conn:
        owned = conn.execute(_OWNED).fetchall()
        return [_state(conn, *row) for row in owned]


def _state(conn, seq_schema, seq_name, schema, table, column, increment) -> SequenceState:
    last, called = conn.execute(
        sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(seq_schema, seq_name))
    ).fetchone()
    compared_with = "max" if increment > 0 else "min"
    extreme = conn.execute(
        sql.SQL("SELECT {}({}) FROM {}").format(
            sql.SQL(compared_with),
            sql.Identifier(column),
            sql.Identifier(schema, table),
        )
    ).fetchone()[0]
    following = last + increment if called else last
    behind = extreme is not None and (
        following <= extreme if increment > 0 else following >= extreme
    )
    return SequenceState(
        f"{seq_schema}.{seq_name}",
        f"{schema}.{table}.{column}",
        last,
        called,
        following,
        compared_with,
        extreme,
        behind,
    )


def sequences_behind(states: list[SequenceState]) -> list[Finding]:
    """SEQUENCE_BEHIND for the sequences whose next value the column already has (or passed)."""
    behind = [s for s in states if s.behind]
    if not behind:
        return []
    listed = "; ".join(
        f"{s.sequence} (owned by {s.column}): last_value {s.last_value:,}, the column's "
        f"{s.compared_with} {s.column_extreme:,}"
        for s in behind
    )
    return [
        Finding(
            "SEQUENCE_BEHIND",
            f"{len(behind)} sequence(s) behind their column: {listed}. After a cutover to this "
            "dump, the next inserts would take values the column already has and fail on "
            "duplicate keys",
            {"sequences": [asdict(s) for s in behind]},
        )
    ]
