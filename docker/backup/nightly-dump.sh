#!/bin/sh
# The nightly producer (issue 19): pg_dump -Fc and its manifest, taken in one snapshot of the
# source by `busflow-verify dump`, then both uploaded beside each other (the dump first, the
# manifest last: a verify that finds the manifest finds its dump) with the endpoint settings
# verify reads.
#
#   BUSFLOW_SOURCE_DSN   the source, without its password (e.g. "host=db port=5432 dbname=busflow
#                        user=backup"); PGPASSWORD the password (never on a command line)
#   BACKUP_PRIMARY_ENDPOINT, BACKUP_BUCKET, BACKUP_PREFIX, BACKUP_ACCESS_KEY_ID,
#   BACKUP_SECRET_ACCESS_KEY, BACKUP_REGION   where verify reads them (docs/deploying.md: Configuration)
#   EXACT_TABLES         optional: schema.table,... counted exactly, the rest by reltuples
#   DUMP_DIR             local scratch for the dump (default /var/tmp)
set -eu
out="${DUMP_DIR:-/var/tmp}/pg_dump_$(date -u +%Y%m%d_%H%M).dump"
trap 'rm -f "$out" "${out%.dump}.manifest.json"' EXIT
busflow-verify dump --out "$out" --upload ${EXACT_TABLES:+--exact-tables "$EXACT_TABLES"}
