"""The CLI's instance (defs/instance.py): Dagster's SQLite files, written through kept engines,
read back the same by Dagster's own classes (the UI and the daemon)."""

from __future__ import annotations

import dagster as dg
import yaml
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from busflow_verify.defs.instance import (
    OPEN_RUN_DATABASES,
    PooledSqliteEventLogStorage,
    PooledSqliteRunStorage,
    open_local_instance,
)


@dg.asset
def tiny(context) -> int:
    context.log.info("a line of the run's own")
    return 1


@dg.asset_check(asset=tiny)
def tiny_is_one() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def _events(instance: dg.DagsterInstance, run_id: str) -> list[tuple]:
    return [
        (e.dagster_event_type, e.user_message, e.step_key, e.timestamp)
        for e in instance.all_logs(run_id)
    ]


def test_a_run_written_through_kept_engines_reads_back_the_same_in_dagsters_instance(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with open_local_instance() as pooled:
        assert isinstance(pooled.event_log_storage, PooledSqliteEventLogStorage)
        assert isinstance(pooled.run_storage, PooledSqliteRunStorage)
        result = dg.materialize([tiny, tiny_is_one], instance=pooled)
        assert result.success
        written = _events(pooled, result.run_id)
    with dg.DagsterInstance.from_config(str(tmp_path)) as plain:
        assert type(plain.event_log_storage) is SqliteEventLogStorage
        assert plain.get_run_by_id(result.run_id).is_success
        assert _events(plain, result.run_id) == written
        assert plain.get_latest_materialization_event(dg.AssetKey("tiny")).run_id == result.run_id
        check = plain.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("tiny"), "tiny_is_one")]
        )
        assert list(check.values())[0].run_id == result.run_id
    kinds = {kind for kind, *_ in written}
    assert {"ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION", "PIPELINE_SUCCESS"} <= {
        k.value for k in kinds if k
    }


def test_the_engines_kept_are_the_index_and_the_last_few_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with open_local_instance() as pooled:
        runs = [
            dg.materialize([tiny], instance=pooled).run_id for _ in range(OPEN_RUN_DATABASES + 2)
        ]
        kept = list(pooled.event_log_storage._engines)
        assert "index" in kept and len(kept) == OPEN_RUN_DATABASES + 1
        assert runs[-1] in kept and runs[0] not in kept
        # a run whose engine was closed is opened again when read
        assert _events(pooled, runs[0])[-1][0] == dg.DagsterEventType.RUN_SUCCESS
        assert runs[0] in pooled.event_log_storage._engines
    assert pooled.event_log_storage._engines == {}  # disposed with the instance


def test_an_instance_not_on_dagsters_default_sqlite_storage_is_opened_as_configured(
    tmp_path, monkeypatch
):
    runs = tmp_path / "elsewhere"
    (tmp_path / "dagster.yaml").write_text(
        yaml.safe_dump(
            {
                "run_storage": {
                    "module": "dagster._core.storage.runs",
                    "class": "SqliteRunStorage",
                    "config": {"base_dir": str(runs)},
                }
            }
        )
    )
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with open_local_instance() as instance:
        assert type(instance.run_storage).__name__ != "PooledSqliteRunStorage"
        assert dg.materialize([tiny], instance=instance).success
    assert (runs / "runs.db").exists()
