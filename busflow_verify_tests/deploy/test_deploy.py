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
def test_production_instance_loads_with_its_docker_run_launcher(tmp_path, storage_env, monkeypatch):
    """The whole instance is built from deploy/dagster.yaml as it is: the DockerRunLauncher is
    configured without talking to an engine (it connects at launch; make test-deploy launches)."""
    from dagster._core.instance.config import PoolGranularity
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._core.scheduler import DagsterDaemonScheduler
    from dagster_docker import DockerRunLauncher
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    monkeypatch.setenv("BUSFLOW_RUN_NETWORK", "busflow-verify")
    shutil.copy(DAGSTER_YAML, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, DockerRunLauncher)
        assert launcher.networks == ["busflow-verify"]
        assert launcher.container_kwargs == {"volumes_from": ["busflow-verify-daemon"]}
        assert {
            "BACKUP_SECRET_ACCESS_KEY",
            "BUSFLOW_VERIFY_CONFIG_DIR",
            "DAGSTER_POSTGRES_PASSWORD",
        } <= set(launcher.env_vars)
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.scheduler, DagsterDaemonScheduler)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        concurrency = instance.get_concurrency_config()
        [limit] = concurrency.run_queue_config.tag_concurrency_limits
        assert limit == {
            "key": RESTORE_HOST_TAG,
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        }
        assert concurrency.pool_config.pool_granularity == PoolGranularity.RUN
        assert concurrency.pool_config.default_pool_limit == 1


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
        ["sh", str(script), str(PRODUCER_ENV), "/opt/busflow-pg/18", "--print"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert plan.stdout.splitlines() == [
        "present pgcrypto",
        "present vector",
        "present pg_cron",
        "missing pgsodium",  # named, as the restore names it when a dump creates it (F2)
        "preload pg_cron",
    ]
    assert set(extensions) == {"pgcrypto", "pgvector", "pgsodium", "pg_cron"}
    unknown = tmp_path / "producer.env"
    unknown.write_text('EXTENSIONS="pgcrypto,timescaledb"\n')
    refused = subprocess.run(
        ["sh", str(script), str(unknown), "/opt/busflow-pg/18", "--print"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert refused.returncode == 1 and "no recipe for extension 'timescaledb'" in refused.stderr
    for dockerfile, env_copy in (
        ("restore-target.Dockerfile", "docker/backup/producer.env"),
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
    """The runs get every variable of compose's but the sensors' secrets (#ops, signing)."""
    compose = yaml.safe_load(COMPOSE.read_text())
    launcher = production_config()["run_launcher"]["config"]
    sensors_only = {"SLACK_OPS_WEBHOOK", "SLACK_BOT_TOKEN", "BUSFLOW_EVIDENCE_SIGNING_KEY"}
    assert sensors_only <= set(compose["x-busflow-env"])
    assert set(compose["x-busflow-env"]) - sensors_only == set(launcher["env_vars"])
    assert launcher["network"] == {"env": "BUSFLOW_RUN_NETWORK"}
    assert (
        compose["x-busflow-env"]["BUSFLOW_RUN_NETWORK"] == "${BUSFLOW_RUN_NETWORK:-busflow-verify}"
    )
    assert compose["networks"]["default"]["name"] == "busflow-verify"
    services = compose["services"]
    assert set(services) == {"webserver", "daemon", "busflow-verify-code", "dagster-postgres"}
    # the run containers take the daemon's mounts: the state volume, the instance, the socket
    [daemon] = launcher["container_kwargs"]["volumes_from"]
    assert services["daemon"]["container_name"] == daemon
    home = f"{compose['volumes']['busflow-verify-home']['name']}:/opt/dagster/dagster_home"
    assert any(v.endswith(":/var/run/docker.sock") for v in services["daemon"]["volumes"])
    for name in ("webserver", "daemon", "busflow-verify-code"):
        assert home in services[name]["volumes"], name
        env = services[name]["environment"]
        assert env["DAGSTER_POSTGRES_HOST"] == "${DAGSTER_POSTGRES_HOST:-dagster-postgres}"
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["host"] == {"env": "BUSFLOW_CODE_SERVER_HOST"}
