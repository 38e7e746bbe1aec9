"""Where a dump is restored (runbook step 3), selected by BUSFLOW_RESTORE_TARGET.

- `ephemeral` (the default): a DisposablePostgres started for the run on this machine.
- `server`: a scratch database with a unique name on a restore server the team keeps, created
  for the run and dropped after it, also when the run failed.
- `docker`: the restore image (docker/restore-target.Dockerfile, built with the extensions of
  docker/backup/producer.env) started through the Docker SDK for the run and removed after it.

Every target gives the run one empty database to restore into (`open`: a RestoreDatabase,
owned by an unprivileged restore role, core/privilege.py), local scratch space for the download,
the PostgreSQL client binaries, and `close`, which removes what the target made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from busflow_verify.core import watchdog
from busflow_verify.core.config import ConfigError
from busflow_verify.core.diskspace import SpaceNeed
from busflow_verify.core.pgcluster import (
    OWNER_FILE,
    SCRATCH_PREFIX,
    ConnInfo,
    DisposablePostgres,
    find_bin_dir,
    free_port,
)
from busflow_verify.core.privilege import (
    RESTORE_ROLE,
    ProvisionError,
    RestoreDatabase,
    drop_role,
    provision,
)
from busflow_verify.core.servers import Choice, choose, installed

TARGET_ENV = "BUSFLOW_RESTORE_TARGET"
KINDS = ("ephemeral", "docker", "server")
RESTORED_DB = "restored"  # the database name in a cluster or container of our own
CONTAINER_PREFIX = "busflow-verify-restore-"
RUN_LABEL = "busflow-verify.run-id"
DEFAULT_IMAGE = "busflow-verify-restore:latest"
SERVER_ENV = {  # the restore server's connection; the password is a secret
    "host": "BUSFLOW_RESTORE_SERVER_HOST",
    "port": "BUSFLOW_RESTORE_SERVER_PORT",
    "user": "BUSFLOW_RESTORE_SERVER_USER",
    "password": "BUSFLOW_RESTORE_SERVER_PASSWORD",
    "dbname": "BUSFLOW_RESTORE_SERVER_DB",
}
DOCKER_ENV = {
    "image": "BUSFLOW_RESTORE_IMAGE",
    "network": "BUSFLOW_RESTORE_DOCKER_NETWORK",
    "ready_timeout": "BUSFLOW_RESTORE_READY_TIMEOUT",
}


class RestoreTargetError(RuntimeError):
    """The restore target could not be prepared or reached; the message says what to fix."""


class RestoreTargetNotReady(RestoreTargetError):
    """The restore container did not accept connections in time."""


def target_kind(env: Mapping[str, str]) -> str:
    """The configured kind, checked: a bad value or a missing server variable is a ConfigError
    naming the variable (the CLI's exit 2, before anything is launched)."""
    kind = env.get(TARGET_ENV) or "ephemeral"
    if kind not in KINDS:
        raise ConfigError(f"{TARGET_ENV}={kind!r} is not one of {', '.join(KINDS)}")
    if kind == "server":
        missing = [SERVER_ENV[k] for k in ("host", "user") if not env.get(SERVER_ENV[k])]
        if missing:
            raise ConfigError(
                f"{TARGET_ENV}=server needs {' and '.join(missing)} "
                "(the restore server's host and restore role)"
            )
        env_number(SERVER_ENV["port"], 5432, int, env)
    if kind == "docker":
        env_number(DOCKER_ENV["ready_timeout"], 120.0, float, env)
    return kind


def env_number(name: str, default, cast, env: Mapping[str, str]):
    """A numeric variable, or its default when unset; a non-number is a ConfigError naming it."""
    text = env.get(name)
    try:
        return cast(text) if text else default
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None


def restore_host(env: Mapping[str, str]) -> str:
    """What the verify runs of this deployment restore on, for the one-run-per-restore-host
    concurrency limit (the `busflow/restore_host` tag)."""
    kind = target_kind(env)
    if kind == "server":
        return f"server:{env[SERVER_ENV['host']]}:{env.get(SERVER_ENV['port']) or 5432}"
    if kind == "docker":
        return f"docker:{env.get('DOCKER_HOST') or 'local'}"
    return "ephemeral:local"


def scratch_db_name(partition: str, run_id: str) -> str:
    """verify_<partition>_<first 8 of the run id>: unique per run, and says whose it is."""
    return f"verify_{partition.replace('-', '')}_{run_id.replace('-', '')[:8]}".lower()


def owner_role_name(scratch_db: str) -> str:
    """The restore role of a scratch database on a restore server: unique with it."""
    return f"{scratch_db}_owner"


class _Target:
    """What the three targets share: bin dir, local scratch space, a logger."""

    kind = ""

    def __init__(self, bin_dir: str | None = None, scratch_base: str | None = None, log=None):
        self.bin_dir = find_bin_dir(bin_dir)
        self._scratch_base = scratch_base
        self._scratch: Path | None = None
        self._scratch_watchdog = None
        self.log = log or logging.getLogger(__name__)

    def scratch_dir(self) -> Path:
        """Local space for the download, removed by `close`."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=self._scratch_base))
            # owned like a cluster: a run killed outright has it removed by its watchdog within
            # seconds (core/watchdog.py: no postmaster there, so only the removal), or else by
            # the next run's sweep
            (self._scratch / OWNER_FILE).write_text(json.dumps({"pid": os.getpid()}))
            self._scratch_watchdog = watchdog.spawn(self._scratch, self.bin_dir, None)
        return self._scratch

    def _remove_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
            watchdog.end(self._scratch_watchdog)
            self._scratch_watchdog = None

    def prepare(self) -> None:
        """Begin making the target while the run's first steps go; nothing to do here."""

    def select_server(self, needs: dict) -> Choice | None:
        """The server to restore a dump with; None: the target's own (a restore server, the
        restore image), which the run does not choose."""
        return None

    # where the restored database's bytes go, and whose disk that is (core/hostfaults.py)
    data_host = "the restore server"

    def data_path(self) -> Path | None:
        """The local path the restored database is written under; None when not on this host."""
        return None

    def space_needs(self, dump_bytes: int, restored_bytes: int) -> list[SpaceNeed]:
        """What this target needs on the verify host (core/diskspace.py): the download."""
        return [SpaceNeed(self.scratch_dir(), dump_bytes, "the downloaded dump")]


def server_major(target: ConnInfo) -> int:
    with psycopg.connect(**target.kwargs(), connect_timeout=10) as conn:
        return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


class EphemeralTarget(_Target):
    """The embedded default: a fresh local cluster for the run, started in the background as
    the run begins (`prepare`) and waited for on first use.

    `keep` retains it after the run for triage (never the default)."""

    kind = "ephemeral"

    def __init__(
        self,
        bin_dir: str | None = None,
        scratch_base: str | None = None,
        log=None,
        keep: bool = False,
    ):
        super().__init__(bin_dir, scratch_base, log)
        self.explicit_bin_dir = bin_dir
        self.keep = keep
        self.cluster: DisposablePostgres | None = None
        self._database: RestoreDatabase | None = None  # provisioned in it as it started
        self._starting: Future | None = None

    def prepare(self) -> None:
        """Start the cluster and provision its database in the background: initdb, start,
        CREATE ROLE and CREATE DATABASE take about 1.1 s, which then pass while the dump is
        located and size-guarded rather than before its restore (docs/performance.md); the
        CLI's cluster, started before the run (`start_early`), is taken over instead.
        `_started` waits for it and raises what it raised."""
        if self._starting is None:
            self._starting = _take_early(self.bin_dir, self._scratch_base) or _in_background(
                self._start
            )

    def _start(self) -> tuple[DisposablePostgres, RestoreDatabase]:
        return _start_cluster(self.bin_dir, self._scratch_base)

    def _started(self) -> DisposablePostgres:
        if self.cluster is None:
            self.prepare()
            self.cluster, self._database = self._starting.result()
            self._log_started(self.cluster)
        return self.cluster

    def _log_started(self, cluster: DisposablePostgres) -> None:
        self.log.info(
            f"disposable Postgres {cluster.major_version()} started in {cluster.root} "
            f"(port {cluster.port})"
        )

    data_host = "the verify host"

    def data_path(self) -> Path:
        if self.cluster is not None and self.cluster.root is not None:
            return self.cluster.root
        return Path(self._scratch_base or tempfile.gettempdir())

    def space_needs(self, dump_bytes: int, restored_bytes: int) -> list[SpaceNeed]:
        """The download, and the restored database in the disposable cluster beside it."""
        restored = SpaceNeed(self.data_path(), restored_bytes, "the restored database")
        return [*super().space_needs(dump_bytes, restored_bytes), restored]

    def select_server(self, needs: dict) -> Choice:
        """The installed server for this dump (core/servers.py): the newest that reads it and
        has its extensions. The cluster started at run start (the newest) is replaced when
        another one is chosen."""
        return choose(
            installed(self.explicit_bin_dir),
            needs["archive_version"],
            needs["dumped_by_major"],
            needs["extensions"],
        )

    def open(self, partition: str, run_id: str, choice: Choice | None = None) -> RestoreDatabase:
        cluster = self._started()
        if choice and choice.server and choice.server.bin_dir != cluster.bin_dir:
            self.log.info(f"restoring with {choice.server.label} instead: {choice.reason}")
            cluster.stop()
            self.cluster = None
            self.bin_dir = choice.server.bin_dir
            self.cluster, self._database = self._start()
            self._log_started(self.cluster)
        return self._database

    def close(self) -> None:
        if self.cluster is None and self._starting is not None:
            try:  # started for a run that ended before it needed the cluster: remove it too
                self.cluster = self._starting.result()[0]
            except Exception as exc:
                self.log.warning(f"the disposable Postgres did not start: {exc}")
        self._starting = None
        self._remove_scratch()
        if self.cluster is None:
            return
        if self.keep:
            c = self.cluster
            self.log.warning(
                f"keep_after_run is set: the disposable Postgres stays at {c.root} "
                f"(psql -h {c.root} -p {c.port} -U postgres {RESTORED_DB}); "
                f"remove it with: {c.tool('pg_ctl')} -D {c.data_dir} stop && rm -rf {c.root}"
            )
            return
        self.cluster.stop()
        self.cluster = None
        self.log.info("disposable Postgres stopped and removed")


# The cluster the CLI started before its run existed: ((bin dir, scratch base), its start).
_early: tuple[tuple[Path, str | None], Future] | None = None


def start_early(scratch_base: str | None = None) -> None:
    """Start the ephemeral target's cluster now, for a run that is still to be made.

    The CLI calls this before it imports Dagster: initdb and the server's start then run beside
    the imports, the definitions and the run's creation (about 1.5 s of Python) instead of
    after them. The run's EphemeralTarget takes it over when it asks for the same binaries and
    scratch base (`prepare`); `discard_early` removes one that no run took. A cluster that did
    not start is no error here: the run's own start reports it as it would have.
    """
    global _early
    if _early is not None:
        return
    try:
        bin_dir = find_bin_dir()
    except Exception:  # no server installed: the run's target names it
        return
    _early = (
        (bin_dir, scratch_base),
        _in_background(lambda: _start_cluster(bin_dir, scratch_base)),
    )


def _start_cluster(
    bin_dir: Path, scratch_base: str | None
) -> tuple[DisposablePostgres, RestoreDatabase]:
    """A started cluster with the restore database and its role made in it."""
    cluster = DisposablePostgres(bin_dir=str(bin_dir), base_dir=scratch_base).start()
    try:
        return cluster, provision(cluster.conninfo(), RESTORED_DB, RESTORE_ROLE)
    except BaseException:
        cluster.stop()
        raise


def _take_early(bin_dir: Path, scratch_base: str | None) -> Future | None:
    global _early
    if _early is None or _early[0] != (bin_dir, scratch_base):
        return None
    starting, _early = _early[1], None
    return starting


def discard_early() -> None:
    """Stop and remove the cluster `start_early` made, if no run took it."""
    if _early is None:
        return
    starting = _take_early(*_early[0])
    with contextlib.suppress(Exception):
        starting.result()[0].stop()


def _in_background(start) -> Future:
    pool = ThreadPoolExecutor(1, thread_name_prefix="disposable-postgres")
    try:
        return pool.submit(start)
    finally:
        pool.shutdown(wait=False)


class ServerTarget(_Target):
    """A scratch database on a restore server: created with a unique name, dropped after.

    The configured role administers: it makes the database and its restore role
    (core/privilege.py), so it needs CREATEDB, CREATEROLE and the right to give BYPASSRLS. The
    password never leaves `server`'s secret field.
    """

    kind = "server"

    def __init__(
        self,
        server: ConnInfo,
        bin_dir: str | None = None,
        scratch_base: str | None = None,
        log=None,
    ):
        super().__init__(bin_dir, scratch_base, log)
        self.server = server  # dbname: the maintenance database to connect to
        self.created: str | None = None

    def _where(self) -> str:
        s = self.server
        return f"restore server {s.host}:{s.port} as {s.user}"

    def _admin(self) -> psycopg.Connection:
        try:
            return psycopg.connect(**self.server.kwargs(), autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise RestoreTargetError(
                f"cannot connect to the {self._where()} ({str(exc).strip()}): check "
                f"{SERVER_ENV['host']}, {SERVER_ENV['port']}, {SERVER_ENV['user']} and "
                f"{SERVER_ENV['password']}"
            ) from None

    def open(self, partition: str, run_id: str, choice: Choice | None = None) -> RestoreDatabase:
        """The scratch database, owned by a restore role made for this run (`<database>_owner`,
        dropped with it): the configured role only administers."""
        name = scratch_db_name(partition, run_id)
        self._admin().close()  # a connection problem is named before anything is created
        self.created = name
        try:
            db = provision(self.server, name, owner_role_name(name))
        except ProvisionError as exc:
            raise RestoreTargetError(f"{exc} (on the {self._where()})") from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise RestoreTargetError(
                f"the {self._where()} may not create the scratch database {name} "
                f"({exc.diag.message_primary}): ALTER ROLE {self.server.user} CREATEDB"
            ) from None
        self.log.info(
            f"scratch database {name} created on the {self._where()}, owned by the "
            f"restore role {db.owner.user}"
        )
        return db

    def close(self) -> None:
        """Drop the scratch database (WITH (FORCE): a failed step may have left a connection).
        A drop that fails is logged with the statement to run by hand, and does not mask the
        run's own outcome."""
        self._remove_scratch()
        if self.created is None:
            return
        name, self.created = self.created, None
        role = owner_role_name(name)
        try:
            with self._admin() as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            drop_role(self.server, role)
        except (RestoreTargetError, psycopg.Error) as exc:
            self.log.error(
                f"scratch database {name} and its role {role} could not be dropped "
                f"from the {self._where()} ({exc}); drop them by hand: DROP DATABASE "
                f"{name}; DROP ROLE {role}"
            )
            return
        self.log.info(f"scratch database {name} and its role dropped from the {self._where()}")


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


class DockerTarget(_Target):
    """The restore image started for the run through the Docker SDK, removed after it.

    With a network (the compose deployment: the run's own container is on it) the restore
    container is reached by name on port 5432; on the host's network (`host`: an engine without
    a bridge, the run's container on the host's network too) it listens on a free port of the
    host's loopback; without one its port is published on the engine host's loopback (the CLI on
    a host with an engine). The superuser password is random per run, handed to the container in
    its environment and never logged.

    The container carries its run's id as a label. A run killed outright cannot remove its
    container; the next run on the engine removes the containers of runs that `run_ended` says
    have ended (None: the runs are not known here, and nothing is removed).
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
        return provision(admin, RESTORED_DB, RESTORE_ROLE)

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
