"""The code location as Dagster loads it: lineage, partitioned checks, in-process job."""

import dagster as dg

from busflow_verify.definitions import build_defs
from busflow_verify.defs.checks import EXPECTED_CHECK_KEYS
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.run_history import JOB_NAME

CHAIN = ["dump_object", "size_check", "restored_db", "row_count_report", "orphan_report"]


def test_definitions_load_and_lineage_is_the_runbook_order():
    defs = build_defs()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for upstream, downstream in zip(CHAIN, CHAIN[1:]):
        parents = graph.get(dg.AssetKey(downstream)).parent_keys
        assert dg.AssetKey(upstream) in parents, (upstream, downstream)


def test_every_check_is_partitioned_like_its_asset_and_carries_the_runbook():
    defs = build_defs()
    graph = defs.resolve_asset_graph()
    assert set(graph.asset_check_keys) == set(EXPECTED_CHECK_KEYS)
    for key in EXPECTED_CHECK_KEYS:
        node = graph.get(key)
        assert node.partitions_def == nightly_dump_partitions
        assert graph.get(key.asset_key).partitions_def == nightly_dump_partitions
        assert {
            "runbook_code",
            "runbook_name",
            "severity",
            "escalate_to",
            "runbook_section",
        } <= set(node.metadata)
    orphan = graph.get(
        dg.AssetCheckKey(dg.AssetKey("orphan_report"), "soft_fk_orphans_within_allowlist")
    )
    assert orphan.metadata["runbook_code"] == "F3"
    assert orphan.metadata["escalate_to"] == "@data-oncall, @security-oncall"
    assert graph.get(dg.AssetCheckKey(dg.AssetKey("restored_db"), "restore_succeeded")).blocking
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == dg.AssetKey("orphan_report"))
    assert spec.partitions_def == nightly_dump_partitions


def test_the_job_runs_in_one_process():
    job = build_defs().resolve_job_def(JOB_NAME)
    assert job.executor_def.name == dg.in_process_executor.name


def test_the_0300_utc_tick_verifies_that_days_dump():
    import datetime as dt

    defs = build_defs()
    schedule = defs.get_schedule_def("backup_verify_daily_0300_utc")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.execution_timezone == "UTC"
    tick = dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.timezone.utc)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-25"
    assert request.job_name == JOB_NAME
