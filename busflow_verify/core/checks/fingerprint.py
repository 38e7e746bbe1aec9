"""A table's content fingerprint: computed by the producer in pg_dump's snapshot and by verify over
the restored table, each in the one statement that counts the rows.

    SELECT count(*), sum(hashtextextended(ROW(c1, c2, ...)::text, 0)) FROM schema.table

The row's text form is PostgreSQL's own output of each value, under fixed session settings
(`SESSION_SETTINGS`: time zone, date and interval styles, float digits, bytea's form), so it
depends on the content only, not on the server's or the role's defaults. The 64-bit hash of each
row is summed (numeric: no overflow, and a duplicated row counts twice, which XOR would cancel);
the sum modulo 2^64 as 16 hex digits is the fingerprint. Order-independent: neither pg_dump's
order nor the restore's matters.

Columns whose text form cannot be fixed by a setting, or is known to differ between the
versions that write and read it, are left out, each with its reason, and the manifest says so:
generated columns (recomputed by the restore, not restored), money (follows lc_monetary, the
server's locale), the reg* types (name objects as the session's search_path sees them), floats
and geometric types written by a server before 12 (another float output). Columns of a type an
extension defines (pgvector's `vector`) are fingerprinted; the producer also writes the
fingerprint without them, which verify compares instead when the restore server's extension is
of another version than the source's (the text form is the extension's, and may change between
its versions).

`METHOD` names the method; a future change gets a new name, so a verifier never compares
fingerprints it does not compute the same way. The hash is PostgreSQL's
`hashtextextended`, stable across majors since 11 on the same byte order (the source's and the
restore server's are both x86_64 or both arm64: little-endian).

Plain Python, no Dagster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

METHOD = "sum-hashtextextended-row-text/1"
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}
_MOD = 2**64

# Types left out of every fingerprint (pg_catalog's type name → why).
_REG = "its text form names objects as the session's search_path sees them"
LEFT_OUT_TYPES = {
    "money": "money: its text form follows lc_monetary (the server's locale), which a restore "
    "server need not share",
    **{
        name: f"{name}: {_REG}"
        for name in (
            "regclass",
            "regproc",
            "regprocedure",
            "regoper",
            "regoperator",
            "regtype",
            "regconfig",
            "regdictionary",
            "regnamespace",
            "regrole",
            "regcollation",
        )
    },
}
# Types whose text form changed at a major (pg_catalog's type name → the first major with today's
# form): left out when the source is older. PostgreSQL 12 made float output shortest-exact.
TEXT_FORM_SINCE = {
    name: 12 for name in ("float4", "float8", "point", "lseg", "line", "box", "path", "polygon")
} | {"circle": 12}
GENERATED = "generated column: recomputed by the restore from the other columns, not restored"


@dataclass(frozen=True)
class ColumnType:
    """One type of pg_type, with what its text form is made of."""

    name: str
    catalog: bool  # in pg_catalog (a built-in type)
    children: tuple[int, ...]  # domain's base, array's element, composite's fields, range's subtype
    extension: str | None  # the extension that defines it


@dataclass(frozen=True)
class TableColumns:
    """What the producer fingerprints of one table: the columns in order, those left out and why,
    and those (among the columns) whose type an extension defines."""

    columns: tuple[str, ...]
    left_out: dict[str, str] = field(default_factory=dict)
    extension_columns: dict[str, str] = field(default_factory=dict)  # column → extension

    @property
    def builtin_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c not in self.extension_columns)


def as_fingerprint(total: Any) -> str:
    """The sum of the rows' hashes (numeric, None for no rows) as the fingerprint: 16 hex digits."""
    return f"{int(total or 0) % _MOD:016x}"


def apply_settings(conn, local: bool = False) -> None:
    """The text-form settings on `conn`'s session (or, `local`, its transaction)."""
    scope = sql.SQL("SET LOCAL" if local else "SET")
    for name, value in SESSION_SETTINGS.items():
        conn.execute(sql.SQL("{} {} = {}").format(scope, sql.Identifier(name), sql.Literal(value)))


def count_statement(
    schema: str, table: str, fingerprints: Iterable[Iterable[str]] = ()
) -> sql.Composed:
    """count(*) and, for each column list in `fingerprints`, the sum of the rows' hashes: one
    scan of the table."""
    hashed = [
        sql.SQL("sum(pg_catalog.hashtextextended(ROW({})::text, 0))").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        for columns in fingerprints
    ]
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join([sql.SQL("count(*)"), *hashed]), sql.Identifier(schema, table)
    )


# -- the producer: which columns of each table ------------------------------------------------

_COLUMNS = """
SELECT n.nspname, c.relname, a.attname, a.atttypid, a.attgenerated <> ''
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped AND (n.nspname || '.' || c.relname) = ANY(%s)
ORDER BY 1, 2, a.attnum
"""
_TYPES = """
SELECT t.oid, t.typname, t.typnamespace = 'pg_catalog'::regnamespace, t.typtype,
       t.typcategory = 'A' AND t.typelem <> 0, t.typelem, t.typbasetype, t.typrelid,
       (SELECT e.extname FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
        WHERE d.classid = 'pg_catalog.pg_type'::regclass AND d.objid = t.oid
          AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e' LIMIT 1)
FROM pg_catalog.pg_type t
"""
_FIELDS = """
SELECT attrelid, atttypid FROM pg_catalog.pg_attribute
WHERE attnum > 0 AND NOT attisdropped AND attrelid = ANY(%s)
"""


def table_columns(conn, tables: list[str], source_major: int) -> dict[str, TableColumns]:
    """For each `schema.table`, what its fingerprint covers, read from the catalog on `conn`."""
    rows = conn.execute(_COLUMNS, (list(tables),)).fetchall()
    types = _types(conn)
    found: dict[str, list[tuple[str, int, bool]]] = {t: [] for t in tables}
    for schema, table, column, type_oid, generated in rows:
        found[f"{schema}.{table}"].append((column, type_oid, generated))
    return {name: _decide(columns, types, source_major) for name, columns in sorted(found.items())}


def _types(conn) -> dict[int, ColumnType]:
    """Every type of the database, with what its text form is made of (one read of pg_type)."""
    raw = conn.execute(_TYPES).fetchall()
    ranges = dict(conn.execute("SELECT rngtypid, rngsubtype FROM pg_catalog.pg_range").fetchall())
    if conn.info.server_version >= 140000:
        ranges.update(
            conn.execute("SELECT rngmultitypid, rngsubtype FROM pg_catalog.pg_range").fetchall()
        )
    composites = [r[7] for r in raw if r[3] == "c" and r[7]]
    fields: dict[int, list[int]] = {}
    for relid, type_oid in conn.execute(_FIELDS, (composites,)).fetchall():
        fields.setdefault(relid, []).append(type_oid)
    types = {}
    for oid, name, catalog, kind, is_array, elem, base, relid, extension in raw:
        children = (
            [base] if kind == "d" else [elem] if is_array else fields.get(relid, []) if kind == "c"
            else [ranges[oid]] if oid in ranges else []
        )  # fmt: skip
        types[oid] = ColumnType(name, catalog, tuple(children), extension)
    return types


def _leaves(type_oid: int, types: Mapping[int, ColumnType]) -> list[ColumnType]:
    """The type and every type its values are made of (domains, arrays, fields, ranges)."""
    seen, stack, out = set(), [type_oid], []
    while stack:
        oid = stack.pop()
        if oid in seen or oid not in types:
            continue
        seen.add(oid)
        out.append(types[oid])
        stack.extend(types[oid].children)
    return out


def _decide(
    columns: list[tuple[str, int, bool]], types: Mapping[int, ColumnType], source_major: int
) -> TableColumns:
    kept, left_out, extension_columns = [], {}, {}
    for column, type_oid, generated in columns:
        why = GENERATED if generated else _left_out_type(_leaves(type_oid, types), source_major)
        if why:
            left_out[column] = why
            continue
        kept.append(column)
        extension = next((t.extension for t in _leaves(type_oid, types) if t.extension), None)
        if extension:
            extension_columns[column] = extension
    return TableColumns(tuple(kept), left_out, extension_columns)


def _left_out_type(leaves: list[ColumnType], source_major: int) -> str | None:
    for leaf in leaves:
        if not leaf.catalog:
            continue
        if leaf.name in LEFT_OUT_TYPES:
            return LEFT_OUT_TYPES[leaf.name]
        if source_major < TEXT_FORM_SINCE.get(leaf.name, 0):
            return (
                f"{leaf.name}: PostgreSQL {source_major} writes it in another text form than "
                f"{TEXT_FORM_SINCE[leaf.name]} and later"
            )
    return None


# -- verify: what to compute over a restored table ---------------------------------------------


@dataclass(frozen=True)
class FingerprintRequest:
    """What verify computes over one restored table, from the manifest: the columns the producer
    fingerprinted, those of extension types, and the source's extension versions."""

    columns: tuple[str, ...]
    extension_columns: Mapping[str, str] = field(default_factory=dict)
    source_extensions: Mapping[str, str] = field(default_factory=dict)
    encoding: str | None = None  # the source's server_encoding


@dataclass(frozen=True)
class Fingerprint:
    """The fingerprint of one restored table, or why there is none.

    `variant` is "all" (every column the producer fingerprinted) or "builtin" (without the
    columns of extension types, left out here because the restore server's extension is of
    another version: `left_out` says which and why)."""

    value: str | None
    variant: str = "all"
    left_out: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # not computed, and the content differs: columns it lacks
    not_compared: str | None = None  # not computed, and nothing follows from it: why


@dataclass(frozen=True)
class Plan:
    """How one restored table is fingerprinted: the columns hashed, and what a Fingerprint of
    it says beside the value."""

    columns: tuple[str, ...] | None  # None: not computed (`problem` or `not_compared`)
    variant: str = "all"
    left_out: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    not_compared: str | None = None

    def result(self, total: Any) -> Fingerprint:
        value = as_fingerprint(total) if self.columns is not None else None
        return Fingerprint(
            value, self.variant, dict(self.left_out), self.problem, self.not_compared
        )


def plan(
    request: FingerprintRequest,
    present: Iterable[str],
    installed: Mapping[str, str],
    encoding: str | None = None,
) -> Plan:
    """Which columns verify hashes for `request`, given the restored table's columns, the
    restore database's extension versions and its encoding."""
    if request.encoding and encoding and request.encoding != encoding:
        return Plan(
            None,
            not_compared=f"the source's encoding is {request.encoding}, the restored "
            f"database's {encoding} (text is hashed as the server stores it)",
        )
    missing = [c for c in request.columns if c not in set(present)]
    if missing:
        return Plan(None, problem=f"the restored table lacks column(s) {', '.join(missing)}")
    differ = {
        column: (
            f"{extension} {request.source_extensions.get(extension, '?')} at the source, "
            f"{installed.get(extension, 'none')} here: an extension's text form may change "
            "between its versions"
        )
        for column, extension in request.extension_columns.items()
        if installed.get(extension) != request.source_extensions.get(extension)
    }
    if not differ:
        return Plan(request.columns)
    kept = tuple(c for c in request.columns if c not in request.extension_columns)
    return Plan(kept, "builtin", differ)
