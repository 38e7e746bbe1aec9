"""The `docker` restore target: the restore image (docker/restore-target.Dockerfile, built with
the extensions of docker/backup/producer.env) started through the Docker SDK for the run, labelled
with the run's id, held by the run's lease while it lives, and removed after it."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from busflow_verify.core.postgres.cluster import ConnInfo, free_port
from busflow_verify.core.postgres.privilege import RESTORE_ROLE, RestoreDatabase, provision
from busflow_verify.core.postgres.servers import Choice
from busflow_verify.core.targets.base import (
    RESTORED_DB,
    RestoreTargetError,
    RestoreTargetNotReady,
    Target,
)
from busflow_verify.core.targets.server import scratch_db_name
from busflow_verify.core.targets.settings import DOCKER_ENV, TARGET_ENV

CONTAINER_PREFIX = "busflow-verify-restore-"
RUN_LABEL = "busflow-verify.run-id"
DEFAULT_IMAGE = "busflow-verify-restore:latest"
# The run's lease on its restore container: a connection with this application_name, held from
# when the server is ready until the container is removed. The container's watchdog
# (docker/restore-lease.sh) stops the server and deletes the restored data when it is gone.
LEASE_APPLICATION = "busflow-verify-lease"


def docker_client():
    """The Docker SDK's client for the engine of this environment (DOCKER_HOST, or the local
    socket)."""
    import docker

    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise RestoreTargetError(
            f"no Docker engine reachable ({exc}): {TARGET_ENV}=docker needs one on this host "
            "or in DOCKER_HOST"
        ) from None


HOST_NETWORK = "host"  # the engine host's own network: the container listens on a free port


@dataclass
class DockerSettings:
    image: str = DEFAULT_IMAGE
    network: str | None = None  # a network shared with the run's container; else a local port
    ready_timeout: float = 120.0
    lease_grace_seconds: int = 15  # the lease gone this long: the container's watchdog acts


class DockerTarget(Target):
    """The restore image started for the run through the Docker SDK, removed after it.

    With a network (the compose deployment: the run's own container is on it) the restore
    container is reached by name on port 5432; on the host's network (`host`: an engine without
    a bridge, the run's container on the host's network too) it listens on a free port of the
    host's loopback; without one its port is published on the engine host's loopback (the CLI on
    a host with an engine). The superuser password is random per run, handed to the container in
    its environment and never logged.

    The container carries its run's id as a label, and the run holds a lease on it (a
    connection named LEASE_APPLICATION). A run killed outright cannot remove its container, but
    its lease ends with it: the container's watchdog then stops the server and deletes the
    restored data, and the next run on the engine removes the containers of runs that `run_ended`
    says have ended (None: the runs are not known here, and nothing is removed).
    """

    data_host = "the Docker host of the restore container"

    kind = "docker"
    PORT = "5432/tcp"

    def __init__(
        self,
        settings: DockerSettings,
        client=None,
        bin_dir: str | None = None,
        scratch_base: str | None = None,
        log=None,
        run_ended: Callable[[str], bool] | None = None,
    ):
        super().__init__(bin_dir, scratch_base, log)
        self.settings = settings
        self._client = client
        self.run_ended = run_ended
        self.container = None
        self._host_port: int | None = None
        self._lease: psycopg.Connection | None = None

    def open(self, partition: str, run_id: str, choice: Choice | None = None) -> RestoreDatabase:
        import docker

        client = self._client or docker_client()
        self._remove_left_behind(client)
        password = secrets.token_urlsafe(24)
        options, environment = self._network_options()
        name = CONTAINER_PREFIX + scratch_db_name(partition, run_id).replace("_", "-")
        try:
            client.images.get(self.settings.image)  # never pulled: run() would try a registry
            self.container = client.containers.run(
                self.settings.image,
                detach=True,
                name=name,
                labels={RUN_LABEL: run_id},
                environment={
                    "POSTGRES_PASSWORD": password,
                    "POSTGRES_DB": RESTORED_DB,
                    **self._lease_environment(),
                    **environment,
                },
                **options,
            )
        except docker.errors.ImageNotFound:
            raise RestoreTargetError(
                f"restore image {self.settings.image} not found: build it with `docker build -f "
                f"docker/restore-target.Dockerfile -t {self.settings.image} .` in the "
                f"repository (or docker compose -f docker/compose.yaml build), or set "
                f"{DOCKER_ENV['image']}"
            ) from None
        except docker.errors.APIError as exc:
            _remove_half_started(client, name)
            raise RestoreTargetError(
                f"the Docker engine refused to start {name} from "
                f"{self.settings.image}: {exc.explanation or exc}"
            ) from None
        self.log.info(f"restore container {name} started from {self.settings.image}")
        admin = self._address(password)
        wait_until_ready(self.container, admin, self.settings.ready_timeout)
        self._lease = take_lease(admin, self.container.name)
        return provision(admin, RESTORED_DB, RESTORE_ROLE)

    def _lease_environment(self) -> dict[str, str]:
        """What the container's watchdog is told: the lease's name, how long a lost lease is
        waited for, and how long the first may take (the server's start, then the connection)."""
        return {
            "BUSFLOW_LEASE_APPLICATION": LEASE_APPLICATION,
            "BUSFLOW_LEASE_GRACE_SECONDS": str(self.settings.lease_grace_seconds),
            "BUSFLOW_LEASE_FIRST_SECONDS": str(int(self.settings.ready_timeout) + 120),
        }

    def _network_options(self) -> tuple[dict, dict]:
        """The container's network (run options) and what its server is told of it (env)."""
        if self.settings.network == HOST_NETWORK:
            self._host_port = free_port()
            listen = {"PGPORT": str(self._host_port), "POSTGRES_LISTEN_ADDRESSES": "127.0.0.1"}
            return {"network_mode": HOST_NETWORK}, listen
        if self.settings.network:
            return {"network": self.settings.network}, {}
        return {"ports": {self.PORT: ("127.0.0.1", None)}}, {}

    def _remove_left_behind(self, client) -> None:
        """Remove the restore containers of runs that ended without removing theirs (found by
        their run label): a run container killed outright leaves its restore container."""
        if self.run_ended is None:
            return
        for container in client.containers.list(all=True, filters={"label": RUN_LABEL}):
            run_id = container.labels.get(RUN_LABEL, "")
            if run_id and self.run_ended(run_id):
                container.remove(force=True, v=True)
                self.log.warning(
                    f"restore container {container.name} removed: its run {run_id} ended "
                    "without removing it (killed outright)"
                )

    def _address(self, password: str) -> ConnInfo:
        if self.settings.network == HOST_NETWORK:
            host, port = "127.0.0.1", self._host_port
        elif self.settings.network:
            host, port = self.container.name, 5432
        else:
            self.container.reload()
            published = (self.container.attrs["NetworkSettings"]["Ports"] or {}).get(self.PORT)
            if not published:
                raise RestoreTargetError(
                    f"restore container {self.container.name} has no port {self.PORT} published "
                    "on loopback (an engine without its default bridge network publishes none): "
                    f"set {DOCKER_ENV['network']} to a network shared with this run, or to "
                    f"{HOST_NETWORK} on the engine's host"
                )
            host, port = "127.0.0.1", int(published[0]["HostPort"])
        return ConnInfo(host, port, "postgres", "postgres", password=password)

    def close(self) -> None:
        """Remove the container and its data volume, whatever happened in the run."""
        self._remove_scratch()
        if self._lease is not None:
            lease, self._lease = self._lease, None
            lease.close()
        if self.container is None:
            return
        container, self.container = self.container, None
        try:
            container.remove(force=True, v=True)
        except Exception as exc:  # the engine went away: say what is left behind
            self.log.error(
                f"restore container {container.name} could not be removed ({exc}); "
                f"remove it by hand: docker rm -f -v {container.name}"
            )
            return
        self.log.info(f"restore container {container.name} removed")


def take_lease(admin: ConnInfo, name: str) -> psycopg.Connection:
    """The run's lease on restore container `name`: an idle connection named LEASE_APPLICATION,
    with TCP keepalives so that neither end mistakes a quiet restore for a dead one."""
    try:
        return psycopg.connect(
            **admin.kwargs(),
            application_name=LEASE_APPLICATION,
            autocommit=True,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
    except psycopg.OperationalError as exc:
        raise RestoreTargetNotReady(
            f"restore container {name} accepted a connection, then refused the run's lease "
            f"({str(exc).strip() or type(exc).__name__}); see its log: docker logs {name}"
        ) from None


def _remove_half_started(client, name: str) -> None:
    """A container created but not started (a port or name conflict) is removed by name."""
    import docker

    try:
        client.containers.get(name).remove(force=True, v=True)
    except docker.errors.NotFound:  # nothing was created: nothing to remove
        pass


def wait_until_ready(container, target: ConnInfo, timeout: float, interval: float = 0.5) -> None:
    """Poll until the server in `container` accepts a connection to `target`; a container that
    exits, or one still refusing after `timeout` seconds, is a RestoreTargetNotReady."""
    deadline = time.monotonic() + timeout
    last = "no attempt yet"
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            raise RestoreTargetNotReady(
                f"restore container {container.name} stopped before accepting connections "
                f"(status {container.status}); its last log lines: {_tail(container)}"
            )
        try:
            with psycopg.connect(**target.kwargs(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            last = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        time.sleep(interval)
    raise RestoreTargetNotReady(
        f"restore container {container.name} did not accept connections within {timeout:g} s "
        f"(last error: {last}); raise {DOCKER_ENV['ready_timeout']} if the engine host is slow, "
        f"else see its log lines: {_tail(container)}"
    )


def _tail(container, lines: int = 15) -> str:
    try:
        return container.logs(tail=lines).decode(errors="replace").strip()[-2000:]
    except Exception as exc:  # logs are a courtesy: never hide the real error behind them
        return f"(logs unavailable: {exc})"
