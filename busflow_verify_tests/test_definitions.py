"""The code location as Dagster loads it: lineage, partitioned checks, in-process job."""

import dagster as dg

from busflow_verify.definitions import build_defs
from busflow_verify.defs.checks import EXPECTED_CHECK_KEYS
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.records import JOB_NAME

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
        assert {"runbook_code", "runbook_name", "severity", "escalate_to",
                "runbook_section"} <= set(node.metadata)
    orphan = graph.get(dg.AssetCheckKey(dg.AssetKey("orphan_report"),
                                        "soft_fk_orphans_within_allowlist"))
    assert orphan.metadata["runbook_code"] == "F3"
    assert orphan.metadata["escalate_to"] == "@data-oncall, @security-oncall"
    assert graph.get(dg.AssetCheckKey(dg.AssetKey("restored_db"), "restore_succeeded")).blocking
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == dg.AssetKey("orphan_report"))
    assert spec.partitions_def == nightly_dump_partitions


def test_the_job_runs_in_one_process():
    job = build_defs().resolve_job_def(JOB_NAME)
    assert job.executor_def.name == dg.in_process_executor.name
