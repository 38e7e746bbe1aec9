"""The restore targets beyond the embedded default: `server` on a real restore server, alone and
through the whole job. The `docker` target runs on a real engine in `make test-deploy`
(test_docker_target.py)."""

from __future__ import annotations

import psycopg
import pytest

from busflow_verify.core.config import ConfigError
from busflow_verify.core.targets import settings as targets
from busflow_verify.core.targets.base import RestoreTargetError
from busflow_verify.core.targets.server import ServerTarget, scratch_db_name
from busflow_verify_tests.conftest import (
    RESTORE_PASSWORD,
    SERVER_ADMIN,
    expected_counts,
    restore_server_conninfo,
    use_server,
)

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"
RUN_ID = "3f2a9c1e-0000-4000-8000-000000000000"


def databases(pg) -> set[str]:
    with psycopg.connect(**pg.conninfo().kwargs()) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


# -- configuration -----------------------------------------------------------------------------
def test_target_kind_and_its_variables_are_checked():
    assert targets.target_kind({}) == "ephemeral"
    with pytest.raises(ConfigError, match="BUSFLOW_RESTORE_TARGET='podman' is not one of"):
        targets.target_kind({"BUSFLOW_RESTORE_TARGET": "podman"})
    with pytest.raises(ConfigError, match="BUSFLOW_RESTORE_SERVER_USER"):
        targets.target_kind(
            {"BUSFLOW_RESTORE_TARGET": "server", "BUSFLOW_RESTORE_SERVER_HOST": "restore-1"}
        )
    with pytest.raises(ConfigError, match="BUSFLOW_RESTORE_SERVER_PORT='54x2' is not a number"):
        targets.target_kind(
            {
                "BUSFLOW_RESTORE_TARGET": "server",
                "BUSFLOW_RESTORE_SERVER_HOST": "h",
                "BUSFLOW_RESTORE_SERVER_USER": "u",
                "BUSFLOW_RESTORE_SERVER_PORT": "54x2",
            }
        )
    assert (
        targets.restore_host(
            {
                "BUSFLOW_RESTORE_TARGET": "server",
                "BUSFLOW_RESTORE_SERVER_HOST": "restore-1",
                "BUSFLOW_RESTORE_SERVER_USER": "u",
            }
        )
        == "server:restore-1:5432"
    )
    assert scratch_db_name(DAY, RUN_ID) == "verify_20261120_3f2a9c1e"


@pytest.mark.e2e
def test_a_bad_target_is_a_usage_error_before_anything_runs(harness, monkeypatch):
    monkeypatch.setenv("BUSFLOW_RESTORE_TARGET", "podman")
    code, out = harness.verify(DAY)
    assert code == 2 and "BUSFLOW_RESTORE_TARGET='podman' is not one of" in out


# -- server --------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_server_scratch_database_is_dropped_even_with_a_connection_left_open(restore_server):
    server = ServerTarget(restore_server_conninfo(restore_server))
    target = server.open(DAY, RUN_ID)
    assert target.dbname == "verify_20261120_3f2a9c1e"
    assert target.owner.user == "verify_20261120_3f2a9c1e_owner" != SERVER_ADMIN
    assert target.dbname in databases(restore_server)
    leaked = psycopg.connect(**target.owner.kwargs())  # a failed step never closed it
    server.close()
    assert target.dbname not in databases(restore_server)
    assert target.owner.user not in roles(restore_server)
    assert leaked.closed or leaked.broken or _dead(leaked)


def _dead(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


@pytest.mark.e2e
def test_server_wrong_password_names_the_variables_never_the_password(restore_server):
    wrong = "not-the-" + RESTORE_PASSWORD
    with pytest.raises(RestoreTargetError) as err:
        ServerTarget(restore_server_conninfo(restore_server, password=wrong)).open(DAY, RUN_ID)
    message = str(err.value)
    assert "BUSFLOW_RESTORE_SERVER_PASSWORD" in message and "password authentication" in message
    assert wrong not in message
    assert wrong not in repr(restore_server_conninfo(restore_server, wrong))


def roles(pg) -> set[str]:
    with psycopg.connect(**pg.conninfo().kwargs()) as conn:
        return {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}


@pytest.mark.e2e
@pytest.mark.parametrize(
    "attributes, told",
    [
        ("CREATEDB CREATEROLE", "BYPASSRLS"),  # PostgreSQL 15: only a superuser gives BYPASSRLS
        ("NOCREATEDB", "CREATEROLE"),
    ],
)
def test_an_administrative_role_without_the_rights_is_told_what_to_grant(
    restore_server, attributes, told
):
    """The configured role administers (database, restore role); what it lacks is named, and
    nothing is left behind."""
    admin = "verify_weak_admin"
    with psycopg.connect(**restore_server.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {admin} LOGIN {attributes}")
    before = databases(restore_server), roles(restore_server)
    server = ServerTarget(restore_server_conninfo(restore_server, user=admin))
    try:
        with pytest.raises(RestoreTargetError, match=told):
            server.open(DAY, RUN_ID)
    finally:
        server.close()
        with psycopg.connect(**restore_server.conninfo().kwargs(), autocommit=True) as conn:
            conn.execute(f"DROP ROLE {admin}")
    assert (databases(restore_server), roles(restore_server) | {admin}) == (before[0], before[1])


# -- through the whole job -----------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("dump", ["good", "truncated"])
def test_the_job_on_the_server_target_drops_its_scratch_database(
    harness, make_dump, monkeypatch, restore_server, dump
):
    data = make_dump().read_bytes()
    harness.put(KEY, data if dump == "good" else data[: len(data) // 2])
    use_server(monkeypatch, restore_server)
    before = databases(restore_server)
    code, verdict = harness.verify(DAY)
    assert verdict["restore"]["restore_target"] == "server"
    if dump == "good":
        assert (code, verdict["verified"], verdict["row_counts"]) == (0, True, expected_counts())
    else:
        assert code == 1 and verdict["failures"][0]["details"]["cause"] == "truncated"
    assert verdict["restore"]["dbname"] == scratch_db_name(DAY, verdict["run_id"])
    assert databases(restore_server) == before
    assert RESTORE_PASSWORD not in harness.last_stderr + str(verdict)
