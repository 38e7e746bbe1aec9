"""Soft-FK sweep speed (issue: the triaged report for 10 M child rows takes no more than about
twice a sequential scan of the child table). Not part of `make test`.

    .venv/bin/python bench/sweep_bench.py [--rows 10000000]

Builds commerce.bookings and communications.messages (with tenant_id and a soft FK) in a
disposable cluster, VACUUM ANALYZEs, then times, best of 3: a sequential scan of the child table
(count(*) over all its columns' pages), the plain anti-join count, and the triage query the
pipeline runs (counts per class, samples, scrub-log ids).
"""

from __future__ import annotations

import argparse
import platform
import time

import psycopg

from busflow_verify.core.config import ScrubLogConfig, SoftFK
from busflow_verify.core.pgcluster import DisposablePostgres
from busflow_verify.core.sweep import orphan_count_query, triage_query

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
"""


def best_of(conn, query, n=3) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.execute(query).fetchall()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    fk = SoftFK(child="communications.messages.booking_id", parent="commerce.bookings.id",
                max_orphans=200, tenant_column="tenant_id")
    with DisposablePostgres() as pg, psycopg.connect(**pg.conninfo().kwargs(),
                                                     autocommit=True) as conn:
        t0 = time.perf_counter()
        with psycopg.ClientCursor(conn) as cur:
            cur.execute(SETUP, {"rows": args.rows, "parents": args.rows // 4})
        conn.execute("VACUUM ANALYZE")
        build = time.perf_counter() - t0
        scan = best_of(conn, "SELECT count(*), max(length(body)) FROM communications.messages")
        plain = best_of(conn, orphan_count_query(fk.child_ref, fk.parent_ref))
        triage = best_of(conn, triage_query(fk, ScrubLogConfig()))
        orphans = conn.execute(orphan_count_query(fk.child_ref, fk.parent_ref)).fetchone()[0]
    print(f"machine: {platform.machine()}, {platform.system()} {platform.release()}, "
          f"PostgreSQL {pg.major_version()}")
    print(f"child rows {args.rows:,}, orphans {orphans:,}, build {build:.1f} s")
    print(f"sequential scan of the child: {scan:.2f} s")
    print(f"anti-join count:              {plain:.2f} s  ({plain / scan:.2f}x the scan)")
    print(f"triage query (the pipeline's): {triage:.2f} s  ({triage / scan:.2f}x the scan)")


if __name__ == "__main__":
    main()
