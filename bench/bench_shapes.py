"""The databases `verify_bench.py` restores: pgbench's shape and Busflow's, at a chosen scale.

pgbench's shape is one large table (pgbench_accounts, 100 000 rows per scale unit) with one
index, so `pg_restore -j` has little to share out: it shows the restore's per-table floor.
Busflow's shape is the demo's database (busflow_verify/demo/busflow_db.py: bookings, messages,
service legs, three schemas, six indexes, the scrub log): several large tables and indexes, as
the production dumps the runbook verifies have, where `-j` and the throwaway target both count.
Each shape has one soft FK, swept by the naive path and the floor with the same anti-join.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import psycopg
import yaml

from busflow_verify.core.postgres.cluster import DisposablePostgres
from busflow_verify.demo import busflow_db

SHIPPED_ALLOWLIST = (
    Path(__file__).resolve().parents[1] / "config/backup-verify/soft-fk-allowlist.yaml"
)


class Shape:
    name: str
    default_scales: list[int]
    tiny_scale: int  # the fixed-cost measurement's dump: a run's cost with almost no data
    scale_help: str
    tables: list[str]  # schema-qualified; counted by the naive path and the floor
    soft_fk: dict  # the allowlist entry the project sweeps
    sweep_sql: str  # the naive path's and the floor's orphan count for it

    def populate(
        self, source: DisposablePostgres, db: str, scale: int, run: Callable[[list[str]], str]
    ) -> None:
        raise NotImplementedError


# pgbench's own data generation ("G") but with a filler that does not compress to nothing:
# pgbench's blank filler makes a 1.5 GB database a dump of about 35 MB, where real data (and the
# runbook's dumps) compress a few times, not fifty. char(84) is stored padded, so the database is
# the same size either way; the dump is about a third of it.
PGBENCH_DATA_SQL = """
INSERT INTO pgbench_branches(bid, bbalance) SELECT g, 0 FROM generate_series(1, {scale}) g;
INSERT INTO pgbench_tellers(tid, bid, tbalance)
    SELECT g, (g - 1) / 10 + 1, 0 FROM generate_series(1, 10 * {scale}) g;
INSERT INTO pgbench_accounts(aid, bid, abalance, filler)
    SELECT g, (g - 1) / 100000 + 1, 0,
           left(md5(g::text) || md5((-g)::text) || md5((g * 7)::text), 84)
    FROM generate_series(1, {accounts}) g;
CREATE TABLE public.account_notes(id bigint, aid integer, note text);
INSERT INTO public.account_notes
    SELECT g, 1 + (g::bigint * 7919) % {accounts}, 'note ' || md5(g::text)
    FROM generate_series(1, {notes}) g;
INSERT INTO public.account_notes
    SELECT {notes} + g, {accounts} + g, 'orphan' FROM generate_series(1, {orphans}) g;
CREATE INDEX account_notes_aid ON public.account_notes(aid);
"""


class PgbenchShape(Shape):
    name = "pgbench"
    default_scales = [10, 25, 100]
    tiny_scale = 1
    scale_help = "pgbench scale: 100 is a 2.1 GB database, a 667 MB dump"
    tables = [
        f"public.{t}"
        for t in (
            "pgbench_accounts",
            "pgbench_branches",
            "pgbench_history",
            "pgbench_tellers",
            "account_notes",
        )
    ]
    soft_fk = {
        "child": "public.account_notes.aid",
        "parent": "public.pgbench_accounts.aid",
        "max_orphans": 100,
    }
    sweep_sql = (
        "SELECT count(*) FROM public.account_notes AS c WHERE c.aid IS NOT NULL AND "
        "NOT EXISTS (SELECT 1 FROM public.pgbench_accounts AS p WHERE p.aid = c.aid)"
    )
    orphans = 17

    def populate(self, source, db, scale, run):
        pgbench = [
            source.tool("pgbench"),
            "-i",
            "-s",
            str(scale),
            "-q",
            *source.conninfo(db).libpq_args(),
        ]
        run([*pgbench, "-I", "dt"])  # drop and create pgbench's tables
        accounts = 100_000 * scale
        with psycopg.connect(**source.conninfo(db).kwargs(), autocommit=True) as conn:
            conn.execute(
                PGBENCH_DATA_SQL.format(
                    scale=scale, accounts=accounts, notes=accounts // 2, orphans=self.orphans
                )
            )
        run([*pgbench, "-I", "vp"])  # pgbench's vacuum and primary keys


class BusflowShape(Shape):
    name = "busflow"
    default_scales = [100, 400, 1600]
    tiny_scale = 3
    scale_help = (
        "Busflow scale: 2000 bookings per unit, with their messages and service legs; "
        "1600 is a 2.0 GB database"
    )
    tables = busflow_db.TABLES
    # the shipped allowlist's soft FK, as production sweeps it; sweep_sql counts the same one
    soft_fk = yaml.safe_load(SHIPPED_ALLOWLIST.read_text())["soft_fks"][0]
    sweep_sql = (
        "SELECT count(*) FROM communications.messages AS c WHERE c.booking_id IS NOT "
        "NULL AND NOT EXISTS (SELECT 1 FROM commerce.bookings AS p "
        "WHERE p.id = c.booking_id)"
    )

    def populate(self, source, db, scale, run):
        with psycopg.connect(**source.conninfo(db).kwargs(), autocommit=True) as conn:
            busflow_db.build_day(conn, 0, scale=scale)
            conn.execute("VACUUM ANALYZE")


SHAPES = {shape.name: shape for shape in (PgbenchShape(), BusflowShape())}
