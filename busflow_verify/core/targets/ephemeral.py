"""The `ephemeral` restore target (the default): a fresh local cluster for the run
(core/postgres/cluster.py), started in the background as the run begins and removed after it.

The CLI may start that cluster before it even imports Dagster (`EarlyCluster`): initdb and the
server's start then run beside the imports and the run's creation instead of after them. The run's
target is handed the early cluster explicitly and takes it over when it asks for the same
binaries and scratch base.
"""

from __future__ import annotations

import contextlib
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from busflow_verify.core.diskspace import SpaceNeed
from busflow_verify.core.postgres.cluster import DisposablePostgres, find_bin_dir
from busflow_verify.core.postgres.privilege import RESTORE_ROLE, RestoreDatabase, provision
from busflow_verify.core.postgres.servers import Choice, choose, installed
from busflow_verify.core.targets.base import RESTORED_DB, Target


class EphemeralTarget(Target):
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
        early: EarlyCluster | None = None,
    ):
        super().__init__(bin_dir, scratch_base, log)
        self.explicit_bin_dir = bin_dir
        self.keep = keep
        self.early = early  # a cluster the CLI started before the run, to take over
        self.cluster: DisposablePostgres | None = None
        self._database: RestoreDatabase | None = None  # provisioned in it as it started
        self._starting: Future | None = None

    def prepare(self) -> None:
        """Start the cluster and provision its database in the background: initdb, start,
        CREATE ROLE and CREATE DATABASE take about 1.1 s, which then pass while the dump is
        located and size-guarded rather than before its restore (docs/performance.md); the
        CLI's cluster, started before the run (`EarlyCluster`), is taken over instead when it
        was made with the same binaries and scratch base. `_started` waits for it and raises
        what it raised."""
        if self._starting is None:
            taken = self.early.take(self.bin_dir, self._scratch_base) if self.early else None
            self._starting = taken or _in_background(self._start)

    def _start(self) -> tuple[DisposablePostgres, RestoreDatabase]:
        return start_cluster(self.bin_dir, self._scratch_base)

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
        """The installed server for this dump (core/postgres/servers.py): the newest that reads it and
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


class EarlyCluster:
    """The ephemeral target's cluster, started before the run that will restore into it exists.

    The CLI starts it before it imports Dagster (`start`), hands it to the run's target
    (EphemeralTarget's `early`), which takes it over (`take`) when it asks for the same
    binaries and scratch base, and discards it after the run (`discard`: removed if no run took
    it). A cluster that did not start is no error here: the run's own start reports it as it
    would have.
    """

    def __init__(self, bin_dir: Path, scratch_base: str | None, starting: Future):
        self.bin_dir, self.scratch_base = bin_dir, scratch_base
        self._starting: Future | None = starting

    @classmethod
    def start(cls, scratch_base: str | None = None) -> EarlyCluster | None:
        """Start the cluster in the background; None when no server is installed (the run's
        target names that)."""
        try:
            bin_dir = find_bin_dir()
        except Exception:
            return None
        return cls(
            bin_dir, scratch_base, _in_background(lambda: start_cluster(bin_dir, scratch_base))
        )

    def take(self, bin_dir: Path, scratch_base: str | None) -> Future | None:
        """The cluster's start, for a target of the same binaries and scratch base; once."""
        if self._starting is None or (bin_dir, scratch_base) != (self.bin_dir, self.scratch_base):
            return None
        starting, self._starting = self._starting, None
        return starting

    def discard(self) -> None:
        """Stop and remove the cluster if no target took it."""
        starting, self._starting = self._starting, None
        if starting is not None:
            with contextlib.suppress(Exception):
                starting.result()[0].stop()


def start_cluster(
    bin_dir: Path, scratch_base: str | None
) -> tuple[DisposablePostgres, RestoreDatabase]:
    """A started cluster with the restore database and its role made in it."""
    cluster = DisposablePostgres(bin_dir=str(bin_dir), base_dir=scratch_base).start()
    try:
        return cluster, provision(cluster.conninfo(), RESTORED_DB, RESTORE_ROLE)
    except BaseException:
        cluster.stop()
        raise


def _in_background(start) -> Future:
    pool = ThreadPoolExecutor(1, thread_name_prefix="disposable-postgres")
    try:
        return pool.submit(start)
    finally:
        pool.shutdown(wait=False)
