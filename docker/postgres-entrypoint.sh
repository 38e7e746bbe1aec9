#!/bin/sh
# The restore image's entrypoint (docker/restore-target.Dockerfile), as the official postgres
# image's does it: on the first start of an empty PGDATA, initdb with the superuser
# POSTGRES_USER (default postgres) and its password POSTGRES_PASSWORD (required), password
# (scram) authentication over TCP from anywhere, trust on the container's own socket, and the
# database POSTGRES_DB when set; then the server: as PID 1, or beside restore-lease.sh's watchdog
# when BUSFLOW_LEASE_APPLICATION is set. The server listens on PGPORT (default 5432) at
# POSTGRES_LISTEN_ADDRESSES (default '*'; 127.0.0.1 on the host's network).
set -eu
if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD: the superuser's password (never logged)}"
    user=${POSTGRES_USER:-postgres}
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
        printf 'CREATE DATABASE "%s"\n' "$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')" |
            postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
fi
unset POSTGRES_PASSWORD
set -- -c "listen_addresses=${POSTGRES_LISTEN_ADDRESSES:-*}" \
    -c unix_socket_directories=/var/run/postgresql "$@"
if [ -z "${BUSFLOW_LEASE_APPLICATION:-}" ]; then
    exec postgres "$@"
fi
# A restore container of the `docker` target: the server runs beside its watchdog
# (restore-lease.sh), which stops it and deletes the restored data when the run that started the
# container is gone. A `docker stop`'s signal is passed on to the server.
postgres "$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM
trap 'kill -INT "$server" 2>/dev/null' INT
marker=$(mktemp -u /tmp/restore-lease-lost.XXXXXX)
sh /usr/local/bin/restore-lease.sh "$server" "$marker" &
watchdog=$!
status=0
while kill -0 "$server" 2>/dev/null; do
    wait "$server" || status=$?  # again when a passed-on signal interrupted the wait
done
if [ -e "$marker" ]; then
    wait "$watchdog" || true  # until the restored data is deleted
else
    kill "$watchdog" 2>/dev/null || true
fi
exit "$status"
