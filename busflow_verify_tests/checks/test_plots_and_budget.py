"""Issue 17 points 1 and 2: the numbers Dagster plots, and the restore time judged as the RTO."""

from __future__ import annotations

import dagster as dg
import pytest

from busflow_verify.core.checks.rto_budget import judge_restore
from busflow_verify.core.config import (
    ConfigError,
    RestoreBudgetConfig,
    config_dir,
    load_verify_config,
)
from busflow_verify.defs.plots import numbers

DAY, NEXT_DAY = "2026-11-20", "2026-11-21"
BUDGET_CHECK = "restored_db:restore_within_rto_budget"

# the plotted numbers of each asset of a custom-format dump with the conftest allowlist
PLOTTED = {
    "restored_db": {
        "dump_bytes",
        "restored_bytes",
        "download_seconds",
        "restore_seconds",
        "restore_pre_data_seconds",
        "restore_data_seconds",
        "restore_post_data_seconds",
    },
    "row_count_report": {
        "vacuum_analyze_seconds",
        "count_seconds",
        "vacuum_and_count_seconds",
        "rows.commerce.bookings",
        "rows.communications.messages",
        "rows.operations.service_legs",
    },
    "orphan_report": {"orphans.communications.messages.booking_id", "run_seconds"},
}
NUMERIC = (dg.IntMetadataValue, dg.FloatMetadataValue)


# -- the budget's math (core/checks/rto_budget.py) ---------------------------------------------------


def test_over_the_budget_says_by_how_much_in_seconds_and_ratio():
    result = judge_restore(150.0, [], RestoreBudgetConfig(max_seconds=100))
    [finding] = result.findings
    assert finding.name == "RTO_EXCEEDED"
    assert "50.0 s over the 100 s budget (1.50x the budget)" in finding.summary
    assert finding.details["median_seconds"] is None  # no verified run yet: no ratio judged


def test_growth_against_the_trailing_median_of_verified_runs():
    cfg = RestoreBudgetConfig(max_seconds=10_000, max_median_ratio=1.5, growth_floor_seconds=60)
    history = [("2026-11-19", 100.0), ("2026-11-18", 80.0), ("2026-11-17", 120.0)]
    [finding] = judge_restore(200.0, history, cfg).findings
    assert "2.00x the trailing median of 100.0 s over 3 verified run(s)" in finding.summary
    assert "limit 1.5x = 150.0 s: 50.0 s over" in finding.summary
    assert finding.details["history"] == dict(history)
    assert judge_restore(140.0, history, cfg).findings == []  # within 1.5x
    # below the floor the ratio is noise: a 0.4 s restore after 0.1 s ones is not judged
    tiny = [("2026-11-19", 0.1)]
    assert judge_restore(0.4, tiny, cfg).findings == []
    assert judge_restore(0.4, tiny, cfg.model_copy(update={"growth_floor_seconds": 0})).findings


@pytest.mark.parametrize(
    "text, named",
    [
        ("restore_budget:\n  max_secs: 10\n", "key restore_budget.max_secs: unknown key"),
        ("restore_budget:\n  max_seconds: soon\n", "key restore_budget.max_seconds"),
        ("restore_budget:\n  max_median_ratio: 0.5\n", "key restore_budget.max_median_ratio"),
        ("restore_budget:\n  trailing_runs: 0\n", "key restore_budget.trailing_runs"),
    ],
)
def test_a_bad_budget_key_is_named(tmp_path, text, named):
    (tmp_path / "verify.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_verify_config(tmp_path)
    assert named in str(err.value)
    assert "line 2" in str(err.value)


def test_the_shipped_budget_loads():
    cfg = load_verify_config(config_dir()).restore_budget
    assert cfg.max_seconds == 14400 and cfg.max_median_ratio == 1.5 and cfg.trailing_runs == 7


def test_only_ints_and_floats_are_plotted():
    out = numbers({"a": 3, "b": 0.12345, "c": None, "d": True, "e": "text"})
    assert out == {"a": dg.MetadataValue.int(3), "b": dg.MetadataValue.float(0.123)}


# -- end to end: a real dump, the real job, real #ops ----------------------------------------


def _plotted(home, partition: str) -> dict[str, dict]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        out = {}
        for asset in PLOTTED:
            [record] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
                limit=1,
            ).records
            meta = record.asset_materialization.metadata
            out[asset] = {k: v for k, v in meta.items() if isinstance(v, NUMERIC)}
        return out


@pytest.mark.e2e
def test_numbers_are_plotted_and_a_slow_restore_warns_without_blocking(harness, make_dump, slack):
    harness.write_config(
        {
            "size_guard": {"min_bytes": 1000},
            "alerts": {"attempts": 1, "backoff_seconds": 0.01, "timeout_seconds": 2},
            "restore_budget": {"max_seconds": 0.001, "growth_floor_seconds": 0},
        }
    )
    dump = harness.put("pg_dump_20261120_0100.dump", make_dump())
    harness.put("pg_dump_20261121_0100.dump", make_dump())
    code, verdict = harness.verify(DAY, "--promote")
    assert code == 0, verdict
    assert verdict["verified"] is True and verdict["promoted"] is True  # WARN: not blocking
    assert {c["check"]: c["passed"] for c in verdict["checks"]}[BUDGET_CHECK] is False
    [notice] = verdict["notices"]
    seconds = verdict["restore"]["restore_seconds"]
    assert notice["name"] == "RTO_EXCEEDED" and notice["severity"] == "P3"
    over = f"{seconds - 0.001:.1f} s over the 0.001 s budget ({seconds / 0.001:.2f}x the budget)"
    assert over in notice["summary"]
    [text] = slack.texts()
    assert "RTO_EXCEEDED (informational)" in text and over in text

    plotted = _plotted(harness.home, DAY)
    for asset, keys in PLOTTED.items():
        assert keys <= set(plotted[asset]), (asset, keys - set(plotted[asset]))
    restored, rows, orphans = (plotted[a] for a in PLOTTED)
    assert restored["dump_bytes"].value == dump.stat().st_size
    assert restored["restored_bytes"].value > 1_000_000  # pg_database_size of the copy
    assert restored["restore_seconds"].value == pytest.approx(seconds, abs=0.001)
    assert rows["rows.commerce.bookings"].value == 1000
    assert orphans["orphans.communications.messages.booking_id"].value == 7
    assert 0 < orphans["run_seconds"].value < 600
    assert verdict["restore"]["restored_bytes"] == restored["restored_bytes"].value

    # the next day: judged against the verified day's restore seconds, the same keys plotted
    code, second = harness.verify(NEXT_DAY)
    assert code == 0, second
    [notice] = second["notices"]
    assert notice["details"]["history"] == {DAY: seconds}
    assert notice["details"]["median_seconds"] == seconds
    grew = notice["details"]["ratio"] > 1.5
    assert ("x the trailing median of" in notice["summary"]) is grew
    assert {a: set(v) for a, v in _plotted(harness.home, NEXT_DAY).items()} == {
        a: set(v) for a, v in plotted.items()
    }
