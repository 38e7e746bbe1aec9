"""A small Busflow-shaped database, night by night, for the demo and the tests.

Tenants are skewed (Zipf-like: tenant 1 is far bigger than tenant 20), messages per booking are
skewed (most bookings have a few, some have dozens), some messages are broadcasts with no booking
(never orphans), and a past GDPR scrub of one small tenant tombstoned a few bookings, leaving a
small, expected baseline of orphans with a matching tenant_scrub_logs entry. The soft FKs are
deliberately not constraints: that is what the sweep is for.

Production's extensions, where the server has them (`supported_extensions`; a machine with only
PostgreSQL 15 builds the database without those it lacks): pgcrypto (bookings.card_token, from a
SHA-256 digest), pgvector (messages.embedding vector(3) with an HNSW index) and pg_cron (the
`tenant-scrub` job, never launched: the source cluster runs with cron.launch_active_jobs=off).
pg_cron lives in one database per cluster, `cron.database_name`: the nightly dumps' source cluster
names `DATABASE` there.

Everything is deterministic from the seed and set-based SQL (no per-row round trips).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from busflow_verify.core.postgres.cluster import DisposablePostgres
from busflow_verify.core.store.manifest import Manifest, manifest_key
from busflow_verify.core.store.producer import produce, write_atomically

DATABASE = "busflow"  # the nightly dumps' source database (and the source cluster's pg_cron one)
TENANTS = 20
BASE_BOOKINGS = 2000  # night 0, scale 1
DAILY_GROWTH = 0.02
SCRUBBED_TENANT = 17  # a small tenant whose data a GDPR scrub tombstoned

SCHEMA = """
DROP SCHEMA IF EXISTS commerce, communications, operations CASCADE;
DROP TABLE IF EXISTS public.tenant_scrub_logs;
CREATE SCHEMA commerce;
CREATE SCHEMA communications;
CREATE SCHEMA operations;
CREATE TABLE commerce.bookings (
    id bigint PRIMARY KEY, tenant_id int NOT NULL, customer_ref text, amount_cents int,
    status text, created_at timestamptz);
CREATE TABLE communications.messages (
    id bigint PRIMARY KEY,
    booking_id bigint,  -- soft FK -> commerce.bookings.id
    tenant_id int, channel text, body text, sent_at timestamptz);
CREATE TABLE operations.service_legs (
    id bigint PRIMARY KEY,
    booking_id bigint,  -- soft FK -> commerce.bookings.id
    tenant_id int, leg_no int, origin text, destination text, depart_at timestamptz);
CREATE TABLE public.tenant_scrub_logs (
    id uuid PRIMARY KEY, tenant_id int, scrubbed_at timestamptz, reason text,
    rows_tombstoned int);
"""

# Tenant of booking g: a Zipf-like draw from a deterministic hash of (seed, g).
_TENANT_OF = f"""
    (1 + floor({TENANTS} * power(
        ((hashtext(%(seed)s || ':' || g)::bigint & 2147483647) / 2147483647.0), 2.5))::int)
"""

POPULATE = f"""
INSERT INTO commerce.bookings
SELECT g, least({TENANTS}, {_TENANT_OF}), 'cust-' || (g %% 997), 1000 + (g * 37) %% 90000,
       (ARRAY['confirmed', 'completed', 'cancelled'])[1 + g %% 3],
       timestamptz '2025-01-01' + g * interval '7 minutes'
FROM generate_series(1, %(bookings)s) g;

-- messages per booking: mostly 1-3, every 50th booking 30+ (group trips)
INSERT INTO communications.messages
SELECT row_number() OVER (), b.id, b.tenant_id,
       (ARRAY['sms', 'email', 'push'])[1 + (b.id + n) %% 3], 'message ' || n || ' for ' || b.id,
       b.created_at + n * interval '1 hour'
FROM commerce.bookings b
CROSS JOIN LATERAL generate_series(1, CASE WHEN b.id %% 50 = 0 THEN 30 + b.id %% 7
                                           ELSE 1 + b.id %% 3 END) n;

-- broadcasts: no booking, never orphans
INSERT INTO communications.messages
SELECT (SELECT max(id) FROM communications.messages) + g, NULL, 1 + g %% {TENANTS}, 'push',
       'service update ' || g, timestamptz '2025-01-01' + g * interval '1 day'
FROM generate_series(1, greatest(5, %(bookings)s / 100)) g;

INSERT INTO operations.service_legs
SELECT row_number() OVER (), b.id, b.tenant_id, n,
       (ARRAY['Berlin', 'Hamburg', 'Munich', 'Cologne'])[1 + b.id %% 4],
       (ARRAY['Prague', 'Vienna', 'Zurich', 'Paris'])[1 + (b.id + n) %% 4],
       b.created_at + n * interval '1 day'
FROM commerce.bookings b CROSS JOIN LATERAL generate_series(1, 1 + b.id %% 2) n;

CREATE INDEX ON communications.messages (booking_id);
CREATE INDEX ON operations.service_legs (booking_id);
CREATE INDEX ON commerce.bookings (tenant_id);
"""

# The GDPR scrub of a small tenant: its oldest bookings are tombstoned (deleted), their messages
# stay behind as expected orphans, justified by the scrub-log entry.
SCRUB = f"""
WITH gone AS (
    DELETE FROM commerce.bookings
    WHERE id IN (SELECT id FROM commerce.bookings WHERE tenant_id = {SCRUBBED_TENANT}
                 ORDER BY id LIMIT 8)
    RETURNING id)
INSERT INTO public.tenant_scrub_logs
SELECT md5(%(seed)s || ':scrub')::uuid, {SCRUBBED_TENANT}, timestamptz '2025-06-01',
       'GDPR erasure request', count(*)::int FROM gone;
"""

# Planted problems for the demo and the tests.
PLANTED = {
    # an application bug deleted referenced bookings across tenants, with no scrub-log entry
    "orphan_surge": """
        DELETE FROM commerce.bookings WHERE id IN (
            SELECT b.id FROM commerce.bookings b
            WHERE b.tenant_id <> %(scrubbed)s
              AND EXISTS (SELECT 1 FROM communications.messages m WHERE m.booking_id = b.id)
            ORDER BY b.id DESC LIMIT 150)
    """,
    # 40% of the messages are gone
    "mass_delete": "DELETE FROM communications.messages WHERE id %% 5 IN (1, 3)",
}
# Planted after the manifest was taken: the night's manifest counted every message,
# the dump that ships with it lacks 2% of them (a pg_dump that silently lost rows). Its size and
# SHA-256 are the dump's, so only the restored counts against the manifest's can tell.
AFTER_MANIFEST = {
    "lost_rows": "DELETE FROM communications.messages WHERE id % 50 = 7",
}

# What each of production's extensions adds to the night's database (run after POPULATE). The
# values are deterministic, so dumps of different nights stay comparable, and small, so the dumps
# stay about the size they were without them (the size guard's history): a 16-hex-digit token
# (a SHA-256 prefix), and an embedding of small integers for every 10th message only (the rest are
# not embedded yet: NULL, which the HNSW index leaves out).
EXTENSIONS = ("pgcrypto", "vector", "pg_cron")
CRON_JOB = "tenant-scrub"
EXTENSION_SQL = {
    "pgcrypto": """
        ALTER TABLE commerce.bookings ADD COLUMN card_token text;
        UPDATE commerce.bookings
        SET card_token = left(encode(digest('card:' || id, 'sha256'), 'hex'), 16);
    """,
    "vector": """
        ALTER TABLE communications.messages ADD COLUMN embedding vector(3);
        UPDATE communications.messages
        SET embedding = ARRAY[mod(id, 7), mod(id, 11), mod(tenant_id, 13)]::real[]::vector(3)
        WHERE mod(id, 10) = 0;
        CREATE INDEX messages_embedding_hnsw ON communications.messages
            USING hnsw (embedding vector_l2_ops);
    """,
    # a harmless command under production's job name (F1 names the next run of a scrub job);
    # scheduled once, so the job and its id are the same every night
    "pg_cron": f"""
        SELECT cron.schedule('{CRON_JOB}', '0 4 * * *',
                             $$DELETE FROM public.tenant_scrub_logs WHERE false$$)
        WHERE NOT EXISTS (SELECT 1 FROM cron.job WHERE jobname = '{CRON_JOB}');
    """,
}

# Which of EXTENSIONS this database can create: those the server has, and pg_cron only where it
# is preloaded and this is its database (CREATE EXTENSION pg_cron fails anywhere else).
_SUPPORTED = """
SELECT name FROM pg_catalog.pg_available_extensions
WHERE name = ANY(%s) AND (name <> 'pg_cron' OR (
    'pg_cron' = ANY(string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''),
                                    ','))
    AND current_setting('cron.database_name', true) = current_database()))
"""

TABLES = [
    "commerce.bookings",
    "communications.messages",
    "operations.service_legs",
    "public.tenant_scrub_logs",
]


def bookings_on(day_index: int, scale: int = 1) -> int:
    return int(BASE_BOOKINGS * scale * (1 + DAILY_GROWTH) ** day_index)


def supported_extensions(conn: psycopg.Connection) -> list[str]:
    """The EXTENSIONS this database can have (see _SUPPORTED), in EXTENSIONS' order."""
    found = {row[0] for row in conn.execute(_SUPPORTED, (list(EXTENSIONS),)).fetchall()}
    return [name for name in EXTENSIONS if name in found]


def build_day(
    conn: psycopg.Connection,
    day_index: int,
    *,
    scale: int = 1,
    seed: int = 7,
    planted: str | None = None,
) -> dict[str, int]:
    """(Re)build the database as it was on night `day_index`, with the production extensions
    this database supports (`supported_extensions`); returns its row counts."""
    if planted and planted not in PLANTED:
        raise ValueError(f"unknown planted problem {planted!r}; known: {sorted(PLANTED)}")
    params = {
        "seed": str(seed),
        "bookings": bookings_on(day_index, scale),
        "scrubbed": SCRUBBED_TENANT,
    }
    # client-side binding: the scripts are several statements each
    with psycopg.ClientCursor(conn) as cur:
        cur.execute(SCHEMA)
        cur.execute(POPULATE, params)
        for name in supported_extensions(conn):
            cur.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
            cur.execute(EXTENSION_SQL[name])
        cur.execute(SCRUB, params)
        if planted:
            cur.execute(PLANTED[planted], params)
    return row_counts(conn)


def row_counts(conn: psycopg.Connection) -> dict[str, int]:
    counts = {}
    for name in TABLES:
        schema, table = name.split(".")
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        counts[name] = conn.execute(query).fetchone()[0]
    return counts


def write_nightly_dumps(
    dest_dir: Path,
    dates: list[dt.date],
    *,
    scale: int = 1,
    seed: int = 7,
    planted: dict[dt.date, str] | None = None,
    fmt: str = "custom",
    hhmm: str = "0100",
    manifests: bool = True,
) -> list[Path]:
    """One pg_dump per date (night i = dates[i]) into dest_dir as pg_dump_YYYYMMDD_HHMM.dump.

    Custom-format dumps are taken by `busflow-verify dump`'s producer (core/store/producer.py), with
    the manifest beside each (`manifests=False`: plain pg_dump, no manifest, as older nights)."""
    formats = {"custom": "-Fc", "plain": "-Fp"}
    if fmt not in formats:
        raise ValueError(f"unknown dump format {fmt!r}; known: {sorted(formats)}")
    known = {**PLANTED, **AFTER_MANIFEST}
    unknown = {p for p in (planted or {}).values() if p not in known}
    if unknown:
        raise ValueError(f"unknown planted problem(s) {sorted(unknown)}; known: {sorted(known)}")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    planted = planted or {}
    paths = []
    with DisposablePostgres(cron_database=DATABASE) as pg:
        with psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        target = pg.conninfo(DATABASE)
        for index, date in enumerate(dates):
            problem = planted.get(date)
            with psycopg.connect(**target.kwargs(), autocommit=True) as conn:
                build_day(
                    conn,
                    index,
                    scale=scale,
                    seed=seed,
                    planted=problem if problem in PLANTED else None,
                )
            path = dest_dir / f"pg_dump_{date:%Y%m%d}_{hhmm}.dump"
            if fmt == "custom" and manifests:  # the producer: dump + manifest, one snapshot
                produce(_dsn(target), path)
                if problem in AFTER_MANIFEST:
                    _lose_rows_after_manifest(pg, target, path, AFTER_MANIFEST[problem])
            else:
                _pg_dump(pg, target, formats[fmt], path)
            paths.append(path)
    return paths


def _dsn(target) -> str:
    return f"host={target.host} port={target.port} user={target.user} dbname={target.dbname}"


def _pg_dump(pg: DisposablePostgres, target, flag: str, path: Path) -> None:
    argv = [pg.tool("pg_dump"), flag, *target.libpq_args(), "-f", str(path)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump of {path.name} failed: {proc.stderr.strip()}")


def _lose_rows_after_manifest(pg: DisposablePostgres, target, path: Path, statement: str) -> None:
    """The manifest stays as the producer wrote it (every row counted); the dump beside it is
    re-taken after `statement` removed rows, and the manifest's size and SHA-256 are made the new
    dump's, so the transfer checks pass and only the counts can tell."""
    with psycopg.connect(**target.kwargs(), autocommit=True) as conn:
        conn.execute(statement)
    _pg_dump(pg, target, "-Fc", path)
    manifest_path = Path(manifest_key(str(path)))
    manifest = Manifest.from_json(manifest_path.read_bytes(), str(manifest_path))
    data = path.read_bytes()
    manifest.size_bytes, manifest.sha256 = len(data), hashlib.sha256(data).hexdigest()
    write_atomically(manifest_path, manifest.to_json())
