"""A disposable PostgreSQL cluster: initdb in a temp dir, started, thrown away.

The restore target of the runbook's step 3. It is tuned for a throwaway restore (no durability,
autovacuum off: the pipeline runs VACUUM ANALYZE itself) and listens only on a Unix socket in its
own directory. PostgreSQL refuses to run as root, so when we are root the server runs as the
unprivileged `postgres` OS user, in a directory that user owns.

A cluster whose owning process dies without cleaning up (SIGKILL) is stopped and removed
within seconds by its watchdog (core/postgres/watchdog.py), a small process of its own that outlives the
owner; one left behind anyway (power loss, the watchdog killed too) is found and removed by the
next cluster that starts (`sweep_stale_clusters`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from busflow_verify.core.postgres import watchdog
from busflow_verify.core.postgres.servers import describe, installed
from busflow_verify.core.proc import child_env, pid_alive, run_in_own_group, stop_and_remove

DIR_PREFIX = "busflow-verify-pg-"
SCRATCH_PREFIX = "busflow-verify-scratch-"  # a run's download space (core/targets/base.py)
OWNER_FILE = "owner.json"
ORPHAN_AGE_SECONDS = 3600

# Settings for a cluster that is thrown away after the run: nothing needs to survive a crash.
THROWAWAY_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "autovacuum": "off",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "1h",
    "maintenance_work_mem": "512MB",
    "work_mem": "64MB",
    # A parallel HNSW (pgvector) build puts its graph in a dynamic shared memory segment of
    # maintenance_work_mem bytes. POSIX segments are fallocate'd in full at once (0.5 s per GB
    # here, for a graph that may need a few MB; and more than a container's 64 MB /dev/shm
    # fails); System V segments are paged in as the graph grows (docs/performance.md).
    "dynamic_shared_memory_type": "sysv",
}
MIN_MAINTENANCE_WORK_MEM_MB = 512
MAX_MAINTENANCE_WORK_MEM_MB = 16 * 1024


def host_maintenance_work_mem(jobs: int | None = None) -> str:
    """maintenance_work_mem for a cluster on this host: half its available memory shared by
    the restore's parallel jobs (each may build one index at a time), at least 512 MB.

    Index builds are most of a large restore's time, and an HNSW (pgvector) build is several
    times slower once its graph outgrows maintenance_work_mem ("hnsw graph no longer fits"):
    measured here, 420 k vectors took 38 s with PostgreSQL's default 64 MB and 17-22 s with the
    graph in memory. A 10 GB Busflow database needs about 2.6 GB for its graph.
    """
    jobs = max(1, jobs or os.cpu_count() or 1)
    available = _available_memory_bytes()
    if available is None:
        return f"{MIN_MAINTENANCE_WORK_MEM_MB}MB"
    share = available // (2 * jobs) // (1024 * 1024)
    return f"{max(MIN_MAINTENANCE_WORK_MEM_MB, min(MAX_MAINTENANCE_WORK_MEM_MB, share))}MB"


def _available_memory_bytes() -> int | None:
    """MemAvailable, or less when this process's cgroup (a container) is limited to less."""
    try:
        with open("/proc/meminfo") as fh:
            meminfo = dict(line.split(":", 1) for line in fh)
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    return available


class ClusterStartError(RuntimeError):
    pass


def find_bin_dir(explicit: str | None = None) -> Path:
    """The PostgreSQL bin dir to use: `explicit`, else the newest installed server
    (core/postgres/servers.py: its pg_restore reads every archive the older ones read)."""
    return installed(explicit)[0].bin_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """The OS user the server runs as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ClusterStartError(
            "running as root but there is no `postgres` OS user to run the disposable server; "
            "install Debian's postgresql package (make install) or run as an unprivileged user"
        ) from exc
    return "postgres"


@dataclass
class ConnInfo:
    """How to reach a database: a socket dir or a host name as host.

    `password` is a secret (a restore server's, or a restore container's): kept out of repr and
    of command lines; libpq tools get it through `env()`.
    """

    host: str
    port: int
    user: str
    dbname: str
    password: str | None = field(default=None, repr=False)

    def kwargs(self) -> dict:
        kwargs = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname}
        return {**kwargs, "password": self.password} if self.password else kwargs

    def libpq_args(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user, "-d", self.dbname]

    def env(self) -> dict[str, str]:
        """The environment for pg_restore and psql: the allow-listed part of ours (`child_env`:
        none of the job's secrets), plus PGPASSWORD when there is one."""
        return child_env({"PGPASSWORD": self.password} if self.password else None)

    def on(self, dbname: str) -> ConnInfo:
        """The same server, another database."""
        return replace(self, dbname=dbname)


class DisposablePostgres:
    """A fresh cluster in its own temp dir. Use as a context manager; `stop()` removes it all."""

    SUPERUSER = "postgres"
    SETTINGS = THROWAWAY_SETTINGS  # server settings (bench/ starts a durable one to compare)

    def __init__(
        self,
        bin_dir: str | None = None,
        base_dir: str | None = None,
        cron_database: str = "restored",
        run_cron_jobs: bool = False,
    ):
        self.bin_dir = find_bin_dir(bin_dir)
        self.base_dir = base_dir or tempfile.gettempdir()
        self.cron_database, self.run_cron_jobs = cron_database, run_cron_jobs
        self.run_as = _server_user()
        self.root: Path | None = None
        self.port: int | None = None
        self._watchdog: subprocess.Popen | None = None
        self.settings: dict[str, str] = {}  # the server's settings, once started

    # -- paths ---------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def conninfo(self, dbname: str = "postgres") -> ConnInfo:
        return ConnInfo(host=str(self.root), port=self.port, user=self.SUPERUSER, dbname=dbname)

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def major_version(self) -> int:
        out = subprocess.run(
            [self.tool("pg_ctl"), "--version"], capture_output=True, text=True, env=child_env()
        )
        return int(out.stdout.split()[-1].split(".")[0])

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> DisposablePostgres:
        sweep_stale_clusters(self.base_dir)
        self.root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=self.base_dir))
        (self.root / OWNER_FILE).write_text(json.dumps({"pid": os.getpid()}))
        try:
            if self.run_as:
                shutil.chown(self.root, user=self.run_as)
            # before initdb: a start killed half-way is cleaned up too
            self._watchdog = watchdog.spawn(self.root, self.bin_dir, self.run_as)
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def _as_server_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else argv

    def _run(self, argv: list[str], what: str) -> None:
        returncode, stderr = run_in_own_group(self._as_server_user(argv))
        if returncode != 0:
            raise ClusterStartError(f"{what} failed ({returncode}): {stderr.strip()[-2000:]}")

    def _initdb(self) -> None:
        self._run(
            [
                self.tool("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ],
            "initdb",
        )

    def _start_server(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = free_port()
            settings = {**self.SETTINGS, **self._sized_settings(), **self._cron_settings()}
            self.settings = settings
            opts = " ".join(f"-c {k}={v}" for k, v in settings.items())
            opts += f" -p {self.port} -k {self.root}"
            try:
                self._run(
                    [
                        self.tool("pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-l",
                        str(self.log_file),
                        "-o",
                        opts,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ],
                    "pg_ctl start",
                )
                return
            except ClusterStartError:
                if attempt == attempts - 1:
                    log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
                    raise ClusterStartError(f"disposable Postgres did not start: {log}") from None
                time.sleep(0.2)

    def _sized_settings(self) -> dict[str, str]:
        """The throwaway cluster's maintenance_work_mem, sized to this host's memory."""
        if self.SETTINGS is not THROWAWAY_SETTINGS:
            return {}  # bench/'s comparison clusters keep their own settings
        return {"maintenance_work_mem": host_maintenance_work_mem()}

    def _cron_settings(self) -> dict[str, str]:
        """pg_cron, where this server has it: preloaded (a dump that creates it restores only
        then), in the one database it may live in, and, unless asked, never launching a job, from
        the first second: restored scrub jobs must not run against the copy. Jobs connect over
        the cluster's socket (there is no TCP listener)."""
        server = describe(str(self.bin_dir))
        if server is None or not server.has_library("pg_cron"):
            return {}
        if not (server.cron_can_hold_jobs or self.run_cron_jobs):
            return {}  # an old pg_cron would run a restored job: a restore cluster goes without
        settings = {
            "shared_preload_libraries": "pg_cron",
            "cron.database_name": self.cron_database,
            "cron.host": str(self.root),
        }
        if server.cron_can_hold_jobs:
            settings["cron.launch_active_jobs"] = "on" if self.run_cron_jobs else "off"
        return settings

    def stop(self) -> None:
        """Stop the server (immediate: nothing in it is worth a clean shutdown) and remove it."""
        if self.root is None:
            return
        stop_and_remove(self.root, self.bin_dir, self.run_as)
        self.root = None
        watchdog.end(getattr(self, "_watchdog", None))  # it would exit by itself: reap it now
        self._watchdog = None

    def __enter__(self) -> DisposablePostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def sweep_stale_clusters(base_dir: str) -> list[str]:
    """Remove clusters left behind by a process that no longer exists. Returns what was removed."""
    removed = []
    roots = [*Path(base_dir).glob(DIR_PREFIX + "*"), *Path(base_dir).glob(SCRATCH_PREFIX + "*")]
    for root in roots:
        try:
            owner = json.loads((root / OWNER_FILE).read_text())["pid"]
        except (OSError, ValueError, KeyError):
            if _untouched_for(root, ORPHAN_AGE_SECONDS):  # a start killed before it was owned
                shutil.rmtree(root, ignore_errors=True)
                removed.append(str(root))
            continue
        if owner == os.getpid() or pid_alive(owner):
            continue
        stop_and_remove(root, find_bin_dir(), _server_user())
        removed.append(str(root))
    return removed


def _untouched_for(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return False
