#!/bin/sh
# The PostgreSQL extensions named by EXTENSIONS= in docker/backup/producer.env, the runbook's
# list (F2 step 2), for the server in PREFIX (tools/postgres-newest's install, which brings
# pgcrypto with contrib and pg_cron and pgvector from Debian's newest suite). Both images run it
# (docker/install-postgres.sh): the restore image, and the run image whose ephemeral target
# initdb's its own clusters. Each extension has a recipe below; one without a recipe fails the
# build. An extension no reachable registry carries is named, not built: a dump that creates it
# fails the restore with F2 naming it (the preflight, or CREATE EXTENSION on the docker target).
#
#   install-extensions.sh producer.env /opt/busflow-pg/18            check and configure
#   install-extensions.sh producer.env /opt/busflow-pg/18 --print    only say what it would do
set -eu
env_file=$1
prefix=$2
mode=${3:-install}
EXTENSIONS=""
. "$env_file"
[ -n "$EXTENSIONS" ] || { echo "install-extensions.sh: no EXTENSIONS= in $env_file" >&2; exit 1; }

present=""
missing=""
preload=""
for ext in $(echo "$EXTENSIONS" | tr ',' ' '); do
    case "$ext" in
        # contrib, part of the server
        pgcrypto) present="$present pgcrypto" ;;
        # the extension itself is called "vector"
        pgvector | vector) present="$present vector" ;;
        # pg_cron must be preloaded and lives in one database per server: the one verify
        # restores into ("restored"); its restored jobs must not run against the copy
        pg_cron) present="$present pg_cron"; preload="$preload,pg_cron" ;;
        # no Debian package or PyPI wheel carries pgsodium for PostgreSQL 18, and its upstream
        # source (GitHub) is not reachable from these builds
        pgsodium) missing="$missing pgsodium" ;;
        *) echo "install-extensions.sh: no recipe for extension '$ext' (EXTENSIONS in" \
                "$env_file): add one to docker/install-extensions.sh" >&2
           exit 1 ;;
    esac
done
preload=${preload#,}

if [ "$mode" = --print ]; then
    for e in $present; do echo "present $e"; done
    for e in $missing; do echo "missing $e"; done
    [ -z "$preload" ] || echo "preload $preload"
    exit 0
fi

for e in $present; do
    [ -f "$prefix/share/extension/$e.control" ] || {
        echo "install-extensions.sh: $e is not in $prefix (tools/postgres-newest should have" \
             "installed it)" >&2
        exit 1
    }
done
for e in $missing; do
    echo "install-extensions.sh: $e is not installed (no reachable package or source for" \
         "$("$prefix/bin/pg_config" --version)); a dump that creates it fails F2" \
         "naming $e" >&2
done

# initdb copies this sample into every new cluster: the restore container's, the Dagster
# storage's and the ephemeral target's alike.
if [ -n "$preload" ]; then
    cat >> "$prefix/share/postgresql.conf.sample" <<CONF

# busflow-verify: extensions from docker/backup/producer.env (install-extensions.sh)
shared_preload_libraries = '$preload'
cron.database_name = 'restored'
cron.launch_active_jobs = off
CONF
fi
