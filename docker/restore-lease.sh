#!/bin/sh
# The restore container's watchdog, started by docker/postgres-entrypoint.sh when the `docker`
# restore target sets BUSFLOW_LEASE_APPLICATION. The run that started the container holds a
# lease: one connection to the server with that application_name, from when the server is ready
# until the run removes the container. A run killed outright (its container killed, the OOM
# killer) cannot remove the container, but its connection closes with it. The lease counts as
# taken once it is seen, or once POSTGRES_DB has been re-created for another owner (the run
# provisions it after taking the lease: a lease shorter than a poll is not missed). When the
# lease has been gone for BUSFLOW_LEASE_GRACE_SECONDS, or none was taken within
# BUSFLOW_LEASE_FIRST_SECONDS of the start, the server is stopped and the restored data deleted:
# the container exits holding nothing of the dump, and the next run on the engine removes it by
# its run label. Usage: restore-lease.sh SERVER_PID MARKER
set -u
server=$1 marker=$2
app=$BUSFLOW_LEASE_APPLICATION
db=${POSTGRES_DB:-postgres}
case $app$db in
    *[!a-z0-9_-]*) echo "restore-lease: BUSFLOW_LEASE_APPLICATION=$app, POSTGRES_DB=$db:" \
                        "only a-z, 0-9, _ and -" >&2
                   exit 2 ;;
esac
first=${BUSFLOW_LEASE_FIRST_SECONDS:-600}
grace=${BUSFLOW_LEASE_GRACE_SECONDS:-15}
poll=${BUSFLOW_LEASE_POLL_SECONDS:-2}
user=${POSTGRES_USER:-postgres}
held=0 since=0
while sleep "$poll"; do
    state=$(psql -XtAq -U "$user" -d postgres -c "
        SELECT (SELECT count(*) FROM pg_stat_activity WHERE application_name = '$app')
               || ' ' || EXISTS (SELECT 1 FROM pg_database
                                 WHERE datname = '$db'
                                   AND pg_get_userbyid(datdba) <> current_user)" 2>/dev/null)
    leases=${state%% *} provisioned=${state#* }
    if [ "${leases:-0}" -gt 0 ] 2>/dev/null; then
        held=1 since=0
        continue
    fi
    if [ "$held" = 0 ] && [ "$provisioned" = true ]; then
        held=1 since=0  # taken and already gone between two polls
    fi
    since=$((since + poll))
    limit=$grace
    [ "$held" = 1 ] || limit=$first
    [ "$since" -ge "$limit" ] && break
done
if [ "$held" = 1 ]; then
    why="its run's lease ($app) has been gone for ${since} s: the run that started it is gone"
else
    why="no run took its lease ($app) within ${since} s of its start"
fi
echo "restore-lease: $why; stopping the server and deleting the restored data" >&2
: > "$marker"
kill -QUIT "$server" 2>/dev/null  # immediate shutdown: nothing in it is worth keeping
while kill -0 "$server" 2>/dev/null; do sleep 0.2; done
find "$PGDATA" -mindepth 1 -delete
echo "restore-lease: the restored data is deleted; the container exits" >&2
