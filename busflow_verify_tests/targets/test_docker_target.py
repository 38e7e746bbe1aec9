"""The `docker` restore target on a real engine (`make test-deploy`, marker `deploy`): the
restore image built from docker/restore-target.Dockerfile, started through the Docker SDK on the
host's network (this machine's engine has no bridge), restored into and removed, whatever the run
did; and the whole job through the CLI on it. The engine makes every fault tested here itself: a
container that exits (the base image as the "restore image"), an image that was never built, a
server slower than the timeout, a refused container, a run killed without removing its container.
No stand-in Docker client is left."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from busflow_verify.core.failures import FindingError
from busflow_verify.core.postgres.cluster import free_port
from busflow_verify.core.restore.restorer import Restorer
from busflow_verify.core.targets.base import RestoreTargetError, RestoreTargetNotReady
from busflow_verify.core.targets.docker import (
    LEASE_APPLICATION,
    RUN_LABEL,
    DockerSettings,
    DockerTarget,
)
from busflow_verify_tests.conftest import expected_counts
from busflow_verify_tests.deployed.engine import data_left, wait_exited

pytestmark = pytest.mark.deploy

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"
RUN_ID = "3f2a9c1e-0000-4000-8000-000000000000"
IMAGE = "busflow-verify-restore:latest"


def docker_target(engine, run_ended=None, **settings) -> DockerTarget:
    settings = {"image": IMAGE, "network": "host", "ready_timeout": 60.0, **settings}
    return DockerTarget(DockerSettings(**settings), client=engine.client(), run_ended=run_ended)


def containers(engine, run_id: str = RUN_ID) -> list:
    return engine.client().containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})


def test_docker_target_starts_the_image_restores_and_removes_the_container(
    docker_engine, make_dump, caplog
):
    target = docker_target(docker_engine)
    with caplog.at_level(logging.INFO):
        try:
            restored = target.open(DAY, RUN_ID)
            [container] = containers(docker_engine)
            config = container.attrs["Config"]
            report = Restorer(
                make_dump(), KEY, restored, target.bin_dir, target.scratch_dir(), jobs=2
            ).run()
            with psycopg.connect(**restored.owner.kwargs()) as conn:
                bookings = conn.execute("SELECT count(*) FROM commerce.bookings").fetchone()[0]
            with psycopg.connect(**restored.admin.kwargs()) as conn:
                leases = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    [LEASE_APPLICATION],
                ).fetchone()[0]
        finally:
            target.close()
    assert [s.section for s in report.sections] == ["pre-data", "data", "post-data"]
    assert bookings == expected_counts()["commerce.bookings"]
    assert leases == 1  # the run's lease, held while the target is open
    assert config["Image"] == IMAGE and container.attrs["HostConfig"]["NetworkMode"] == "host"
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["POSTGRES_DB"] == "restored" and env["POSTGRES_LISTEN_ADDRESSES"] == "127.0.0.1"
    assert (restored.admin.host, restored.admin.port) == ("127.0.0.1", int(env["PGPORT"]))
    password = env["POSTGRES_PASSWORD"]
    assert len(password) >= 24 and password not in caplog.text and password not in repr(restored)
    assert restored.owner.user == "busflow_restore" and restored.owner.password not in caplog.text
    assert containers(docker_engine) == []  # and its volume: remove(v=True)
    assert container.name in caplog.text and "removed" in caplog.text


def test_docker_container_is_removed_when_the_restore_fails(docker_engine, make_dump, tmp_path):
    target = docker_target(docker_engine)
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
    assert containers(docker_engine) == []


def test_docker_container_that_exits_is_a_named_error_with_its_logs_and_is_removed(docker_engine):
    """The base image as the "restore image": its shell exits at once, as a broken image's
    entrypoint would."""
    docker_engine.docker("tag", "debian:bookworm-slim", "busflow-verify-exits:test")
    try:
        target = docker_target(docker_engine, image="busflow-verify-exits:test")
        with pytest.raises(RestoreTargetNotReady, match="stopped before accepting connections"):
            target.open(DAY, RUN_ID)
        target.close()
    finally:
        docker_engine.docker("rmi", "busflow-verify-exits:test", capture_output=True)
    assert containers(docker_engine) == []


def test_docker_server_slower_than_the_timeout_is_named_and_removed(docker_engine):
    target = docker_target(docker_engine, ready_timeout=0.3)
    with pytest.raises(
        RestoreTargetNotReady,
        match="did not accept connections within 0.3 s.*BUSFLOW_RESTORE_READY_TIMEOUT",
    ):
        target.open(DAY, RUN_ID)
    target.close()
    assert containers(docker_engine) == []


def test_docker_image_not_built_says_how_to_build_it(docker_engine):
    target = docker_target(docker_engine, image="busflow-verify-restore:never-built")
    try:  # named at once: the target never pulls (no registry is asked)
        with pytest.raises(RestoreTargetError, match="docker build -f docker/restore-target"):
            target.open(DAY, RUN_ID)
    finally:
        target.close()
    assert containers(docker_engine) == []


def test_docker_without_a_published_port_is_named_and_removed(docker_engine):
    """Without a network the port is published on loopback, which needs the engine's default
    bridge: this engine runs without one (--bridge=none), starts the container and publishes
    nothing. Named, with what to set, and the container is removed."""
    target = docker_target(docker_engine, network=None)
    try:
        with pytest.raises(RestoreTargetError, match="no port 5432/tcp published.*NETWORK"):
            target.open(DAY, RUN_ID)
    finally:
        target.close()
    assert containers(docker_engine) == []


def test_a_container_left_by_a_killed_run_is_removed_by_the_next_run(docker_engine):
    """A run killed outright leaves its container (nothing of it survives to remove it); the
    next run removes it when its run has ended, and leaves another instance's (unknown) alone."""
    dead, unknown = "dead0000-0000-4000-8000-000000000000", "othe0000-0000-4000-8000-000000000000"
    client = docker_engine.client()
    for run_id in (dead, unknown):
        client.containers.run(IMAGE, ["sleep", "600"], detach=True, labels={RUN_LABEL: run_id})
    target = docker_target(docker_engine, run_ended=lambda run_id: run_id == dead)
    try:
        target.open(DAY, RUN_ID)
        assert containers(docker_engine, dead) == []
        assert len(containers(docker_engine, unknown)) == 1
    finally:
        target.close()
        for container in containers(docker_engine, unknown):
            container.remove(force=True, v=True)


def test_the_job_on_the_docker_target(docker_engine, harness, make_dump, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    monkeypatch.setenv("BUSFLOW_RESTORE_TARGET", "docker")
    monkeypatch.setenv("BUSFLOW_RESTORE_DOCKER_NETWORK", "host")
    harness.put(KEY, make_dump())
    started = int(time.time())
    code, verdict = harness.verify(DAY)
    assert (code, verdict["verified"], verdict["row_counts"]) == (0, True, expected_counts())
    assert verdict["restore"]["restore_target"] == "docker"
    label = f"{RUN_LABEL}={verdict['run_id']}"
    events = docker_engine.client().events(
        since=started,
        until=int(time.time()) + 1,
        filters={"type": "container", "label": label},
        decode=True,
    )
    actions = [e["Action"] for e in events]
    assert actions[0] == "create" and "start" in actions and actions[-1] == "destroy", actions
    assert containers(docker_engine, verdict["run_id"]) == []


HOLDER = """
import json, sys, time
from busflow_verify.core.targets.docker import DockerSettings, DockerTarget
target = DockerTarget(DockerSettings(**json.loads(sys.argv[1])))
target.open("2026-11-20", sys.argv[2])
print(target.container.name, flush=True)
time.sleep(600)
"""


def test_a_run_killed_outright_leaves_no_restored_data_its_container_stops(docker_engine):
    """A real run process holding the target is SIGKILLed (nothing of it runs to remove the
    container): its lease connection ends with it, the container's watchdog stops the server and
    deletes the restored data, and the stopped container is the next run's to remove."""
    run_id = "kill0000-0000-4000-8000-000000000000"
    settings = {"image": IMAGE, "network": "host", "ready_timeout": 60.0, "lease_grace_seconds": 3}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, json.dumps(settings), run_id],
        env=docker_engine.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        name = holder.stdout.readline().strip()
        [container] = containers(docker_engine, run_id)
        assert container.name == name and container.status == "running"
        assert "PG_VERSION" in data_left(container)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        log = wait_exited(container)
        assert "its run's lease (busflow-verify-lease) has been gone for" in log, log
        assert "the restored data is deleted" in log
        assert data_left(container) == []
    finally:
        if holder.poll() is None:
            holder.kill()
        for left in containers(docker_engine, run_id):
            left.remove(force=True, v=True)


def test_a_restore_container_no_run_ever_leased_stops_on_its_own(docker_engine):
    """A run killed between starting the container and taking its lease: the watchdog waits
    BUSFLOW_LEASE_FIRST_SECONDS for a first lease, then stops the server, deleting its data."""
    run_id = "nole0000-0000-4000-8000-000000000000"
    container = docker_engine.client().containers.run(
        IMAGE,
        detach=True,
        network_mode="host",
        labels={RUN_LABEL: run_id},
        environment={
            "POSTGRES_PASSWORD": "never-used",
            "PGPORT": str(free_port()),
            "POSTGRES_LISTEN_ADDRESSES": "127.0.0.1",
            "BUSFLOW_LEASE_APPLICATION": LEASE_APPLICATION,
            "BUSFLOW_LEASE_FIRST_SECONDS": "6",
        },
    )
    try:
        log = wait_exited(container)
        assert "no run took its lease (busflow-verify-lease) within" in log, log
        assert data_left(container) == []
    finally:
        container.remove(force=True, v=True)
