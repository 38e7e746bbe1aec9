"""Soft-FK sweep speed (issue: the triaged report for 10 M child rows takes no more than about
twice a sequential scan of the child table). Not part of `make test`.

    .venv/bin/python bench/sweep_bench.py [--rows 10000000]

Builds commerce.bookings and communications.messages (with tenant_id and a soft FK) in a
disposable cluster, deletes a share of the bookings at random (`--gaps`, with their messages, but
for the 1-in-20,000 planted orphans) so the parent's ids have realistic holes, VACUUM ANALYZEs,
then times, best of 3: a sequential scan of the child table (count(*) over all its columns'
pages), the orphan count as a hash anti join and as the bitmap probe, and what the pipeline runs
(the parent-key lookup plus the triage query: counts per class, samples, scrub-log ids).
"""

from __future__ import annotations

import argparse
import platform
import time

import psycopg

from busflow_verify.core.checks.soft_fk_sweep import (
    ParentKeys,
    orphan_count_query,
    parent_keys,
    triage_query,
)
from busflow_verify.core.config import ScrubLogConfig, SoftFK
from busflow_verify.core.postgres.cluster import DisposablePostgres

SETUP = """
CREATE SCHEMA commerce; CREATE SCHEMA communications;
CREATE TABLE commerce.bookings(id bigint PRIMARY KEY, tenant_id int);
INSERT INTO commerce.bookings SELECT g, 1 + g %% 50 FROM generate_series(1, %(parents)s) g;
CREATE TABLE communications.messages(id bigint, booking_id bigint, tenant_id int, body text);
INSERT INTO communications.messages
    SELECT g, CASE WHEN g %% 20000 = 0 THEN -g ELSE 1 + g %% %(parents)s END, 1 + g %% 50,
           'message body ' || g
    FROM generate_series(1, %(rows)s) g;
CREATE TABLE public.tenant_scrub_logs(id uuid PRIMARY KEY, tenant_id int);
INSERT INTO public.tenant_scrub_logs VALUES (md5('s')::uuid, 7);
DELETE FROM commerce.bookings WHERE random() < %(gaps)s;
DELETE FROM communications.messages AS c WHERE c.id %% 20000 <> 0
    AND NOT EXISTS (SELECT 1 FROM commerce.bookings AS p WHERE p.id = c.booking_id);
"""


def best_of(conn, query, n=3) -> float:
    return min(timed(lambda: conn.execute(query).fetchall()) for _ in range(n))


def timed(work) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def pipeline(conn, fk: SoftFK):
    """What sweep_one runs for a soft FK with a tenant column."""
    keys = parent_keys(conn, fk.child_ref, fk.parent_ref)
    return conn.execute(triage_query(fk, ScrubLogConfig(), keys)).fetchone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument(
        "--gaps",
        type=float,
        default=0.03,
        help="share of bookings deleted at random (holes in the parent's ids)",
    )
    args = parser.parse_args()
    fk = SoftFK(
        child="communications.messages.booking_id",
        parent="commerce.bookings.id",
        max_orphans=200,
        tenant_column="tenant_id",
    )
    with (
        DisposablePostgres() as pg,
        psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as conn,
    ):
        t0 = time.perf_counter()
        with psycopg.ClientCursor(conn) as cur:
            cur.execute(SETUP, {"rows": args.rows, "parents": args.rows // 4, "gaps": args.gaps})
        conn.execute("VACUUM ANALYZE")
        build = time.perf_counter() - t0
        conn.execute("SET jit = off")  # as sweep_one does
        child, parent = fk.child_ref, fk.parent_ref
        keys = parent_keys(conn, child, parent)
        scan = best_of(conn, "SELECT count(*), max(length(body)) FROM communications.messages")
        hashed = best_of(conn, orphan_count_query(child, parent, ParentKeys()))
        bitmap = best_of(conn, orphan_count_query(child, parent, keys))
        triage = min(timed(lambda: pipeline(conn, fk)) for _ in range(3))
        orphans = pipeline(conn, fk)[0]
        rows = conn.execute("SELECT count(*) FROM communications.messages").fetchone()[0]
    print(
        f"machine: {platform.machine()}, {platform.system()} {platform.release()}, "
        f"PostgreSQL {pg.major_version()}"
    )
    print(
        f"child rows {rows:,}, orphans {orphans:,}, bitmap probe: {keys.bitmap}, "
        f"build {build:.1f} s"
    )
    for name, seconds in [
        ("sequential scan of the child", scan),
        ("orphan count, hash anti join", hashed),
        ("orphan count, bitmap probe", bitmap),
        ("the pipeline's triage (lookup + query)", triage),
    ]:
        print(f"{name:<40} {seconds:6.2f} s  {seconds / scan:5.2f}x the scan")


if __name__ == "__main__":
    main()
