#!/usr/bin/env bash
# Prove a prefix made by install-postgres-newest.sh: a disposable cluster (postgres OS user,
# socket only) with pgcrypto, vector (HNSW) and pg_cron; pg_dump -Fc; pg_restore into a second
# database of the same server; Debian 12's pg_restore 15 refusing the 18 archive; the new
# pg_restore reading a PG 15 custom dump.
#   prove.sh PREFIX          (required)
set -uo pipefail
PREFIX=${1:?usage: prove.sh PREFIX}
B=$PREFIX/bin
PG15=/usr/lib/postgresql/15/bin
LOGS=${PROVE_LOGS:-$(mktemp -d)}
T=$(mktemp -d "${TMPDIR:-/tmp}/pgprove.XXXXXX")
chown postgres: "$T"; chmod 700 "$T"
as_pg() { runuser -u postgres -- "$@"; }
psql18() { as_pg "$B/psql" -X -q -v ON_ERROR_STOP=1 -h "$T" -p 5499 -U postgres "$@"; }
step() { echo; echo "=== $*"; }
stop_all() {
    [ -f "$T/data18/postmaster.pid" ] && as_pg "$B/pg_ctl" -D "$T/data18" -m fast stop >/dev/null
    [ -f "$T/data15/postmaster.pid" ] && as_pg "$PG15/pg_ctl" -D "$T/data15" -m fast stop >/dev/null
    mkdir -p "$LOGS"; cp "$T"/*.log "$LOGS/" 2>/dev/null
    rm -rf "$T"
}
trap stop_all EXIT
fail=0
check() { if "$@"; then echo "ok: $*" | cut -c1-160; else echo "FAILED: $*" | cut -c1-160; fail=1; fi; }

step "prefix: $PREFIX ($(du -sh "$PREFIX" | cut -f1)), owner $(stat -c '%U:%G %a' "$PREFIX")"
cat "$PREFIX/.busflow-pg.stamp" | sed -n '/^--$/,$p' | sed 1d
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-<unset>}"
for f in postgres initdb pg_ctl pg_dump pg_restore psql; do
    printf '%-11s %s\n' "$f" "$(as_pg "$B/$f" --version)"
done

step "initdb as the postgres OS user"
t0=$(date +%s%N)
as_pg "$B/initdb" -D "$T/data18" -U postgres -A trust -E UTF8 --locale=C >"$T/initdb.log" 2>&1 \
    || { cat "$T/initdb.log"; exit 1; }
echo "initdb: $(( ($(date +%s%N) - t0) / 1000000 )) ms"

start18() {  # $1 = cron.database_name, $2 = cron.launch_active_jobs, $3 = cron.host
    as_pg "$B/pg_ctl" -D "$T/data18" -l "$T/pg18.log" -w -o "-p 5499 -c listen_addresses='' \
-c unix_socket_directories=$T -c shared_preload_libraries=pg_cron -c cron.database_name=$1 \
-c cron.launch_active_jobs=$2 -c cron.host=${3:-$T}" start >/dev/null \
        || { tail -20 "$T/pg18.log"; exit 1; }
}
step "start (socket only, shared_preload_libraries=pg_cron, cron.database_name=verify)"
start18 verify on
psql18 -d postgres -Atc "SELECT version()"
psql18 -d postgres -Atc "SELECT name, setting FROM pg_settings WHERE name IN
  ('listen_addresses','shared_preload_libraries','cron.database_name','cron.launch_active_jobs')
  ORDER BY 1"

step "CREATE EXTENSION pgcrypto, vector, pg_cron; HNSW; crypt(); cron.schedule()"
psql18 -d postgres -c "CREATE DATABASE verify"
psql18 -d verify <<'SQL'
CREATE EXTENSION pgcrypto;
CREATE EXTENSION vector;
CREATE EXTENSION pg_cron;
CREATE TABLE items (id bigserial PRIMARY KEY, v vector(3), secret text);
INSERT INTO items (v, secret) VALUES ('[1,2,3]', crypt('x', gen_salt('bf'))),
                                     ('[4,5,6]', crypt('y', gen_salt('bf'))), ('[1,1,1]', 'z');
CREATE INDEX items_v_hnsw ON items USING hnsw (v vector_l2_ops);
\pset footer off
SELECT extname, extversion FROM pg_extension ORDER BY 1;
SELECT crypt('x', gen_salt('bf')) LIKE '$2a$06$%' AS bf_crypt_ok,
       (SELECT secret = crypt('x', secret) FROM items WHERE id = 1) AS crypt_verifies;
SET enable_seqscan = off;
EXPLAIN (COSTS off) SELECT id FROM items ORDER BY v <-> '[1,2,2]' LIMIT 1;
SELECT id, v <-> '[1,2,2]' AS dist FROM items ORDER BY v <-> '[1,2,2]' LIMIT 1;
SELECT cron.schedule('scrub', '0 4 * * *', 'SELECT 1') AS jobid;
SELECT jobid, jobname, schedule, command, database, active FROM cron.job;
SQL
[ $? = 0 ] || { echo "FAILED: SQL"; exit 1; }

step "pg_cron really runs a job (cron.host=<socket dir>, since there is no TCP listener)"
psql18 -d verify -Atc "CREATE TABLE ticks (at timestamptz DEFAULT now());
  SELECT 'tick job ' || cron.schedule('tick', '1 seconds', 'INSERT INTO ticks DEFAULT VALUES')"
sleep 3.5
psql18 -d verify -Atc "SELECT cron.unschedule('tick')" >/dev/null
psql18 -d verify -c "SELECT count(*) AS ticks FROM ticks" -c "SELECT status, count(*),
  min(return_message) FROM cron.job_run_details GROUP BY 1"
check test "$(psql18 -d verify -Atc "SELECT count(*) FROM ticks")" -ge 1
psql18 -d verify -Atc "DROP TABLE ticks; TRUNCATE cron.job_run_details"

step "pg_dump -Fc verify (pg_dump 18)"
as_pg "$B/pg_dump" -h "$T" -p 5499 -U postgres -Fc -f "$T/verify18.dump" verify
printf 'archive header: '; head -c 7 "$T/verify18.dump" | od -An -c | tr -s ' '
"$B/pg_restore" -l "$T/verify18.dump" | sed -n '1,/^;$/p;/EXTENSION\|TABLE DATA/p' | grep -v '^;$' \
    | grep -E "Archive created|dbname|Format|Dump Version|Dumped from|Dumped by|EXTENSION|TABLE DATA"

step "pg_restore into a second database 'restored' while cron.database_name=verify"
psql18 -d postgres -c "CREATE DATABASE restored"
as_pg "$B/pg_restore" -h "$T" -p 5499 -U postgres -d restored "$T/verify18.dump" 2>&1 | head -20
echo "pg_restore exit: ${PIPESTATUS[0]}"
psql18 -d restored -Atc "SELECT 'extensions in restored: ' || string_agg(extname, ', ' ORDER BY extname) FROM pg_extension"
psql18 -d postgres -c "DROP DATABASE restored"

step "same, with the server restarted with cron.database_name=restored, cron.launch_active_jobs=off"
as_pg "$B/pg_ctl" -D "$T/data18" -m fast stop >/dev/null
start18 restored off
psql18 -d postgres -c "CREATE DATABASE restored"
as_pg "$B/pg_restore" -h "$T" -p 5499 -U postgres -d restored --exit-on-error "$T/verify18.dump"
rc=$?; echo "pg_restore exit: $rc"; [ $rc = 0 ] || fail=1
psql18 -d restored <<'SQL'
\pset footer off
SELECT extname, extversion FROM pg_extension ORDER BY 1;
SELECT count(*) AS rows, (SELECT secret = crypt('x', secret) FROM items WHERE id = 1) AS crypt_ok FROM items;
SELECT indexrelid::regclass AS idx, pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'items'::regclass;
SELECT jobid, jobname, schedule, command, database, active FROM cron.job;
SHOW cron.launch_active_jobs;
SQL

step "Debian 12's pg_restore 15 on the PG 18 archive"
"$PG15/pg_restore" --version
"$PG15/pg_restore" -l "$T/verify18.dump" 2>&1 | head -3; echo "exit: ${PIPESTATUS[0]}"

step "PG 15 (Debian) custom dump -> the new pg_restore"
as_pg "$PG15/initdb" -D "$T/data15" -U postgres -A trust -E UTF8 --locale=C >/dev/null 2>&1
as_pg "$PG15/pg_ctl" -D "$T/data15" -l "$T/pg15.log" -w -o "-p 5415 -c listen_addresses='' \
-c unix_socket_directories=$T" start >/dev/null || { tail "$T/pg15.log"; exit 1; }
as_pg "$PG15/psql" -X -q -v ON_ERROR_STOP=1 -h "$T" -p 5415 -U postgres -d postgres <<'SQL'
CREATE DATABASE old15;
\c old15
CREATE EXTENSION pgcrypto;
CREATE TABLE t AS SELECT g AS id, digest(g::text, 'sha256') AS h FROM generate_series(1, 100) g;
SQL
as_pg "$PG15/pg_dump" -h "$T" -p 5415 -U postgres -Fc -f "$T/old15.dump" old15
"$B/pg_restore" -l "$T/old15.dump" | grep -E "Dump Version|Dumped from|Dumped by"
psql18 -d postgres -c "CREATE DATABASE from15"
as_pg "$B/pg_restore" -h "$T" -p 5499 -U postgres -d from15 --exit-on-error "$T/old15.dump"
rc=$?; echo "pg_restore 18 of a PG 15 dump, exit: $rc"; [ $rc = 0 ] || fail=1
psql18 -d from15 -Atc "SELECT 'rows: ' || count(*) || ', sha256 ok: ' || bool_and(h = digest(id::text, 'sha256')) FROM t"

step "pg_cron scheduler log lines (server log kept in $LOGS/pg18.log)"
grep -E "pg_cron|cron" "$T/pg18.log" | grep -v "^\s" | cut -c1-200 | head -12
echo; [ $fail = 0 ] && echo "PROVE: all checks passed" || echo "PROVE: some checks FAILED"
exit $fail
