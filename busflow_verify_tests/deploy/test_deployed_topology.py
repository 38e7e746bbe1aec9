"""The production shape, run for real (`make test-deploy`, marker `deploy`; never part of `make
test`): a Docker engine of the harness's own, both images built from docker/ and the topology of
docker/compose.yaml brought up with docker-compose, then driven through the webserver's GraphQL
as the UI drives it. The runs start in their own containers of the run image (DockerRunLauncher),
each restore in a container of the restore image (BUSFLOW_RESTORE_TARGET=docker, compose's
default). S3 is rclone on loopback holding real dumps, #ops a loopback HTTP endpoint.

Evidence is signed by the code server (the key as PEM text in compose's environment) and checked
by `evidence verify` on this host with the public key, as an auditor would; #ops links to the UI.

The tests share one deployment and run in file order: one verify end to end; the schedule's tick,
a backfill from the job's page and one from the asset catalog, together (one verify per restore
host at a time); a run container killed mid-restore (its restore container's watchdog deletes
the restored data when the run's lease ends), then a broken dump, whose run removes the killed
run's stopped restore container.
"""

from __future__ import annotations

import calendar
import hashlib
import itertools
import json
import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml

from busflow_verify import cli
from busflow_verify.core.postgres.privilege import RESTORE_ROLE
from busflow_verify.core.store.evidence import folder
from busflow_verify.core.store.pointer import read_pointer
from busflow_verify.core.targets.docker import RUN_LABEL
from busflow_verify.defs.jobs import RESTORE_HOST_TAG
from busflow_verify.defs.run_history import verdict_for_run
from busflow_verify_tests.conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    FakeSlack,
    ed25519_keypair,
    expected_counts,
)
from busflow_verify_tests.deployed.engine import Engine, data_left, wait_exited
from busflow_verify_tests.deployed.topology import LOCATION, REPOSITORY, Topology

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
JOB = "backup_verify_job"
ASSETS = ("dump_object", "size_check", "restored_db", "row_count_report", "orphan_report")
RESTORE_IMAGE = "busflow-verify-restore:latest"
FIRST, TICK, BROKEN, KILLED = "2026-11-20", "2026-11-21", "2026-11-25", "2026-11-26"
BACKFILL, CATALOG = ["2026-11-22", "2026-11-23", "2026-11-24"], "2026-11-19"


def key_for(day: str) -> str:
    return f"pg_dump_{day.replace('-', '')}_0100.dump"


class Deployment:
    """The topology, what it reads (bucket, config) and what it posts to (#ops)."""

    def __init__(
        self, engine: Engine, topology: Topology, s3, bucket: str, slack: FakeSlack, keys: Path
    ):
        self.engine, self.topology, self.s3, self.bucket, self.slack = (
            engine,
            topology,
            s3,
            bucket,
            slack,
        )
        self.docker = engine.client()
        self.gql = topology.graphql
        self.private_key, self.public_key = keys / "evidence.pem", keys / "evidence.pub.pem"

    @property
    def ui(self) -> str:
        return self.topology.settings["BUSFLOW_UI_BASE_URL"]

    def cli_env(self, monkeypatch, **more: str) -> None:
        """This host's environment for the CLI against the deployment's bucket, and `more`."""
        for name, value in {
            "BACKUP_PRIMARY_ENDPOINT": self.s3.endpoint,
            "BACKUP_BUCKET": self.bucket,
            "BACKUP_ACCESS_KEY_ID": ACCESS_KEY,
            "BACKUP_SECRET_ACCESS_KEY": SECRET_KEY,
            **more,
        }.items():
            monkeypatch.setenv(name, value)

    def evidence_of(self, day: str, run_id: str) -> Path | None:
        """The run's evidence object in the bucket (None until the sensor has written it)."""
        found = list((self.s3.bucket_dir(self.bucket) / folder("", day)).glob(f"*-{run_id}.*"))
        return found[0] if found else None

    def put(self, day: str, data: bytes) -> None:
        folder = self.s3.bucket_dir(self.bucket)
        (folder / key_for(day)).write_bytes(data)
        self.s3.settle()

    def pointer(self) -> dict | None:
        return read_pointer(self.s3.client(), self.bucket, "")

    def instance(self, home: Path) -> dg.DagsterInstance:
        """The deployment's instance, read from this host (its storage on loopback)."""
        config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
        del config["run_launcher"]  # only the daemon launches
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        return dg.DagsterInstance.from_config(str(home))

    def restore_containers(self, run_id: str | None = None) -> list:
        label = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
        return self.docker.containers.list(all=True, filters={"label": label})


@pytest.fixture(scope="module")
def deployment(docker_engine, s3, tmp_path_factory, monkeypatch_module):
    """The topology up on the session's engine (images built by `docker_engine`), taken down
    after, failed or not (`docker-compose down -v`; the engine's teardown removes the rest)."""
    slack = FakeSlack()
    config = tmp_path_factory.mktemp("deploy-config")
    config.chmod(0o755)
    write_config(config)
    bucket = "deploy-" + secrets.token_hex(4)
    keys = tmp_path_factory.mktemp("deploy-keys")
    private, _ = ed25519_keypair(keys)
    topology = Topology(
        docker_engine,
        {
            "BACKUP_PRIMARY_ENDPOINT": s3.endpoint,
            "BACKUP_BUCKET": bucket,
            "BACKUP_ACCESS_KEY_ID": ACCESS_KEY,
            "BACKUP_SECRET_ACCESS_KEY": SECRET_KEY,
            "SLACK_OPS_WEBHOOK": slack.url,
            "BUSFLOW_CONFIG_HOST_DIR": str(config),
            # PEM text in the environment, as docs/deploying.md allows (no file to mount)
            "BUSFLOW_EVIDENCE_SIGNING_KEY": private.read_text(),
        },
    )
    ui = f"http://127.0.0.1:{topology.ports['BUSFLOW_WEBSERVER_PORT']}"
    topology.settings["BUSFLOW_UI_BASE_URL"] = ui  # #ops links to the run's page there
    for name, value in topology.settings.items():  # for the instance read from this host
        if name.startswith("DAGSTER_POSTGRES_"):
            monkeypatch_module.setenv(name, value)
    try:
        topology.up()
        yield Deployment(docker_engine, topology, s3, bucket, slack, keys)
    finally:
        topology.down()
        slack.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def write_config(folder: Path) -> None:
    """The shipped configuration with a size guard that fits the test's small dumps."""
    shipped = ROOT / "config" / "backup-verify"
    verify = yaml.safe_load((shipped / "verify.yaml").read_text())
    verify["size_guard"]["min_bytes"] = 1000
    verify.setdefault("alerts", {}).update(attempts=3, backoff_seconds=0.1, timeout_seconds=2)
    (folder / "verify.yaml").write_text(yaml.safe_dump(verify))
    shutil.copy(shipped / "soft-fk-allowlist.yaml", folder / "soft-fk-allowlist.yaml")
    for path in folder.iterdir():
        path.chmod(0o644)


# -- GraphQL: what the UI's buttons send ---------------------------------------------------------
REPO = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
BACKFILL_MUTATION = """
mutation Backfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
DRY_RUN = """
mutation DryRun($selectorData: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selectorData, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult { runRequests { runKey tags { key value } runConfigYaml } error { message } }
    }
    ... on PythonError { message }
  }
}"""


def launch(gql, day: str, job: str = JOB, tags: list | None = None) -> str:
    """The job page's "Materialize" of one partition (or the asset catalog's, job=__ASSET_JOB)."""
    selector = {**REPO, "jobName": job, "pipelineName": job}
    if job == "__ASSET_JOB":
        selector["assetSelection"] = [{"path": [a]} for a in ASSETS]
    params = {
        "selector": selector,
        "mode": "default",
        "runConfigData": {},
        "executionMetadata": {"tags": tags or [{"key": "dagster/partition", "value": day}]},
    }
    result = gql.query(LAUNCH, {"executionParams": params})["launchPipelineExecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def backfill(gql, days: list[str], *, from_catalog: bool) -> str:
    """A backfill from the job's page (its partition set) or from the asset catalog (assets)."""
    if from_catalog:
        params = {"assetSelection": [{"path": [a]} for a in ASSETS], "partitionNames": days}
    else:
        selector = {"partitionSetName": f"{JOB}_partition_set", "repositorySelector": REPO}
        params = {"selector": selector, "partitionNames": days, "fromFailure": False}
    result = gql.query(BACKFILL_MUTATION, {"backfillParams": params})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def schedule_tick(gql, timestamp: float) -> str:
    """The schedule page's "Test schedule" at `timestamp`, then "Launch" of its run request."""
    selector = {**REPO, "scheduleName": "backup_verify_daily_0300_utc"}
    tick = gql.query(DRY_RUN, {"selectorData": selector, "timestamp": timestamp})["scheduleDryRun"]
    assert tick["__typename"] == "DryRunInstigationTick", tick
    [request] = tick["evaluationResult"]["runRequests"]
    return launch(gql, "", tags=[{"key": t["key"], "value": t["value"]} for t in request["tags"]])


RUN_STATUS = (
    "query($id: ID!) { runOrError(runId: $id) { ... on Run { status tags { key value } } } }"
)
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def run_status(gql, run_id: str) -> str:
    return gql.query(RUN_STATUS, {"id": run_id})["runOrError"]["status"]


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def wait_finished(deployment: Deployment, run_ids: list[str], timeout: float = 240.0) -> dict:
    def statuses():
        found = {r: run_status(deployment.gql, r) for r in run_ids}
        return found if set(found.values()) <= FINISHED else None

    try:
        return wait_until(statuses, timeout, f"runs {run_ids} to finish", interval=2.0)
    except AssertionError:
        print(deployment.topology.logs(80))
        raise


def ephemeral_verdict(deployment: Deployment, day: str, tmp_path: Path, monkeypatch) -> dict:
    """The same dump verified by the CLI on this host with the embedded (ephemeral) target."""
    deployment.cli_env(
        monkeypatch,
        DAGSTER_HOME=str(tmp_path / "cli_home"),
        BUSFLOW_VERIFY_CONFIG_DIR=deployment.topology.settings["BUSFLOW_CONFIG_HOST_DIR"],
        BUSFLOW_RESTORE_TARGET="ephemeral",
    )
    monkeypatch.delenv("SLACK_OPS_WEBHOOK", raising=False)
    (tmp_path / "cli_home").mkdir()
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["verify", "--date", day, "--json", "--log-level", "WARNING"])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


def ops_texts(deployment: Deployment, day: str) -> list[str]:
    return [t for t in deployment.slack.texts() if day in t]


def ops_blocks_text(deployment: Deployment, day: str) -> str:
    """The Block Kit sections' text of the #ops messages about `day`."""
    posts = [p["json"] for p in deployment.slack.posts if day in p["json"].get("text", "")]
    return json.dumps([p.get("blocks") for p in posts])


SECRETS_OF_THE_JOB = {
    "BACKUP_SECRET_ACCESS_KEY",
    "BACKUP_ACCESS_KEY_ID",
    "SLACK_OPS_WEBHOOK",
    "SLACK_BOT_TOKEN",
    "BUSFLOW_EVIDENCE_SIGNING_KEY",
}

THE_STORES_KEYS = frozenset({"BACKUP_ACCESS_KEY_ID", "BACKUP_SECRET_ACCESS_KEY"})  # a run reads


def holds_no_secret_of(deployment: Deployment, env: list[str], allowed=frozenset()) -> None:
    """No variable of the job's secrets (but `allowed`) and no secret's value in `env`."""
    names = {e.split("=", 1)[0] for e in env}
    assert not names & (SECRETS_OF_THE_JOB - allowed), sorted(names)
    signing_key = deployment.private_key.read_text().strip().splitlines()[1]
    for value in env:
        assert deployment.slack.SECRET_PATH not in value
        assert signing_key not in value
        if "BACKUP_SECRET_ACCESS_KEY" not in allowed:
            assert SECRET_KEY not in value


def evidence_verify(deployment: Deployment, day: str, run_id: str, monkeypatch, capsys) -> dict:
    """`busflow-verify evidence verify --date D --run R --json` on this host, as an auditor runs
    it against the bucket with the public key only."""
    deployment.cli_env(monkeypatch, BUSFLOW_EVIDENCE_PUBLIC_KEY=str(deployment.public_key))
    monkeypatch.delenv("BUSFLOW_EVIDENCE_SIGNING_KEY", raising=False)
    capsys.readouterr()
    code = cli.main(["evidence", "verify", "--date", day, "--run", run_id, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def watch_restore_container(deployment: Deployment, run_id: str, timeout: float = 180.0):
    """The run's restore container, seen while it runs: (its name, its environment)."""

    def seen():
        found = deployment.restore_containers(run_id)
        return found[0] if found else None

    container = wait_until(seen, timeout, f"the restore container of run {run_id}", 0.5)
    return container.name, container.attrs["Config"]["Env"], container.attrs["Config"]["Image"]


def provisioned(deployment: Deployment, name: str) -> bool:
    """Has the run re-created its restore container's database for its restore role (it has
    taken its lease, and the restore is about to start)?"""
    container = deployment.docker.containers.get(name)
    query = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'restored'"
    result = container.exec_run(["psql", "-XtAq", "-d", "postgres", "-c", query])
    return result.exit_code == 0 and result.output.decode().strip() == RESTORE_ROLE


def run_records(instance: dg.DagsterInstance, run_ids: list[str]) -> list:
    return instance.get_run_records(dg.RunsFilter(run_ids=run_ids))


def assert_one_at_a_time(records) -> None:
    """No two of these runs were in progress at once (their start-to-end spans)."""
    spans = sorted((r.start_time, r.end_time, r.dagster_run.run_id) for r in records)
    assert all(s and e for s, e, _ in spans), spans
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        assert end <= start, f"runs {first} and {second} overlapped on one restore host"


# -- the scenarios ---------------------------------------------------------------------------------
def test_one_verify_end_to_end(deployment, make_dump, tmp_path, monkeypatch, capsys):
    """Launched as the job page's "Materialize": the daemon starts the run in its own container of
    the run image, the restore runs in a container of the restore image (labelled with the run,
    given no secret of the job's) and is removed after; the checks, counts and orphans are the
    ephemeral target's on the same dump. The sensor (in the code server, which alone holds the
    signing key and the webhook) writes the run's signed evidence, moves the pointer recording
    it, and posts to #ops with a link to the run's page in the UI; an auditor's `evidence
    verify` on another host accepts the evidence."""
    deployment.put(FIRST, make_dump().read_bytes())
    run_id = launch(deployment.gql, FIRST)
    name, env, image = watch_restore_container(deployment, run_id)
    assert image == RESTORE_IMAGE
    assert {"POSTGRES_PASSWORD", "PGPORT"} <= {e.split("=", 1)[0] for e in env}
    holds_no_secret_of(deployment, env)
    assert wait_finished(deployment, [run_id]) == {run_id: "SUCCESS"}
    assert deployment.restore_containers(run_id) == []  # removed with the run

    with deployment.instance(tmp_path / "home") as instance:
        run = instance.get_run_by_id(run_id)
        verdict = verdict_for_run(instance, run_id)
    container_id = run.tags["docker/container_id"]
    assert run.tags[RESTORE_HOST_TAG].startswith("docker:")
    assert verdict.verified and verdict.restore["restore_target"] == "docker"
    local = ephemeral_verdict(deployment, FIRST, tmp_path, monkeypatch)
    assert local["restore"]["restore_target"] == "ephemeral"
    assert verdict.row_counts == local["row_counts"] == expected_counts()
    assert list(verdict.orphans) == local["orphans"]
    run_container = deployment.docker.containers.get(container_id).attrs["Config"]
    assert run_container["Image"] == "busflow-verify:latest"  # kept (exited), as Docker keeps it
    # the run reads the bucket; it never posts to #ops nor signs (the sensors do)
    holds_no_secret_of(deployment, run_container["Env"], allowed=THE_STORES_KEYS)

    pointer = wait_until(deployment.pointer, 90, "the sensor to move the pointer")
    assert (pointer["partition"], pointer["key"]) == (FIRST, key_for(FIRST))
    envelope = deployment.evidence_of(FIRST, run_id)
    assert pointer["evidence"] == {
        "key": str(envelope.relative_to(deployment.s3.bucket_dir(deployment.bucket))),
        "sha256": hashlib.sha256(envelope.read_bytes()).hexdigest(),
    }
    [text] = wait_until(lambda: ops_texts(deployment, FIRST), 60, "the #ops message")
    assert "verified" in text.lower()
    page = f"{deployment.ui}/runs/{run_id}"
    assert f"<{page}|" in ops_blocks_text(deployment, FIRST)
    with urllib.request.urlopen(page, timeout=30) as answer:  # the link opens the UI
        assert answer.status == 200

    audited = evidence_verify(deployment, FIRST, run_id, monkeypatch, capsys)
    assert audited["holds"] is True and audited["run_id"] == run_id


def test_schedule_tick_and_backfills_run_one_verify_at_a_time(deployment, make_dump, tmp_path):
    """Together: the 03:00 schedule's tick (evaluated, not waited for) for its day, a backfill of
    three dates from the job's page and one from the asset catalog. Every run succeeds and no two
    ever run at once on the one restore host: the job's runs by the run queue's tag limit, the
    asset catalog's (no job tag) by restored_db's pool."""
    data = make_dump().read_bytes()
    for day in [TICK, *BACKFILL, CATALOG]:
        deployment.put(day, data)
    timestamp = calendar.timegm(time.strptime(f"{TICK} 03:00", "%Y-%m-%d %H:%M"))  # UTC
    tick_run = schedule_tick(deployment.gql, timestamp)
    job_backfill = backfill(deployment.gql, BACKFILL, from_catalog=False)
    catalog_backfill = backfill(deployment.gql, [CATALOG], from_catalog=True)

    with deployment.instance(tmp_path / "home") as instance:

        def backfill_runs():
            runs = [
                r
                for b in (job_backfill, catalog_backfill)
                for r in instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": b}))
            ]
            return runs if len(runs) == len(BACKFILL) + 1 else None

        runs = wait_until(backfill_runs, 120, "the backfill daemon to submit the runs", 2.0)
        run_ids = [tick_run, *(r.run_id for r in runs)]
        statuses = wait_finished(deployment, run_ids, timeout=400)
        assert set(statuses.values()) == {"SUCCESS"}, statuses
        records = run_records(instance, run_ids)
        tick = instance.get_run_by_id(tick_run)
        catalog = [r for r in runs if r.tags["dagster/backfill"] == catalog_backfill]
        assert_one_at_a_time(records)
    assert tick.tags["dagster/partition"] == TICK and tick.job_name == JOB
    assert sorted(r.tags["dagster/partition"] for r in runs if r.job_name == JOB) == BACKFILL
    [catalog_run] = catalog
    assert catalog_run.job_name == "__ASSET_JOB" and RESTORE_HOST_TAG not in catalog_run.tags
    assert deployment.restore_containers() == []
    newest = max([TICK, *BACKFILL])  # the pointer only moves forward, whatever the runs' order
    wait_until(lambda: (deployment.pointer() or {}).get("partition") == newest, 90, "the pointer")


def test_killed_run_leaves_no_restore_container_and_a_broken_dump_reaches_ops(
    deployment, make_dump, tmp_path, monkeypatch, capsys
):
    """A run container killed mid-restore cannot remove its restore container, but its lease
    ends with it: the container's watchdog stops the server and deletes the restored data. Run
    monitoring marks the run failed, and the next run on the engine (a broken dump's) removes the
    stopped container by its run label. The broken dump's F2 reaches #ops, the pointer stays
    where it was, and the failed run's evidence says it did not verify."""
    deployment.put(KILLED, make_dump(padding=20000).read_bytes())
    data = make_dump().read_bytes()
    deployment.put(BROKEN, data[: len(data) // 2])
    pointer_before = deployment.pointer()
    killed = launch(deployment.gql, KILLED)
    name, _, _ = watch_restore_container(deployment, killed)
    wait_until(lambda: provisioned(deployment, name), 120, "the restore database", 0.2)
    with deployment.instance(tmp_path / "home") as instance:
        run_container = instance.get_run_by_id(killed).tags["docker/container_id"]
        deployment.docker.containers.get(run_container).kill()
        [left] = deployment.restore_containers(killed)
        assert left.name == name
        log = wait_exited(left)
        assert "its run's lease (busflow-verify-lease) has been gone for" in log, log
        assert data_left(left) == []  # the restored data went with the run
        broken = launch(deployment.gql, BROKEN)
        statuses = wait_finished(deployment, [killed, broken], timeout=240)
        assert statuses == {killed: "FAILURE", broken: "FAILURE"}
        verdict = verdict_for_run(instance, broken)
    assert deployment.restore_containers() == []
    assert [f["code"] for f in verdict.failures][:1] == ["F2"]
    texts = wait_until(lambda: ops_texts(deployment, BROKEN), 90, "the broken dump's #ops message")
    assert "F2" in texts[0] and "RESTORE_FAILED" in texts[0]
    assert deployment.pointer() == pointer_before
    wait_until(lambda: deployment.evidence_of(BROKEN, broken), 60, "the broken run's evidence")
    audited = evidence_verify(deployment, BROKEN, broken, monkeypatch, capsys)
    assert audited["holds"] is True and audited["verified"] is False


def test_compose_file_alone_is_what_docker_compose_accepts(docker_engine):
    """docker/compose.yaml as a user on an engine with a bridge runs it (no override)."""
    topology = Topology(docker_engine, {"BACKUP_PRIMARY_ENDPOINT": "-", "BACKUP_BUCKET": "-"})
    out = subprocess.run(
        ["docker-compose", "-p", "busflow-verify", "-f", str(ROOT / "docker" / "compose.yaml"),
         "config"],
        env=docker_engine.env(**topology.settings),
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert str(services["webserver"]["ports"][0]).startswith("127.0.0.1:")  # loopback only
    assert all("network_mode" not in s for s in services.values())
