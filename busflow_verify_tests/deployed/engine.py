"""A Docker engine of the harness's own: Debian's dockerd (docker.io, 20.10) started as root with
its data root, exec root, pid file and socket on paths the harness owns, no bridge and no
iptables rules (containers use the host's network), and stopped by its pid file at the end.

The data root is Docker's layer cache and is kept between runs (CACHE/docker); everything else
the engine writes (exec root, pid file, socket, log) lives in STATE/engine and is removed when
the engine stops. `make clean-deploy` removes both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

STATE = Path(os.environ.get("BUSFLOW_DEPLOY_STATE", "/var/tmp/busflow-deploy"))
CACHE = Path(os.environ.get("BUSFLOW_DEPLOY_CACHE", "/var/cache/busflow-deploy"))
STORAGE_DRIVER = os.environ.get("BUSFLOW_DOCKER_STORAGE_DRIVER", "overlay2")
# Debian's packages: the engine, the compose implementation, the base image's builder
PACKAGES = {
    "/usr/sbin/dockerd": "docker.io",
    "/usr/bin/docker-compose": "docker-compose",
    "/usr/sbin/debootstrap": "debootstrap",
}
DOCKER = "/usr/bin/docker"  # Debian's client, of the engine's version (/usr/local/bin may differ)


class EngineError(RuntimeError):
    """The engine could not be installed, started or reached; the message says what to check."""


def ensure_packages() -> None:
    """Install Debian's docker.io, docker-compose and debootstrap when missing (as root)."""
    missing = [pkg for path, pkg in PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise EngineError(
            f"install {' '.join(missing)} (apt-get, as root): the deploy test needs them"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


class Engine:
    def __init__(self, state: Path = STATE, cache: Path = CACHE, driver: str = STORAGE_DRIVER):
        self.run_dir = state / "engine"
        self.data_root = cache / "docker"
        self.driver = driver
        self.socket = self.run_dir / "docker.sock"
        self.pidfile = self.run_dir / "dockerd.pid"
        self.log_file = self.run_dir / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for docker and docker-compose: this engine, Debian's clients first,
        the classic builder (the one docker-compose 1.29 drives through the API)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        env.update(
            DOCKER_HOST=self.host,
            PATH="/usr/sbin:/usr/bin:/sbin:/bin:" + env.get("PATH", ""),
            DOCKER_BUILDKIT="0",
            COMPOSE_DOCKER_CLI_BUILD="0",
        )
        env.update(extra)
        return env

    def docker(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("check", True)
        return subprocess.run([DOCKER, *args], env=self.env(), **kwargs)

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.host, version="auto", timeout=300)

    def start(self, timeout: float = 60.0) -> Engine:
        """Start dockerd (a stale one of ours, left by a killed run, is stopped first)."""
        self.stop()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        argv = [
            "/usr/sbin/dockerd",
            f"--data-root={self.data_root}",
            f"--exec-root={self.run_dir / 'exec'}",
            f"--pidfile={self.pidfile}",
            f"--host={self.host}",
            f"--storage-driver={self.driver}",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ]
        with open(self.log_file, "ab") as log:
            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=self.env(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                self.socket.exists()
                and self.docker("version", capture_output=True, check=False).returncode == 0
            ):
                return self
            time.sleep(0.3)
        raise EngineError(
            f"dockerd did not answer on {self.socket} within {timeout:g} s: {self.tail()}"
        )

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pidfile.read_text().strip())
        return None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop dockerd by its pid file (SIGTERM, then SIGKILL), then remove its run state."""
        pid = self.pid()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        _unmount_under(self.run_dir)
        _unmount_under(self.data_root)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _unmount_under(root: Path) -> None:
    """Lazily unmount whatever a killed engine left mounted under its run state (netns files,
    container rootfs), deepest first, so the folder can be removed."""
    prefix = str(root) + "/"
    with contextlib.suppress(OSError):
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def wait_exited(container, timeout: float = 60.0) -> str:
    """The container's log once it has exited (e.g. its watchdog stopped it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            return container.logs().decode(errors="replace")
        time.sleep(0.5)
    raise AssertionError(f"{container.name} still {container.status} after {timeout:g} s")


def data_left(container) -> list[str]:
    """What is left in a restore container's data volume, read on the engine's host."""
    [mount] = [m for m in container.attrs["Mounts"] if m["Destination"].endswith("/data")]
    return os.listdir(mount["Source"])
