#!/bin/sh
# Install the PostgreSQL extensions named by EXTENSIONS= in docker/backup/producer.env, the
# runbook's list (F2 step 2), for the PostgreSQL major PG_MAJOR on a Debian image with the PGDG
# apt repository. Both images run it: the restore-target image, and the user-code image whose
# ephemeral target initdb's its own clusters. To add an extension, add it to EXTENSIONS and, when
# it is new to this script, a recipe below; an extension without a recipe fails the build.
#
#   PG_MAJOR=15 install-extensions.sh producer.env            install
#   PG_MAJOR=15 install-extensions.sh producer.env --print    only say what would be done
set -eu
env_file=$1
mode=${2:-install}
: "${PG_MAJOR:?set PG_MAJOR to production's PostgreSQL major}"
PGSODIUM_VERSION=${PGSODIUM_VERSION:-3.1.9}
EXTENSIONS=""
. "$env_file"
[ -n "$EXTENSIONS" ] || { echo "install-extensions.sh: no EXTENSIONS= in $env_file" >&2; exit 1; }

packages=""
preload=""
build=""
for ext in $(echo "$EXTENSIONS" | tr ',' ' '); do
    case "$ext" in
        # contrib, part of the server package
        pgcrypto) ;;
        # the extension itself is called "vector"
        pgvector | vector) packages="$packages postgresql-$PG_MAJOR-pgvector" ;;
        # pg_cron must be preloaded and lives in one database per server: the one verify
        # restores into ("restored"); its restored jobs must not run against the copy
        pg_cron) packages="$packages postgresql-$PG_MAJOR-cron"; preload="$preload,pg_cron" ;;
        # PGDG does not carry pgsodium for every major: built from the pinned upstream release
        # with PGXS against Debian's libsodium. Not preloaded: a restore needs no server key.
        pgsodium) build="$build pgsodium" ;;
        *) echo "install-extensions.sh: no recipe for extension '$ext' (EXTENSIONS in" \
                "$env_file): add one to docker/install-extensions.sh" >&2
           exit 1 ;;
    esac
done
preload=${preload#,}

if [ "$mode" = --print ]; then
    for p in $packages; do echo "package $p"; done
    for b in $build; do echo "build $b $PGSODIUM_VERSION"; done
    [ -z "$preload" ] || echo "preload $preload"
    exit 0
fi

apt-get update
[ -z "$packages" ] || apt-get install -y --no-install-recommends $packages
if [ -n "$build" ]; then
    tools="build-essential curl ca-certificates libsodium-dev postgresql-server-dev-$PG_MAJOR"
    apt-get install -y --no-install-recommends $tools libsodium23
    apt-mark manual libsodium23
    curl -fsSL "https://github.com/michelp/pgsodium/archive/refs/tags/v$PGSODIUM_VERSION.tar.gz" \
        | tar -xz -C /tmp
    make -C "/tmp/pgsodium-$PGSODIUM_VERSION" install
    rm -rf "/tmp/pgsodium-$PGSODIUM_VERSION"
    apt-get purge -y --auto-remove build-essential curl libsodium-dev \
        "postgresql-server-dev-$PG_MAJOR"
fi
rm -rf /var/lib/apt/lists/*

# initdb copies this sample into every new cluster: the restore container's and the ephemeral
# target's alike.
if [ -n "$preload" ]; then
    cat >> "/usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample" <<CONF

# busflow-verify: extensions from docker/backup/producer.env (install-extensions.sh)
shared_preload_libraries = '$preload'
cron.database_name = 'restored'
cron.launch_active_jobs = off
CONF
fi
