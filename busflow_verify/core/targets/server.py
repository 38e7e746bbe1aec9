"""The `server` restore target: a scratch database on a restore server the team keeps, created
with a unique name for the run and dropped after it, also when the run failed."""

from __future__ import annotations

import psycopg
from psycopg import sql

from busflow_verify.core.postgres.cluster import ConnInfo
from busflow_verify.core.postgres.privilege import (
    ProvisionError,
    RestoreDatabase,
    drop_role,
    provision,
)
from busflow_verify.core.postgres.servers import Choice
from busflow_verify.core.targets.base import RestoreTargetError, Target
from busflow_verify.core.targets.settings import SERVER_ENV


def scratch_db_name(partition: str, run_id: str) -> str:
    """verify_<partition>_<first 8 of the run id>: unique per run, and says whose it is."""
    return f"verify_{partition.replace('-', '')}_{run_id.replace('-', '')[:8]}".lower()


def owner_role_name(scratch_db: str) -> str:
    """The restore role of a scratch database on a restore server: unique with it."""
    return f"{scratch_db}_owner"


class ServerTarget(Target):
    """A scratch database on a restore server: created with a unique name, dropped after.

    The configured role administers: it makes the database and its restore role
    (core/postgres/privilege.py), so it needs CREATEDB, CREATEROLE and the right to give BYPASSRLS. The
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
