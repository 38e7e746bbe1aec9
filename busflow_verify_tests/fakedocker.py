"""A stand-in for `docker.DockerClient` (no engine runs here): the Docker SDK boundary.

It records every call the docker restore target makes, and its containers are real: `run`
starts a DisposablePostgres in the background, as the postgres image's entrypoint would (the
superuser's password from POSTGRES_PASSWORD and required from then on, the POSTGRES_DB database
created), and publishes it on a loopback port (SocketProxy) that refuses connections until the
server is up.
"""

from __future__ import annotations

import threading

import docker.errors
import psycopg
from psycopg import sql

from busflow_verify.core.postgres.cluster import DisposablePostgres
from busflow_verify_tests.pgproxy import SocketProxy


class FakeContainer:
    def __init__(self, client: FakeDockerClient, name: str, environment: dict, crash: bool):
        self.client, self.name, self.status = client, name, "running"
        self.removed_with: dict | None = None
        self._env, self._crash = environment, crash
        self.proxy = SocketProxy()
        self.attrs = {
            "NetworkSettings": {
                "Ports": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(self.proxy.port)}]}
            }
        }
        self.pg: DisposablePostgres | None = None
        self._thread = threading.Thread(target=self._entrypoint, daemon=True)
        self._thread.start()

    def _entrypoint(self) -> None:
        if self._crash:
            self.status = "exited"
            return
        pg = DisposablePostgres().start()
        self.pg = pg
        with psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self._env["POSTGRES_DB"]))
            )
            conn.execute(
                sql.SQL("ALTER ROLE postgres PASSWORD {}").format(
                    sql.Literal(self._env["POSTGRES_PASSWORD"])
                )
            )
            (pg.data_dir / "pg_hba.conf").write_text("local all all scram-sha-256\n")
            conn.execute("SELECT pg_reload_conf()")
        self.proxy.backend = SocketProxy.socket_of(pg)

    def reload(self) -> None:
        self.client.calls.append(("reload", self.name))

    def logs(self, tail: int = 10) -> bytes:
        return (
            b"initdb: error: could not create directory: Permission denied\n"
            if self._crash
            else b"database system is ready to accept connections\n"
        )

    def remove(self, **kwargs) -> None:
        self.client.calls.append(("remove", self.name, kwargs))
        self.removed_with = kwargs
        self._thread.join()
        self.proxy.close()
        if self.pg is not None:
            self.pg.stop()
        self.status = "removed"


class FakeContainers:
    def __init__(self, client: FakeDockerClient):
        self.client = client

    def run(self, image: str, **kwargs) -> FakeContainer:
        self.client.calls.append(("run", image, kwargs))
        if image not in self.client.images:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        container = FakeContainer(
            self.client, kwargs["name"], kwargs["environment"], crash=self.client.crash
        )
        self.client.containers_started.append(container)
        return container

    def get(self, name: str):
        raise docker.errors.NotFound(f"No such container: {name}")


class FakeDockerClient:
    def __init__(self, images=("busflow-verify-restore:latest",), crash: bool = False):
        self.images, self.crash = set(images), crash
        self.calls: list[tuple] = []
        self.containers_started: list[FakeContainer] = []
        self.containers = FakeContainers(self)

    def run_kwargs(self) -> dict:
        [(_, _, kwargs)] = [c for c in self.calls if c[0] == "run"]
        return kwargs
