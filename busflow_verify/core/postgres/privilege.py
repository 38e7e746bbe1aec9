"""Least privilege for the restore (docs/security.md).

Restoring a dump runs code of the source's choosing: functions called by CHECK constraints,
index expressions, materialized views, and (since CVE-2022-1552) VACUUM/ANALYZE and index builds
run as the object's owner. So the restored database and everything in it belong to an
unprivileged role: no superuser, no CREATEDB or CREATEROLE, no membership in
pg_execute_server_program / pg_read_server_files / pg_write_server_files. It has BYPASSRLS, so
that row-level security (FORCE included) hides no rows from the counts and the sweep.

The administrative connection (the target's superuser, or the role the operator configured for
a restore server) does only what needs it: create that role and the database it owns, and create
the extensions the dump needs, only those on the allow-list (`allowed_extensions`), before the
restore. It never runs text taken from the dump: extension and schema names are parsed and
quoted by the driver.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from busflow_verify.core.postgres.cluster import ConnInfo

RESTORE_ROLE = "busflow_restore"  # in a cluster or container of our own
ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS"
PRODUCER_ENV = "docker/backup/producer.env"
RUNBOOK_EXTENSIONS = "pgcrypto,pgvector,pgsodium,pg_cron"  # the runbook's F2 step 2 line
EXTENSION_NAMES = {"pgvector": "vector"}  # package name in producer.env -> extension name
_PRODUCER_PLACES = (
    Path(__file__).resolve().parents[2] / PRODUCER_ENV,  # the checkout
    Path("/opt/busflow-verify/docker/producer.env"),
)  # the user-code image
_TRUSTED = "SELECT DISTINCT name FROM pg_catalog.pg_available_extension_versions WHERE trusted"


class ProvisionError(RuntimeError):
    """The administrative role may not do what the restore needs; the message says what to grant."""


@dataclass(frozen=True)
class RestoreDatabase:
    """The database a dump is restored into, and who may do what in it.

    `owner` is the unprivileged role every statement of the dump runs as (restore, VACUUM
    ANALYZE, counts, sweeps); `admin` reaches the same database with the administrative role,
    for the extensions only."""

    owner: ConnInfo
    admin: ConnInfo

    @property
    def dbname(self) -> str:
        return self.owner.dbname


@dataclass
class ExtensionSetup:
    """What the administrative step made before the restore, so the restore leaves it out."""

    created: dict[str, str | None] = field(default_factory=dict)  # extension -> its schema
    schemas: list[str] = field(default_factory=list)  # schemas made to hold them


def provision(admin: ConnInfo, dbname: str, role: str) -> RestoreDatabase:
    """Create `role` (ROLE_ATTRIBUTES, a random password) and `dbname` owned by it, replacing
    any database and role of those names left by an earlier run."""
    password = secrets.token_urlsafe(24)
    with psycopg.connect(**admin.kwargs(), autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )
        _drop_role(conn, role)
        _create_role(conn, admin.user, role, password)
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dbname), sql.Identifier(role)
            )
        )
    return RestoreDatabase(
        owner=ConnInfo(admin.host, admin.port, role, dbname, password), admin=admin.on(dbname)
    )


def _create_role(conn, admin_user: str, role: str, password: str) -> None:
    try:
        conn.execute(
            sql.SQL("CREATE ROLE {} " + ROLE_ATTRIBUTES + " PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ProvisionError(
            f"the administrative role {admin_user} may not create the restore role {role} "
            f"({exc.diag.message_primary}): it needs CREATEROLE and the right to give BYPASSRLS "
            "(a superuser on PostgreSQL 15 and older; on 16 and newer a role that has BYPASSRLS "
            "itself), so that row-level security hides no rows from the counts"
        ) from None
    superuser = conn.execute(
        "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
    ).fetchone()[0]
    if not superuser:  # CREATE DATABASE ... OWNER needs membership in the owner
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))


def drop_role(admin: ConnInfo, role: str) -> None:
    """Drop a restore role made by `provision` (its database must be dropped first)."""
    with psycopg.connect(**admin.kwargs(), autocommit=True, connect_timeout=10) as conn:
        _drop_role(conn, role)


def _drop_role(conn, role: str) -> None:
    """DROP ROLE when it exists (a role without CREATEROLE may not even try a missing one)."""
    if conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s)", (role,)
    ).fetchone()[0]:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def producer_extensions(places=_PRODUCER_PLACES) -> set[str]:
    """The extension names of EXTENSIONS= in docker/backup/producer.env (the runbook's list when
    the file is not there: an installed package without its checkout)."""
    line = next(
        (p.read_text() for p in places if p.is_file()), f'EXTENSIONS="{RUNBOOK_EXTENSIONS}"'
    )
    match = re.search(r'^EXTENSIONS="?([^"\n]*)"?', line, re.M)
    names = [n.strip() for n in (match[1] if match else "").split(",") if n.strip()]
    return {EXTENSION_NAMES.get(n, n) for n in names}


def allowed_extensions(admin: ConnInfo) -> set[str]:
    """The allow-list: producer.env's extensions and those the server marks trusted (which a
    database owner could create anyway)."""
    with psycopg.connect(**admin.kwargs(), connect_timeout=10) as conn:
        trusted = {r[0] for r in conn.execute(_TRUSTED)}
    return producer_extensions() | trusted


def create_extensions(db: RestoreDatabase, wanted: dict[str, str | None]) -> ExtensionSetup:
    """CREATE EXTENSION each of `wanted` (name -> schema, None for the default) as the
    administrative role, in an empty database: a schema that does not exist yet is created first,
    owned by the restore role, and then left out of the restore. The restore role gets the rows
    of the extensions' configuration tables (pg_extension_config_dump), which dumps carry."""
    setup = ExtensionSetup()
    with psycopg.connect(**db.admin.kwargs(), autocommit=True, connect_timeout=10) as conn:
        for name, schema in wanted.items():
            schema = _fixed_schema(conn, name) or schema
            if schema and not _schema_exists(conn, schema):
                conn.execute(
                    sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                        sql.Identifier(schema), sql.Identifier(db.owner.user)
                    )
                )
                setup.schemas.append(schema)
            statement = sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name))
            if schema:
                statement += sql.SQL(" WITH SCHEMA {}").format(sql.Identifier(schema))
            conn.execute(statement)
            setup.created[name] = schema
        _grant_config_tables(conn, list(wanted), db.owner.user)
    return setup


def _fixed_schema(conn, name: str) -> str | None:
    """The schema the installed version of an extension insists on (its control file's
    `schema`, e.g. pg_cron 1.6's pg_catalog), which wins over the one the dump names: a dump of
    an older version may have had it elsewhere."""
    row = conn.execute(
        "SELECT v.schema FROM pg_catalog.pg_available_extension_versions v "
        "JOIN pg_catalog.pg_available_extensions a ON a.name = v.name "
        "AND a.default_version = v.version WHERE v.name = %s",
        (name,),
    ).fetchone()
    return row[0] if row else None


def _schema_exists(conn, schema: str) -> bool:
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s)", (schema,)
    ).fetchone()[0]


_CONFIG_RELATIONS = """
SELECT n.nspname, c.relname, c.relkind
FROM pg_catalog.pg_extension e, unnest(e.extconfig) AS cfg(oid)
JOIN pg_catalog.pg_class c ON c.oid = cfg.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE e.extname = ANY(%s)
"""


def _grant_config_tables(conn, extensions: list[str], role: str) -> None:
    for schema, name, kind in conn.execute(_CONFIG_RELATIONS, (extensions,)).fetchall():
        privileges = "USAGE, SELECT, UPDATE" if kind == "S" else "SELECT, INSERT, UPDATE, DELETE"
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
        conn.execute(
            sql.SQL("GRANT " + privileges + " ON {} TO {}").format(
                sql.Identifier(schema, name), sql.Identifier(role)
            )
        )
