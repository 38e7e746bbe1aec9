"""The CLI's Dagster instance: `DagsterInstance.get()`, with SQLite connections kept open.

Dagster's SQLite storages make a new engine and connection for every transaction and close it
after (NullPool). A verify run writes about 115 events, each one or two transactions, and closing
the last connection to a WAL database checkpoints it (an fsync) and removes its -wal file: about
5 ms a transaction here, most of a tiny dump's Dagster overhead (docs/performance.md). The
instance the CLI opens keeps one engine per database file for the life of the process instead.
Same files, same tables, same rows, the same commits (synchronous stays FULL): the UI and the
daemon read them with Dagster's own classes. An instance stored elsewhere (PostgreSQL, in
production) is opened as it is configured.

Several CLIs may start at once on a fresh DAGSTER_HOME: the instance's storage is created under
an exclusive lock (`$DAGSTER_HOME/.busflow-instance.lock`, `open_instance`), so the SQLite
schemas are created and stamped once.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections import OrderedDict
from contextlib import contextmanager

import dagster as dg
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine

from busflow_verify.defs import environment

DAGSTER_SQLITE = ("dagster._core.storage.sqlite_storage", "DagsterSqliteStorage")
OPEN_RUN_DATABASES = 4  # a run's own database and a few it reads; older ones are closed
INSTANCE_LOCK = ".busflow-instance.lock"
INSTANCE_LOCK_TIMEOUT_SECONDS = 300.0


def open_instance() -> dg.DagsterInstance:
    """`open_local_instance`, with its storage created and first touched under the instance
    lock: two first runs on a fresh DAGSTER_HOME would otherwise both create the SQLite tables
    and stamp alembic ("table runs already exists", "more than one head")."""
    with _instance_lock(environment.dagster_home()):
        instance = open_local_instance()
        try:
            instance.get_runs(limit=1)  # the run storage, its schema and its migrations
            instance.all_instigator_state()  # the schedule storage
        except BaseException:
            instance.dispose()
            raise
    return instance


@contextmanager
def _instance_lock(home: str, timeout: float = INSTANCE_LOCK_TIMEOUT_SECONDS):
    """An exclusive lock on `$DAGSTER_HOME/.busflow-instance.lock` (flock: released by the OS
    when the process dies, so a killed CLI never leaves it held)."""
    deadline = time.monotonic() + timeout
    with open(os.path.join(home, INSTANCE_LOCK), "a") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{INSTANCE_LOCK} in DAGSTER_HOME held for more than {timeout:.0f} s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def open_local_instance() -> dg.DagsterInstance:
    """The instance of DAGSTER_HOME, with its SQLite storage (the default) pooled."""
    home = os.path.expanduser(environment.dagster_home() or "")
    if not (os.path.isabs(home) and os.path.isdir(home)):
        return dg.DagsterInstance.get()  # Dagster's own message for a missing or bad home
    ref = InstanceRef.from_dir(home)
    data = ref.storage_data
    if data is not None and (data.module_name, data.class_name) == DAGSTER_SQLITE:
        pooled = ConfigurableClassData(__name__, PooledSqliteStorage.__name__, data.config_yaml)
        ref = ref._replace(storage_data=pooled)
    return dg.DagsterInstance.from_ref(ref)


def _engine(conn_string: str):
    return create_engine(conn_string, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})


class PooledSqliteRunStorage(SqliteRunStorage):
    """runs.db through one engine (connections pooled) instead of one per transaction."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(conn_string, inst_data)
        self._pooled = _engine(conn_string)

    @contextmanager
    def connect(self):
        with self._pooled.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self._pooled.dispose()
        super().dispose()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """The run-sharded event log through one engine per database file (the index and the last
    few runs'), made and initialized on first use as Dagster's are; Dagster's own `_db_lock`
    guards them as it guards every connection."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, object] = OrderedDict()
        super().__init__(base_dir, inst_data)  # connects already, to a new home's index

    @contextmanager
    def _connect(self, shard: str):
        with self._db_lock:
            with self._engine_for(shard).connect() as conn, conn.begin():
                yield conn

    def _engine_for(self, shard: str):
        """Under `_db_lock` (`_connect`)."""
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = _engine(self.conn_string_for_shard(shard))
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        while len(self._engines) > OPEN_RUN_DATABASES + 1:  # + the index
            oldest = next(s for s in self._engines if s != INDEX_SHARD_NAME)
            self._engines.pop(oldest).dispose()
        return engine

    def _close_all(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._close_all()  # before Dagster removes the files
        super().wipe()

    def dispose(self) -> None:
        self._close_all()
        super().dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """DagsterSqliteStorage (same base_dir, same layout) with the pooled run and event storages."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()  # what DagsterSqliteStorage.__init__ ends with

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)
