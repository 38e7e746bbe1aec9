"""The run queue of the local instance (the repository's dagster.yaml, which `make ui` copies into
the demo's DAGSTER_HOME): a backfill through the QueuedRunCoordinator starts one verify run per
restore host at a time, as deploy/dagster.yaml does in production.

The backfill daemon's and the queued run coordinator daemon's own iterations run in process
against a real SQLite instance built from the file; only the run launcher is the test's (it marks a
launched run STARTED and the test finishes it), so no S3 or Postgres is needed."""

from __future__ import annotations

import logging
import time
from collections import Counter
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

from busflow_verify.defs.jobs import RESTORE_HOST_TAG, backup_verify_job

ROOT = Path(__file__).resolve().parents[2]
LOCAL_YAML = ROOT / "dagster.yaml"
DEPLOY_YAML = ROOT / "deploy" / "dagster.yaml"
LOCATION = "busflow_verify"
DATES = ["2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"]
OTHER_DATES = ["2026-11-16", "2026-11-17"]
OTHER_HOST = "server:restore-b.example:5432"


class ControlledRunLauncher(RunLauncher, ConfigurableClass):
    """Marks a launched run STARTED (as a run worker would on start) and records, at that moment,
    the other runs in progress on its restore host. The test finishes the runs."""

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
        host = run.tags[RESTORE_HOST_TAG]
        same_host = [
            r.run_id
            for r in self._instance.get_runs(
                dg.RunsFilter(statuses=ACTIVE_RUN_STATUSES, tags={RESTORE_HOST_TAG: host})
            )
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
    """One rule: the local template's run_coordinator block is the production file's."""
    local, production = (
        yaml.safe_load(p.read_text())["run_coordinator"] for p in (LOCAL_YAML, DEPLOY_YAML)
    )
    assert local == production
    assert local["class"] == "QueuedRunCoordinator"
    assert local["config"]["tag_concurrency_limits"] == [
        {"key": RESTORE_HOST_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]


def test_a_backfill_runs_one_verify_at_a_time_per_restore_host(tmp_path, monkeypatch):
    """Two backfills from the job's page, as the UI launches them: five dates on this deployment's
    restore host (the job's tag) and two on another host (a tag set on the backfill). Each queue
    tick starts at most one run per host, the other host is not held up behind the first, and every
    run and both backfills finish."""
    # the backfill resolves the job's run config (the S3 resources' EnvVars); nothing connects
    monkeypatch.setenv("BACKUP_PRIMARY_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("BACKUP_BUCKET", "busflow-backups")
    host = backup_verify_job.tags[RESTORE_HOST_TAG]
    assert host != OTHER_HOST
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
        location = workspace.create_request_context().get_code_location(LOCATION)
        [repo] = location.get_repositories().values()
        partition_set = repo.get_partition_set(f"{backup_verify_job.name}_partition_set")
        assets = sorted(backup_verify_job.selection.resolve(repo.asset_graph))
        backfill_ids = []
        for dates, tags in ((DATES, None), (OTHER_DATES, {RESTORE_HOST_TAG: OTHER_HOST})):
            backfill_id = make_new_backfill_id()
            instance.add_backfill(
                PartitionBackfill(
                    backfill_id=backfill_id,
                    status=BulkActionStatus.REQUESTED,
                    from_failure=False,
                    tags=tags,
                    backfill_timestamp=time.time(),
                    partition_set_origin=partition_set.get_remote_origin(),
                    partition_names=dates,
                    asset_selection=assets,
                )
            )
            backfill_ids.append(backfill_id)

        list(execute_backfill_iteration(workspace, logger))  # the backfill daemon's tick
        runs = instance.get_runs()
        assert len(runs) == len(DATES) + len(OTHER_DATES)
        assert {r.status for r in runs} == {dg.DagsterRunStatus.QUEUED}  # submitted, not run
        assert sorted(
            (r.tags[RESTORE_HOST_TAG], r.tags["dagster/partition"]) for r in runs
        ) == sorted([(host, d) for d in DATES] + [(OTHER_HOST, d) for d in OTHER_DATES])
        assert {r.job_name for r in runs} == {backup_verify_job.name}

        ticks = 0
        per_tick: list[Counter] = []
        while any(r.status not in FINISHED_STATUSES for r in instance.get_runs()):
            ticks += 1
            assert ticks <= 2 * len(DATES), "the queue stopped making progress"
            list(queue.run_iteration(workspace))  # the run queue daemon's tick
            in_progress = instance.get_runs(dg.RunsFilter(statuses=ACTIVE_RUN_STATUSES))
            per_host = Counter(r.tags[RESTORE_HOST_TAG] for r in in_progress)
            per_tick.append(per_host)
            assert max(per_host.values(), default=0) <= 1, per_host
            for run in in_progress:
                launcher.finish(run)
            list(execute_backfill_iteration(workspace, logger))

        assert launcher.overlaps == []
        assert len(launcher.launched) == len(set(launcher.launched)) == len(runs)
        # the other host's runs went alongside the first host's, not behind them
        assert per_tick[: len(OTHER_DATES)] == [Counter({host: 1, OTHER_HOST: 1})] * len(
            OTHER_DATES
        )
        assert per_tick[len(OTHER_DATES) :] == [Counter({host: 1})] * (
            len(DATES) - len(OTHER_DATES)
        )
        assert {r.status for r in instance.get_runs()} == {dg.DagsterRunStatus.SUCCESS}
        for backfill_id in backfill_ids:
            assert instance.get_backfill(backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
