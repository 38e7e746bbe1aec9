"""Resources: the backup store (S3 API), the verify configuration, the disposable restore target."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import boto3
import dagster as dg
import psycopg
from botocore.config import Config
from psycopg import sql
from pydantic import PrivateAttr

from busflow_verify.core import config as cfg
from busflow_verify.core.pgcluster import ConnInfo, DisposablePostgres
from busflow_verify.core.restore import default_jobs
from busflow_verify.core.store import Endpoint


class S3Endpoint(dg.ConfigurableResource):
    """One S3-compatible endpoint (Hetzner Object Storage, or the on-site MinIO mirror).

    A boto3 client built here rather than through dagster-aws's S3Resource because MinIO and
    rclone need path-style addressing and the verify job needs short connect timeouts, neither of
    which S3Resource exposes.
    """

    endpoint_url: str
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str = "us-east-1"
    connect_timeout_seconds: float = 5.0
    max_attempts: int = 3

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=self.connect_timeout_seconds,
                read_timeout=60,
                retries={"max_attempts": self.max_attempts, "mode": "standard"},
            ),
        )


class BackupStore(dg.ConfigurableResource):
    """Where the nightly dumps live: bucket and key prefix on the primary (offsite) endpoint."""

    primary: S3Endpoint
    fallback: S3Endpoint | None = None
    bucket: str
    prefix: str = ""

    def endpoints(self) -> list[Endpoint]:
        """Primary first, then the on-site fallback when one is configured (F5)."""
        chosen = [("primary", self.primary), ("fallback", self.fallback)]
        return [Endpoint(name, ep.endpoint_url, ep.client()) for name, ep in chosen if ep]

    def endpoint(self, name: str) -> S3Endpoint:
        return self.fallback if name == "fallback" and self.fallback else self.primary


class VerifySettings(dg.ConfigurableResource):
    """verify.yaml and soft-fk-allowlist.yaml, validated at load (BUSFLOW_VERIFY_CONFIG_DIR)."""

    config_dir: str | None = None

    def folder(self) -> Path:
        return cfg.config_dir(self.config_dir)

    def verify_config(self) -> cfg.VerifyConfig:
        return cfg.load_verify_config(self.folder())

    def allowlist(self) -> cfg.SoftFKAllowlist:
        return cfg.load_allowlist(self.folder())


class RestoreSession:
    """What one run restored: the cluster (started on first use) and the restored database."""

    DBNAME = "restored"

    def __init__(self, bin_dir: str | None, base_dir: str | None, log):
        self._bin_dir, self._base_dir, self._log = bin_dir, base_dir, log
        self.cluster: DisposablePostgres | None = None
        self.restored: ConnInfo | None = None

    def start_cluster(self) -> DisposablePostgres:
        if self.cluster is None:
            self.cluster = DisposablePostgres(bin_dir=self._bin_dir, base_dir=self._base_dir).start()
            self._log.info(f"disposable Postgres {self.cluster.major_version()} started in "
                           f"{self.cluster.root} (port {self.cluster.port})")
        return self.cluster

    def create_database(self) -> ConnInfo:
        cluster = self.start_cluster()
        with psycopg.connect(**cluster.conninfo().kwargs(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.DBNAME)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.DBNAME)))
        return cluster.conninfo(self.DBNAME)

    def mark_restored(self, target: ConnInfo) -> None:
        self.restored = target

    def connect(self) -> psycopg.Connection:
        if self.restored is None:
            raise RuntimeError(
                "no dump was restored in this run: restored_db must be materialized in the same "
                "run (the disposable Postgres lives for one run); launch the whole "
                "backup_verify_job for this partition"
            )
        return psycopg.connect(**self.restored.kwargs(), autocommit=True)

    def close(self, keep: bool) -> None:
        if self.cluster is None:
            return
        if keep:
            self._log.warning(
                f"keep_after_run is set: the disposable Postgres stays at {self.cluster.root} "
                f"(psql -h {self.cluster.root} -p {self.cluster.port} -U postgres {self.DBNAME}); "
                f"remove it with: {self.cluster.tool('pg_ctl')} -D {self.cluster.data_dir} stop "
                f"&& rm -rf {self.cluster.root}"
            )
            return
        self.cluster.stop()
        self._log.info("disposable Postgres stopped and removed")


class EphemeralRestoreTarget(dg.ConfigurableResource):
    """The embedded default restore target: a fresh local cluster that lives for one run.

    Started lazily by the first step that needs it and removed when the run ends, failed or
    interrupted (`keep_after_run` retains it for triage; never the default).
    """

    jobs: int = 0  # parallel jobs for data and post-data; 0 = the number of cores
    scratch_dir: str | None = None  # where the cluster and the downloaded dump go (default: TMPDIR)
    bin_dir: str | None = None  # PostgreSQL server binaries (default: pg_config / newest Debian)
    keep_after_run: bool = False

    _session: RestoreSession | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        self._session = RestoreSession(self.bin_dir, self.scratch_dir, context.log)
        try:
            yield self
        finally:
            self._session.close(keep=self.keep_after_run)

    @property
    def session(self) -> RestoreSession:
        if self._session is None:
            raise RuntimeError("the restore target is only usable inside a run")
        return self._session

    def parallel_jobs(self) -> int:
        return self.jobs or default_jobs()


def _env(name: str, default=None):
    """An EnvVar when the variable is set (its value is resolved at run time and never shown in
    the UI), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources() -> dict:
    """The resources of the code location, from the environment contract in the design notes."""
    fallback = None
    if os.environ.get("BACKUP_FALLBACK_ENDPOINT"):
        fallback = S3Endpoint(
            endpoint_url=dg.EnvVar("BACKUP_FALLBACK_ENDPOINT"),
            access_key_id=_env("BACKUP_FALLBACK_ACCESS_KEY_ID", _env("BACKUP_ACCESS_KEY_ID")),
            secret_access_key=_env("BACKUP_FALLBACK_SECRET_ACCESS_KEY",
                                   _env("BACKUP_SECRET_ACCESS_KEY")),
            region=_env("BACKUP_REGION", "us-east-1"),
        )
    return {
        "backup_store": BackupStore(
            primary=S3Endpoint(
                endpoint_url=dg.EnvVar("BACKUP_PRIMARY_ENDPOINT"),
                access_key_id=_env("BACKUP_ACCESS_KEY_ID"),
                secret_access_key=_env("BACKUP_SECRET_ACCESS_KEY"),
                region=_env("BACKUP_REGION", "us-east-1"),
            ),
            fallback=fallback,
            bucket=dg.EnvVar("BACKUP_BUCKET"),
            prefix=_env("BACKUP_PREFIX", ""),
        ),
        "verify_settings": VerifySettings(config_dir=_env(cfg.CONFIG_DIR_ENV)),
        "restore_target": EphemeralRestoreTarget(),
    }
