"""The restore targets beyond the embedded default: `server` on a real restore server, `docker`
at the Docker SDK boundary (a fake client whose containers are real Postgres), and both through
the whole job."""

from __future__ import annotations

import logging

import psycopg
import pytest

from busflow_verify.core.config import ConfigError
from busflow_verify.core.failures import FindingError
from busflow_verify.core.restore.restorer import Restorer
from busflow_verify.core.targets import docker as docker_target_module
from busflow_verify.core.targets import settings as targets
from busflow_verify.core.targets.base import RestoreTargetError, RestoreTargetNotReady
from busflow_verify.core.targets.docker import DockerSettings, DockerTarget
from busflow_verify.core.targets.server import ServerTarget, scratch_db_name
from busflow_verify_tests.conftest import (
    RESTORE_PASSWORD,
    SERVER_ADMIN,
    expected_counts,
    restore_server_conninfo,
    use_server,
)
from busflow_verify_tests.fakedocker import FakeDockerClient

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


# -- docker (the SDK boundary) -----------------------------------------------------------------
def docker_target(client, **settings) -> DockerTarget:
    return DockerTarget(DockerSettings(**{"ready_timeout": 60.0, **settings}), client=client)


@pytest.mark.e2e
def test_docker_target_starts_the_image_restores_and_removes_the_container(
    make_dump, tmp_path, caplog
):
    client = FakeDockerClient()
    target = docker_target(client)
    with caplog.at_level(logging.INFO):
        try:
            restored = target.open(DAY, RUN_ID)
            report = Restorer(
                make_dump(), KEY, restored, target.bin_dir, target.scratch_dir(), jobs=2
            ).run()
            with psycopg.connect(**restored.owner.kwargs()) as conn:
                bookings = conn.execute("SELECT count(*) FROM commerce.bookings").fetchone()[0]
        finally:
            target.close()
    assert [s.section for s in report.sections] == ["pre-data", "data", "post-data"]
    assert bookings == expected_counts()["commerce.bookings"]
    image, run = next((c[1], c[2]) for c in client.calls if c[0] == "run")
    assert image == "busflow-verify-restore:latest" and run["detach"] is True
    assert run["ports"] == {"5432/tcp": ("127.0.0.1", None)} and "network" not in run
    assert run["environment"]["POSTGRES_DB"] == "restored"
    assert run["labels"] == {"busflow-verify.run-id": RUN_ID}
    [container] = client.containers_started
    assert container.removed_with == {"force": True, "v": True}
    password = run["environment"]["POSTGRES_PASSWORD"]
    assert len(password) >= 24 and password not in caplog.text and password not in repr(restored)
    assert restored.owner.user == "busflow_restore" and restored.owner.password not in caplog.text
    assert report.restore_role == "busflow_restore"
    assert container.name in caplog.text and "removed" in caplog.text


@pytest.mark.e2e
def test_docker_container_is_removed_when_the_restore_fails(make_dump, tmp_path):
    client = FakeDockerClient()
    target = docker_target(client)
    data = make_dump().read_bytes()
    cut = tmp_path / KEY
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FindingError) as err:
        try:
            restored = target.open(DAY, RUN_ID)
            Restorer(cut, KEY, restored, target.bin_dir, target.scratch_dir()).run()
        finally:
            target.close()
    assert err.value.finding.details["cause"] == "truncated"
    [container] = client.containers_started
    assert container.removed_with == {"force": True, "v": True}


def test_docker_container_that_exits_is_a_named_error_with_its_logs_and_is_removed():
    client = FakeDockerClient(crash=True)
    target = docker_target(client)
    with pytest.raises(
        RestoreTargetNotReady,
        match="stopped before accepting connections.*could not create directory",
    ):
        target.open(DAY, RUN_ID)
    target.close()
    assert client.containers_started[0].removed_with == {"force": True, "v": True}


@pytest.mark.e2e
def test_docker_on_a_network_is_reached_by_name_and_times_out_by_name():
    client = FakeDockerClient()
    target = docker_target(client, network="busflow-verify", ready_timeout=1.0)
    with pytest.raises(
        RestoreTargetNotReady,
        match="did not accept connections within 1 s.*BUSFLOW_RESTORE_READY_TIMEOUT",
    ):
        target.open(DAY, RUN_ID)
    target.close()
    run = client.run_kwargs()
    assert run["network"] == "busflow-verify" and "ports" not in run
    assert client.containers_started[0].removed_with == {"force": True, "v": True}


def test_docker_image_not_built_says_how_to_build_it():
    target = docker_target(FakeDockerClient(images=()))
    with pytest.raises(RestoreTargetError, match="docker build -f docker/restore-target"):
        target.open(DAY, RUN_ID)
    target.close()


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


@pytest.mark.e2e
def test_the_job_on_the_docker_target(harness, make_dump, monkeypatch):
    client = FakeDockerClient()
    monkeypatch.setattr(docker_target_module, "docker_client", lambda: client)
    monkeypatch.setenv("BUSFLOW_RESTORE_TARGET", "docker")
    harness.put(KEY, make_dump())
    code, verdict = harness.verify(DAY)
    assert (code, verdict["verified"], verdict["row_counts"]) == (0, True, expected_counts())
    assert verdict["restore"]["restore_target"] == "docker"
    [container] = client.containers_started
    assert container.removed_with == {"force": True, "v": True}
    assert client.run_kwargs()["environment"]["POSTGRES_PASSWORD"] not in harness.last_stderr
