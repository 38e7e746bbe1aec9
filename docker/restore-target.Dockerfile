# The restore target for BUSFLOW_RESTORE_TARGET=docker: PostgreSQL of production's major with the
# extensions of docker/backup/producer.env (EXTENSIONS=, runbook F2 step 2), the list read at
# build time by install-extensions.sh, never copied here. Build from the docker/ folder:
#   docker build -f docker/restore-target.Dockerfile --build-arg PG_MAJOR=18 \
#       -t busflow-verify-restore:latest docker
ARG PG_MAJOR=18
FROM postgres:${PG_MAJOR}-bookworm

COPY backup/producer.env install-extensions.sh /opt/busflow-verify/
RUN sh /opt/busflow-verify/install-extensions.sh /opt/busflow-verify/producer.env

# A container lives for one restore: no durability, autovacuum off (the job runs VACUUM ANALYZE
# itself), as for the ephemeral target (busflow_verify/core/pgcluster.py THROWAWAY_SETTINGS).
CMD ["postgres", \
     "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off", \
     "-c", "wal_level=minimal", "-c", "max_wal_senders=0", "-c", "autovacuum=off", \
     "-c", "max_wal_size=8GB", "-c", "checkpoint_timeout=1h", \
     "-c", "maintenance_work_mem=512MB", "-c", "work_mem=64MB", \
     "-c", "dynamic_shared_memory_type=sysv"]
