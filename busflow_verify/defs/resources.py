"""Resources: the backup store (S3 API), the verify configuration, the restore target."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import boto3
import dagster as dg
import psycopg
from botocore.config import Config
from pydantic import PrivateAttr

from busflow_verify.core import config as cfg
from busflow_verify.core.postgres.cluster import ConnInfo
from busflow_verify.core.restore.restorer import default_jobs
from busflow_verify.core.store.endpoints import Endpoint
from busflow_verify.core.store.signature import load_public_keys
from busflow_verify.core.targets.base import Target
from busflow_verify.core.targets.docker import DEFAULT_IMAGE, DockerSettings, DockerTarget
from busflow_verify.core.targets.ephemeral import EarlyCluster, EphemeralTarget
from busflow_verify.core.targets.server import ServerTarget
from busflow_verify.core.targets.settings import DOCKER_ENV, SERVER_ENV
from busflow_verify.defs import environment


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
    # BUSFLOW_MANIFEST_PUBLIC_KEY: the manifest's signature is checked with these keys
    manifest_public_key: str | None = None

    def manifest_keys(self) -> list | None:
        """The public keys the manifest's signature must verify with; None when none is
        configured. A file that cannot be used raises KeyFileError naming it."""
        if not self.manifest_public_key:
            return None
        return load_public_keys(self.manifest_public_key, environment.MANIFEST_PUBLIC_KEY)

    def endpoints(self) -> list[Endpoint]:
        """Primary first, then the on-site fallback when one is configured (F5)."""
        chosen = [("primary", self.primary), ("fallback", self.fallback)]
        return [Endpoint(name, ep.endpoint_url, ep.client()) for name, ep in chosen if ep]

    def endpoint(self, name: str) -> S3Endpoint:
        return self.fallback if name == "fallback" and self.fallback else self.primary


class VerifySettings(dg.ConfigurableResource):
    """verify.yaml and soft-fk-allowlist.yaml, validated at load (BUSFLOW_VERIFY_CONFIG_DIR).

    Inside a run each file is read once, when a step first asks, and every later step of the
    run uses that reading; outside a run (a sensor's tick, the CLI) each call reads anew."""

    config_dir: str | None = None

    _in_run: bool = PrivateAttr(default=False)
    _read: dict = PrivateAttr(default_factory=dict)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._in_run = True

    def folder(self) -> Path:
        return cfg.config_dir(self.config_dir)

    def verify_config(self) -> cfg.VerifyConfig:
        return self._once("verify", cfg.load_verify_config)

    def allowlist(self) -> cfg.SoftFKAllowlist:
        return self._once("allowlist", cfg.load_allowlist)

    def _once(self, name: str, load):
        if not self._in_run:
            return load(self.folder())
        if name not in self._read:
            self._read[name] = load(self.folder())
        return self._read[name]


class RestoreSession:
    """One run's restore target and the database restored into it."""

    def __init__(self, target: Target):
        self.target = target
        self.restored: ConnInfo | None = None

    def mark_restored(self, restored: ConnInfo) -> None:
        self.restored = restored

    def connect(self) -> psycopg.Connection:
        if self.restored is None:
            raise RuntimeError(
                "no dump was restored in this run: restored_db must be materialized in the same "
                "run (the restore target lives for one run); launch the whole "
                "backup_verify_job for this partition"
            )
        return psycopg.connect(**self.restored.kwargs(), autocommit=True)


class RestoreServer(dg.Config):
    """A restore server the team keeps (`server` target): `user` is the administrative role
    (CREATEDB, CREATEROLE, the right to give BYPASSRLS; docs/security.md)."""

    host: str
    port: int = 5432
    user: str
    password: str | None = None  # a secret: an EnvVar, never shown or logged
    dbname: str = "postgres"  # the maintenance database the scratch databases are created from


class RestoreDocker(dg.Config):
    """The restore image started per run through the Docker SDK (`docker` target)."""

    image: str = DEFAULT_IMAGE
    network: str | None = None
    ready_timeout_seconds: float = 120.0


class RestoreTarget(dg.ConfigurableResource):
    """Where the dump is restored: `ephemeral` (a local disposable cluster, the default),
    `server` (a scratch database on a restore server) or `docker` (the restore image).

    Run-scoped: the target is made by the first step that needs it (an ephemeral cluster starts
    in the background as the run begins) and removed when the run ends, failed or interrupted
    (`keep_after_run` keeps an ephemeral cluster for triage; never the default). The logic lives
    in core/targets/.
    """

    kind: Literal["ephemeral", "server", "docker"] = "ephemeral"
    jobs: int = 0  # parallel jobs for data and post-data; 0 = the number of cores
    scratch_dir: str | None = None  # where the cluster and the downloaded dump go (default: TMPDIR)
    bin_dir: str | None = None  # PostgreSQL binaries (default: pg_config / newest Debian)
    keep_after_run: bool = False
    server: RestoreServer | None = None
    docker: RestoreDocker | None = None

    _session: RestoreSession | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        with self.run_session(context.log, instance=context.instance):
            yield self

    @contextmanager
    def run_session(self, log, early: EarlyCluster | None = None, instance=None):
        """The target for one run: made, prepared (an ephemeral cluster starts while the dump is
        located, or the `early` one is taken over) and closed when the run ends. `instance`
        tells the docker target which runs have ended (their left-behind containers go)."""
        self._session = RestoreSession(self._target(log, early, instance))
        self._session.target.prepare()
        try:
            yield self
        finally:
            self._session.target.close()

    def _target(self, log, early: EarlyCluster | None, instance: dg.DagsterInstance | None):
        common = {"bin_dir": self.bin_dir, "scratch_base": self.scratch_dir, "log": log}
        if self.kind == "server":
            s = self.server
            return ServerTarget(ConnInfo(s.host, s.port, s.user, s.dbname, s.password), **common)
        if self.kind == "docker":
            d = self.docker or RestoreDocker()
            return DockerTarget(
                DockerSettings(d.image, d.network, d.ready_timeout_seconds),
                run_ended=_run_ended_in(instance) if instance is not None else None,
                **common,
            )
        return EphemeralTarget(keep=self.keep_after_run, early=early, **common)

    @property
    def session(self) -> RestoreSession:
        if self._session is None:
            raise RuntimeError("the restore target is only usable inside a run")
        return self._session

    def parallel_jobs(self) -> int:
        return self.jobs or default_jobs()


def restore_target_taking_over(
    configured: RestoreTarget, early: EarlyCluster
) -> dg.ResourceDefinition:
    """The code location's restore target for one in-process run of the CLI, handed the cluster
    the CLI started before the run (an ephemeral target takes it over; the others ignore it)."""

    @dg.resource(description=RestoreTarget.__doc__)
    def restore_target(context: dg.InitResourceContext):
        with configured.run_session(context.log, early, context.instance) as target:
            yield target

    return restore_target


def _run_ended_in(instance: dg.DagsterInstance):
    """Whether a run of this instance has ended (a run it does not know has not: another
    instance's, which this one must leave alone)."""

    def run_ended(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.is_finished

    return run_ended


@contextmanager
def built_backup_store():
    """This deployment's backup store with its EnvVars resolved, outside a run (the CLI)."""
    with dg.build_resources({"backup_store": build_resources()["backup_store"]}) as built:
        yield built.backup_store


def build_resources() -> dict:
    """The resources of the code location, from the environment contract
    (docs/deploying.md: Configuration)."""
    fallback = None
    if environment.is_set("BACKUP_FALLBACK_ENDPOINT"):
        fallback = S3Endpoint(
            endpoint_url=dg.EnvVar("BACKUP_FALLBACK_ENDPOINT"),
            access_key_id=environment.env_var_or(
                "BACKUP_FALLBACK_ACCESS_KEY_ID", environment.env_var_or("BACKUP_ACCESS_KEY_ID")
            ),
            secret_access_key=environment.env_var_or(
                "BACKUP_FALLBACK_SECRET_ACCESS_KEY",
                environment.env_var_or("BACKUP_SECRET_ACCESS_KEY"),
            ),
            region=environment.env_var_or("BACKUP_REGION", "us-east-1"),
        )
    return {
        "backup_store": BackupStore(
            primary=S3Endpoint(
                endpoint_url=dg.EnvVar("BACKUP_PRIMARY_ENDPOINT"),
                access_key_id=environment.env_var_or("BACKUP_ACCESS_KEY_ID"),
                secret_access_key=environment.env_var_or("BACKUP_SECRET_ACCESS_KEY"),
                region=environment.env_var_or("BACKUP_REGION", "us-east-1"),
            ),
            fallback=fallback,
            bucket=dg.EnvVar("BACKUP_BUCKET"),
            prefix=environment.env_var_or("BACKUP_PREFIX", ""),
            manifest_public_key=environment.env_var_or(environment.MANIFEST_PUBLIC_KEY),
        ),
        "verify_settings": VerifySettings(config_dir=environment.env_var_or(cfg.CONFIG_DIR_ENV)),
        "restore_target": restore_target(),
    }


def restore_target() -> RestoreTarget:
    """The restore target from BUSFLOW_RESTORE_TARGET and its variables (docs/deploying.md:
    Restore targets)."""
    kind = environment.restore_kind()
    if kind == "server":
        env = SERVER_ENV
        return RestoreTarget(
            kind=kind,
            server=RestoreServer(
                host=dg.EnvVar(env["host"]),
                port=environment.number(env["port"], 5432, int),
                user=dg.EnvVar(env["user"]),
                password=environment.env_var_or(env["password"]),
                dbname=environment.env_var_or(env["dbname"], "postgres"),
            ),
        )
    if kind == "docker":
        env = DOCKER_ENV
        return RestoreTarget(
            kind=kind,
            docker=RestoreDocker(
                image=environment.env_var_or(env["image"], DEFAULT_IMAGE),
                network=environment.env_var_or(env["network"]),
                ready_timeout_seconds=environment.number(env["ready_timeout"], 120.0, float),
            ),
        )
    return RestoreTarget()
