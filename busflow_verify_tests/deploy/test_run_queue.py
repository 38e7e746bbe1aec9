"""The run queue of the local instance (the repository's dagster.yaml, which `make ui` copies into
the demo's DAGSTER_HOME): backfills through the QueuedRunCoordinator start one verify run per
restore host at a time, as deploy/dagster.yaml does in production: the job's runs by their
restore-host tag, the asset catalog's (no job tag) by restored_db's concurrency pool.

The backfill daemon's and the queued run coordinator daemon's own iterations run in process
against a real SQLite instance built from the file; only the run launcher is the test's (it marks a
launched run STARTED and the test finishes it), so no S3 or Postgres is needed."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES, FINISHED_STATUSES
from dagster._core.test_utils import (
    InProcessTestWorkspaceLoadTarget,
    create_test_daemon_workspace_context,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.utils import make_new_backfill_id
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._serdes import ConfigurableClass

from busflow_verify.defs.jobs import (
    RESTORE_HOST_TAG,
    RESTORE_POOL,
    backup_verify_job,
    hold_restore_pool,
)

ROOT = Path(__file__).resolve().parents[2]
LOCAL_YAML = ROOT / "dagster.yaml"
DEPLOY_YAML = ROOT / "deploy" / "dagster.yaml"
LOCATION = "busflow_verify"
DATES = ["2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"]
CATALOG_DATES = ["2026-11-14", "2026-11-15"]


class ControlledRunLauncher(RunLauncher, ConfigurableClass):
    """Marks a launched run STARTED (as a run worker would on start) and records, at that moment,
    the other runs in progress (all of them restore on the one host). The test finishes the
    runs."""

    def __init__(self, inst_data=None):
        self._inst_data = inst_data
        self.launched: list[str] = []
        self.overlaps: list[tuple[str, list[str]]] = []
        super().__init__()

    @property
    def inst_data(self):
        return self._inst_data

    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        same_host = [  # every run here restores on the one host (the job's or the catalog's)
            r.run_id
            for r in self._instance.get_runs(dg.RunsFilter(statuses=ACTIVE_RUN_STATUSES))
            if r.run_id != run.run_id
        ]
        if same_host:
            self.overlaps.append((run.run_id, same_host))
        self.launched.append(run.run_id)
        self._instance.report_dagster_event(
            dg.DagsterEvent(
                event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name
            ),
            run_id=run.run_id,
        )

    def terminate(self, run_id):
        raise NotImplementedError

    def finish(self, run: dg.DagsterRun) -> None:
        self._instance.report_dagster_event(
            dg.DagsterEvent(
                event_type_value=dg.DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name
            ),
            run_id=run.run_id,
        )


def local_instance_home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is the repository's, word for word, plus the test's run
    launcher (the repository's file names none)."""
    text = LOCAL_YAML.read_text()
    assert "run_launcher" not in yaml.safe_load(text)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        text
        + "\n"
        + yaml.safe_dump(
            {"run_launcher": {"module": __name__, "class": ControlledRunLauncher.__name__}}
        )
    )
    return home


def test_local_and_production_instances_share_one_run_queue():
    """One rule: the local template's run_coordinator and concurrency blocks are the production
    file's."""
    local, production = (yaml.safe_load(p.read_text()) for p in (LOCAL_YAML, DEPLOY_YAML))
    for block in ("run_coordinator", "concurrency"):
        assert local[block] == production[block], block
    assert local["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert local["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": RESTORE_HOST_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    assert local["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}
    assert RESTORE_POOL == f"{RESTORE_HOST_TAG}={backup_verify_job.tags[RESTORE_HOST_TAG]}"


def test_a_backfill_runs_one_verify_at_a_time_per_restore_host(tmp_path, monkeypatch):
    """Two backfills, as the UI launches them: five dates from the job's page and two from the
    asset catalog (runs of the implicit asset job, without the job's tag). Each queue tick starts
    at most one run that restores, and every run and both backfills finish."""
    # the backfill resolves the job's run config (the S3 resources' EnvVars); nothing connects
    monkeypatch.setenv("BACKUP_PRIMARY_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("BACKUP_BUCKET", "busflow-backups")
    logger = logging.getLogger("busflow_verify_tests.run_queue")
    home = local_instance_home(tmp_path)
    with (
        dg.DagsterInstance.from_config(str(home)) as instance,
        create_test_daemon_workspace_context(
            InProcessTestWorkspaceLoadTarget(
                InProcessCodeLocationOrigin(
                    LoadableTargetOrigin(
                        module_name="busflow_verify.definitions",
                        attribute="defs",
                        working_directory=str(ROOT),
                    ),
                    location_name=LOCATION,
                )
            ),
            instance,
        ) as workspace,
        QueuedRunCoordinatorDaemon(interval_seconds=1) as queue,
    ):
        launcher = instance.run_launcher
        assert isinstance(launcher, ControlledRunLauncher)
        hold_restore_pool(instance)  # as the daemon's start and `make ui` do
        backfill_ids = add_backfills(instance, workspace)
        list(execute_backfill_iteration(workspace, logger))  # the backfill daemon's tick
        runs = instance.get_runs()
        assert len(runs) == len(DATES) + len(CATALOG_DATES)
        assert {r.status for r in runs} == {dg.DagsterRunStatus.QUEUED}  # submitted, not run
        catalog = [r for r in runs if r.job_name != backup_verify_job.name]
        assert sorted(r.tags["dagster/partition"] for r in catalog) == CATALOG_DATES
        assert all(RESTORE_HOST_TAG not in r.tags for r in catalog)  # held by the pool alone

        ticks = 0
        while any(r.status not in FINISHED_STATUSES for r in instance.get_runs()):
            ticks += 1
            assert ticks <= 2 * len(runs), "the queue stopped making progress"
            list(queue.run_iteration(workspace))  # the run queue daemon's tick
            in_progress = instance.get_runs(dg.RunsFilter(statuses=ACTIVE_RUN_STATUSES))
            assert len(in_progress) <= 1, [(r.job_name, r.tags) for r in in_progress]
            for run in in_progress:
                launcher.finish(run)
            list(execute_backfill_iteration(workspace, logger))

        assert launcher.overlaps == []
        assert len(launcher.launched) == len(set(launcher.launched)) == len(runs)
        assert {r.status for r in instance.get_runs()} == {dg.DagsterRunStatus.SUCCESS}
        job_backfill, catalog_backfill = (instance.get_backfill(b).status for b in backfill_ids)
        assert job_backfill == BulkActionStatus.COMPLETED_SUCCESS
        # the test's launcher materializes nothing, which an asset backfill counts as failed
        assert catalog_backfill in (
            BulkActionStatus.COMPLETED_SUCCESS,
            BulkActionStatus.COMPLETED_FAILED,
        )


def add_backfills(instance, workspace) -> list[str]:
    """The job page's backfill of DATES and the asset catalog's of CATALOG_DATES."""
    location = workspace.create_request_context().get_code_location(LOCATION)
    [repo] = location.get_repositories().values()
    partition_set = repo.get_partition_set(f"{backup_verify_job.name}_partition_set")
    assets = sorted(backup_verify_job.selection.resolve(repo.asset_graph))
    job_backfill = PartitionBackfill(
        backfill_id=make_new_backfill_id(),
        status=BulkActionStatus.REQUESTED,
        from_failure=False,
        tags={},
        backfill_timestamp=time.time(),
        partition_set_origin=partition_set.get_remote_origin(),
        partition_names=DATES,
        asset_selection=assets,
    )
    catalog_backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=workspace.create_request_context().asset_graph,
        backfill_timestamp=time.time(),
        tags={},
        asset_selection=assets,
        partition_names=CATALOG_DATES,
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    for backfill in (job_backfill, catalog_backfill):
        instance.add_backfill(backfill)
    return [job_backfill.backfill_id, catalog_backfill.backfill_id]
