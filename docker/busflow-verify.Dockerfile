# The busflow-verify image: the code location (`dagster code-server start`, the default command),
# and with another command the webserver and the daemon (docker/compose.yaml), and the runs the
# DockerRunLauncher starts. Build from the repository root:
#   docker build -f docker/busflow-verify.Dockerfile --build-arg PG_MAJOR=18 \
#       -t busflow-verify:latest .
FROM python:3.11-slim-bookworm

# PostgreSQL of production's major from the PGDG repository (bookworm ships 15): pg_restore and
# psql for every restore target, initdb and pg_ctl for the ephemeral one. No cluster is created
# at install; the ephemeral target makes its own per run, as the `postgres` OS user.
ARG PG_MAJOR=18
ENV PG_MAJOR=${PG_MAJOR}
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-common ca-certificates curl gnupg \
 && sed -ri 's/#?(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
 && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
 && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}

# The same extensions as the restore image, for the ephemeral target's clusters.
COPY docker/backup/producer.env docker/install-extensions.sh /opt/busflow-verify/docker/
RUN sh /opt/busflow-verify/docker/install-extensions.sh /opt/busflow-verify/docker/producer.env

WORKDIR /opt/busflow-verify
COPY pyproject.toml ./
COPY busflow_verify ./busflow_verify
COPY config ./config
RUN pip install --no-cache-dir .

# $DAGSTER_HOME is the shared state volume; compose mounts deploy/dagster.yaml into it.
ENV DAGSTER_HOME=/opt/dagster/dagster_home \
    BUSFLOW_VERIFY_CONFIG_DIR=/opt/busflow-verify/config/backup-verify
COPY deploy/workspace.yaml /opt/dagster/workspace.yaml
RUN mkdir -p "$DAGSTER_HOME"

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "busflow_verify.definitions"]
