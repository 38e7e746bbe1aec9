"""docker/compose.yaml brought up as a user would, with docker/compose.host-network.yaml (this
machine's engine has no bridge), through Debian's docker-compose; and the webserver's GraphQL,
which is what the UI's buttons send."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from busflow_verify.core.postgres.cluster import free_port
from busflow_verify_tests.deployed.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
HOST_NETWORK = ROOT / "docker" / "compose.host-network.yaml"
PROJECT = "busflow-verify"
LOCATION = "busflow_verify"
REPOSITORY = "__repository__"


class TopologyError(RuntimeError):
    pass


class Topology:
    """The compose project on `engine`, configured by `settings` (the operator's variables)."""

    def __init__(self, engine: Engine, settings: dict[str, str]):
        self.engine = engine
        self.ports = {
            "DAGSTER_POSTGRES_PORT": free_port(),
            "BUSFLOW_CODE_SERVER_PORT": free_port(),
            "BUSFLOW_WEBSERVER_PORT": free_port(),
        }
        self.settings = {
            "DAGSTER_POSTGRES_USER": "dagster",
            "DAGSTER_POSTGRES_DB": "dagster",
            "DAGSTER_POSTGRES_PASSWORD": "storage-" + secrets.token_hex(8),
            **settings,
            # what this machine needs: the host's network, loopback, the engine's own socket
            "DAGSTER_POSTGRES_HOST": "127.0.0.1",
            "BUSFLOW_CODE_SERVER_HOST": "127.0.0.1",
            "BUSFLOW_RUN_NETWORK": "host",
            "BUSFLOW_RESTORE_DOCKER_NETWORK": "host",
            "DOCKER_SOCKET": str(engine.socket),
            "PIP_NO_INDEX": "1",
            **{k: str(v) for k, v in self.ports.items()},
        }
        self.graphql = GraphQL(f"http://127.0.0.1:{self.ports['BUSFLOW_WEBSERVER_PORT']}/graphql")

    def compose(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        argv = ["docker-compose", "-p", PROJECT, "-f", str(COMPOSE), "-f", str(HOST_NETWORK)]
        out = subprocess.run(
            [*argv, *args],
            env=self.engine.env(**self.settings),
            capture_output=True,
            text=True,
            cwd=ROOT,
            **kwargs,
        )
        if check and out.returncode != 0:
            raise TopologyError(f"docker-compose {' '.join(args)} failed:\n{out.stderr[-4000:]}")
        return out

    def build(self) -> None:
        self.compose("build", "--force-rm")

    def up(self, timeout: float = 180.0) -> None:
        """Start every service and wait until the webserver has loaded the code location."""
        self.compose("up", "-d")
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                data = self.graphql.query(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name "
                    "locationOrLoadError { __typename } } } } }"
                )
                entries = data["workspaceOrError"]["locationEntries"]
                states = {e["name"]: e["locationOrLoadError"]["__typename"] for e in entries}
                if states.get(LOCATION) == "RepositoryLocation":
                    return
                last = str(states)
            except (OSError, TopologyError) as exc:
                last = str(exc)
            time.sleep(1)
        raise TopologyError(
            f"the webserver did not load {LOCATION} in {timeout:g} s ({last}):\n{self.logs()}"
        )

    def logs(self, tail: int = 40) -> str:
        return self.compose("logs", "--no-color", f"--tail={tail}", check=False).stdout[-8000:]

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "-t", "5", check=False)


class GraphQL:
    """The webserver's GraphQL endpoint on loopback."""

    def __init__(self, url: str):
        self.url = url

    def query(self, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise TopologyError(f"GraphQL answered {exc.code}: {exc.read()[:2000]!r}") from None
        if answer.get("errors"):
            raise TopologyError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]


def engine_with_images():
    """The session's engine, the base, the wheelhouse and both images built through compose
    (yielded); then every container, dangling image, volume and network in it removed, the
    engine stopped and the build context's wheels cleared, failed or not."""
    from busflow_verify_tests.deployed import images
    from busflow_verify_tests.deployed.engine import ensure_packages

    ensure_packages()
    engine = Engine().start()
    try:
        images.ensure_base(engine)
        images.ensure_wheelhouse()
        Topology(engine, {"BACKUP_PRIMARY_ENDPOINT": "-", "BACKUP_BUCKET": "-"}).build()
        yield engine
    finally:
        take_down(engine)
        images.clear_wheels()


def take_down(engine: Engine) -> None:
    try:
        client = engine.client()  # the harness's own engine: every container in it is ours
        for container in client.containers.list(all=True):
            container.remove(force=True, v=True)
        client.images.prune(filters={"dangling": True})
        client.volumes.prune()
        client.networks.prune()
    finally:
        engine.stop()
