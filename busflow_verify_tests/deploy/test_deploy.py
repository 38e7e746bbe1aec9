"""The production deployment: deploy/dagster.yaml against a real PostgreSQL (runs, materializations
and check evaluations read back from it), and the Docker files checked against their sources."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from psycopg import sql

from busflow_verify.core.postgres.cluster import THROWAWAY_SETTINGS, DisposablePostgres
from busflow_verify.defs.jobs import RESTORE_HOST_TAG
from busflow_verify.defs.run_history import EXPECTED_CHECK_KEYS
from busflow_verify_tests.conftest import SESSION_CLUSTERS
from busflow_verify_tests.pgproxy import SocketProxy

ROOT = Path(__file__).resolve().parents[2]
DAGSTER_YAML = ROOT / "deploy" / "dagster.yaml"
COMPOSE = ROOT / "docker" / "compose.yaml"
PRODUCER_ENV = ROOT / "docker" / "backup" / "producer.env"
DAY = "2026-11-20"
ASSETS = ("dump_object", "size_check", "restored_db", "row_count_report", "orphan_report")
STORAGE_PASSWORD = "dagster-storage-secret"


@pytest.fixture(scope="module")
def dagster_pg():
    """Dagster's own PostgreSQL: a role that must give its password, its database, and a TCP
    port on loopback (as the compose service is reached by host name and port)."""
    with DisposablePostgres() as pg:
        SESSION_CLUSTERS.add(pg.root)
        with psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE dagster LOGIN PASSWORD {}").format(
                    sql.Literal(STORAGE_PASSWORD)
                )
            )
            conn.execute("CREATE DATABASE dagster OWNER dagster")
            hba = pg.data_dir / "pg_hba.conf"
            hba.write_text("local all dagster scram-sha-256\n" + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
        proxy = SocketProxy(SocketProxy.socket_of(pg))
        yield pg, proxy
        proxy.close()
        SESSION_CLUSTERS.discard(pg.root)


@pytest.fixture
def storage_env(dagster_pg, monkeypatch):
    """The DAGSTER_POSTGRES_* variables deploy/dagster.yaml reads, pointing at dagster_pg."""
    _, proxy = dagster_pg
    for name, value in {
        "HOST": "127.0.0.1",
        "PORT": str(proxy.port),
        "USER": "dagster",
        "PASSWORD": STORAGE_PASSWORD,
        "DB": "dagster",
    }.items():
        monkeypatch.setenv(f"DAGSTER_POSTGRES_{name}", value)


def production_config() -> dict:
    return yaml.safe_load(DAGSTER_YAML.read_text())


@pytest.mark.e2e
def test_production_instance_loads_with_its_docker_run_launcher(tmp_path, storage_env):
    """The whole instance is built from deploy/dagster.yaml as it is: the DockerRunLauncher is
    configured without talking to an engine (there is none here; it connects at launch)."""
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._core.scheduler import DagsterDaemonScheduler
    from dagster_docker import DockerRunLauncher
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    shutil.copy(DAGSTER_YAML, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, DockerRunLauncher)
        assert launcher.networks == ["busflow-verify"]
        assert {
            "BACKUP_SECRET_ACCESS_KEY",
            "SLACK_OPS_WEBHOOK",
            "BUSFLOW_VERIFY_CONFIG_DIR",
            "DAGSTER_POSTGRES_PASSWORD",
        } <= set(launcher.env_vars)
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.scheduler, DagsterDaemonScheduler)
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        [limit] = coordinator.get_run_queue_config().tag_concurrency_limits
        assert limit == {
            "key": RESTORE_HOST_TAG,
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        }


@pytest.mark.e2e
def test_a_partition_materialized_into_postgres_storage_reads_back(
    harness, make_dump, dagster_pg, storage_env
):
    """The production yaml with only its run_launcher section dropped (no Docker engine runs
    here; the CLI runs in-process anyway): the run, the five materializations and every check
    evaluation are read back from PostgreSQL, and nothing went to SQLite."""
    config = production_config()
    del config["run_launcher"]
    (harness.home / "dagster.yaml").write_text(yaml.safe_dump(config))
    harness.put("pg_dump_20261120_0100.dump", make_dump())
    code, verdict = harness.verify(DAY)
    assert code == 0, verdict
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(verdict["run_id"])
        assert (run.status, run.tags["dagster/partition"]) == (dg.DagsterRunStatus.SUCCESS, DAY)
        for asset in ASSETS:
            [record] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[DAY]), limit=5
            ).records
            assert record.run_id == run.run_id
        for key in EXPECTED_CHECK_KEYS:
            [record] = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
            assert (record.run_id, record.partition) == (run.run_id, DAY), key
            assert record.status == AssetCheckExecutionRecordStatus.SUCCEEDED, key
    pg, _ = dagster_pg
    with psycopg.connect(**pg.conninfo("dagster").kwargs()) as conn:
        assert conn.execute(
            "SELECT count(*) FROM runs WHERE run_id = %s", (run.run_id,)
        ).fetchone() == (1,)
        assert conn.execute(
            "SELECT count(DISTINCT asset_key) FROM event_logs WHERE run_id = %s "
            "AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (run.run_id,),
        ).fetchone() == (len(ASSETS),)
        assert conn.execute(
            "SELECT count(*) FROM asset_check_executions WHERE run_id = %s", (run.run_id,)
        ).fetchone() == (len(EXPECTED_CHECK_KEYS),)
    assert not list(harness.home.rglob("*.db"))  # no SQLite storage next to it


# -- the Docker files --------------------------------------------------------------------------
def test_restore_image_extensions_come_from_producer_env(tmp_path):
    """The restore image (and the user-code image) install what EXTENSIONS= names, through
    install-extensions.sh; no extension or its package is named in a Dockerfile."""
    extensions = re.search(r'^EXTENSIONS="([^"]+)"', PRODUCER_ENV.read_text(), re.M)[1].split(",")
    script = ROOT / "docker" / "install-extensions.sh"
    plan = subprocess.run(
        ["sh", str(script), str(PRODUCER_ENV), "--print"],
        capture_output=True,
        text=True,
        check=True,
        env={"PG_MAJOR": "17", "PATH": "/usr/bin:/bin"},
    )
    assert plan.stdout.splitlines() == [
        "package postgresql-17-pgvector",
        "package postgresql-17-cron",
        "build pgsodium 3.1.9",
        "preload pg_cron",
    ]
    assert set(extensions) == {"pgcrypto", "pgvector", "pgsodium", "pg_cron"}
    unknown = tmp_path / "producer.env"
    unknown.write_text('EXTENSIONS="pgcrypto,timescaledb"\n')
    refused = subprocess.run(
        ["sh", str(script), str(unknown), "--print"],
        capture_output=True,
        text=True,
        env={"PG_MAJOR": "17", "PATH": "/usr/bin:/bin"},
    )
    assert refused.returncode == 1 and "no recipe for extension 'timescaledb'" in refused.stderr
    for dockerfile, env_copy in (
        ("restore-target.Dockerfile", "backup/producer.env"),
        ("busflow-verify.Dockerfile", "docker/backup/producer.env"),
    ):
        text = (ROOT / "docker" / dockerfile).read_text()
        code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
        assert env_copy in code and "install-extensions.sh" in code, dockerfile
        assert not re.search(r"pgvector|pgsodium|pg_?cron|pgcrypto", code), dockerfile


def test_restore_image_runs_with_the_ephemeral_targets_throwaway_settings():
    cmd = (ROOT / "docker" / "restore-target.Dockerfile").read_text().split("CMD", 1)[1]
    for name, value in THROWAWAY_SETTINGS.items():
        if name != "listen_addresses":  # the container must listen on its network
            assert f'"{name}={value}"' in cmd, name


def test_compose_forwards_what_the_run_launcher_forwards_and_shares_its_names():
    compose = yaml.safe_load(COMPOSE.read_text())
    launcher = production_config()["run_launcher"]["config"]
    assert set(compose["x-busflow-env"]) == set(launcher["env_vars"])
    services = compose["services"]
    assert {"webserver", "daemon", "busflow-verify-code", "dagster-postgres"} <= set(services)
    assert services["minio"]["profiles"] == ["trial"]
    assert compose["networks"]["busflow-verify"]["name"] == launcher["network"]
    home_volume = launcher["container_kwargs"]["volumes"][0]
    assert home_volume.split(":")[0] == compose["volumes"]["busflow-verify-home"]["name"]
    for name in ("webserver", "daemon", "busflow-verify-code"):
        assert home_volume in services[name]["volumes"], name
        assert services[name]["environment"]["DAGSTER_POSTGRES_HOST"] == "dagster-postgres"
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["host"] == "busflow-verify-code"


def test_docker_compose_config_validates_the_file(tmp_path):
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0
    ):
        pytest.skip("no `docker compose` client here (the engine is not needed, the plugin is)")
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(tmp_path),
        "BACKUP_PRIMARY_ENDPOINT": "https://fsn1.example",
        "BACKUP_BUCKET": "b",
        "BACKUP_ACCESS_KEY_ID": "k",
        "BACKUP_SECRET_ACCESS_KEY": "s",
        "DAGSTER_POSTGRES_PASSWORD": "p",
    }
    out = subprocess.run(
        [
            "docker",
            "compose",
            "-f",
            str(COMPOSE),
            "--profile",
            "trial",
            "--profile",
            "restore-image",
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
