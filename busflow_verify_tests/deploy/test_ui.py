"""The Dagster UI as on-call uses it: the lineage of the five stages, a partition's check result,
metadata as tables, and descriptions that say the stage and the runbook section."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import dagster as dg
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from busflow_verify.core.failures import RUNBOOK
from busflow_verify.definitions import build_defs
from busflow_verify.defs.checks import ALL_CHECKS
from busflow_verify_tests.webui import DagsterUI, chromium, dagster_webserver

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "asset-graph.png"
LOCATION = "busflow_verify.definitions"  # workspace.yaml's module: the code location's name
GROUP = "backup_verify"
CHAIN = ["dump_object", "size_check", "restored_db", "row_count_report", "orphan_report"]
TABLES = {  # asset -> metadata entry rendered as a table, and columns it must have
    "size_check": ("history", {"date", "key", "size_bytes", "dump"}),
    "restored_db": ("sections", {"section", "seconds", "ok", "error"}),
    "row_count_report": (
        "deltas_table",
        {"table", "previous", "current", "delta", "change", "status"},
    ),
    "orphan_report": (
        "orphans_table",
        {"child", "parent", "orphans", "max_orphans", "sample_unexpected", "sample_expected"},
    ),
}


def _definitions() -> tuple[set, dict]:
    """The lineage edges and each asset's check names, as the code location defines them."""
    graph = build_defs().resolve_asset_graph()
    edges = {
        (parent.to_user_string(), key.to_user_string())
        for key in graph.get_all_asset_keys()
        for parent in graph.get(key).parent_keys
    }
    checks = {
        name: [spec.name for spec in ALL_CHECKS if spec.asset_key == dg.AssetKey(name)]
        for name in CHAIN
    }
    return edges, checks


def test_each_description_opens_with_its_stage_and_names_its_runbook_section():
    graph = build_defs().resolve_asset_graph()
    for step, name in enumerate(CHAIN, start=1):
        description = graph.get(dg.AssetKey(name)).description
        assert description.startswith(f"**Stage {step} of 5: "), name
        assert RUNBOOK in description, name
        for spec in ALL_CHECKS:
            if spec.asset_key == dg.AssetKey(name):
                assert spec.metadata["runbook_section"] in description, (name, spec.name)


def _assert_recorded_as_tables(home: Path, verdict: dict) -> None:
    """What the UI renders as tables: typed columns, one record per row, the verdict's numbers."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        tables = {}
        for asset, (entry, columns) in TABLES.items():
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            table = tables[asset] = event.asset_materialization.metadata[entry]
            assert isinstance(table, dg.TableMetadataValue), (asset, entry)
            assert columns <= {c.name for c in table.schema.columns}, (asset, entry)
    history = [r.data for r in tables["size_check"].records]
    assert history[-1]["dump"] == "this dump"
    assert history[-1]["size_bytes"] == verdict["dump"]["size_bytes"]
    sections = [r.data["section"] for r in tables["restored_db"].records]
    assert sections == [s["section"] for s in verdict["restore"]["sections"]]
    deltas = {r.data["table"]: r.data for r in tables["row_count_report"].records}
    assert {t: d["current"] for t, d in deltas.items()} == verdict["row_counts"]


@pytest.mark.e2e
def test_on_call_reads_lineage_a_partitions_checks_and_the_orphans_table(
    harness, make_dump, tmp_path
):
    date = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)  # always a partition
    harness.put(f"pg_dump_{date:%Y%m%d}_0100.dump", make_dump())
    edges, checks = _definitions()

    with (
        dagster_webserver(harness.home, REPO / "workspace.yaml", tmp_path / "webserver.log") as web,
        chromium(tmp_path / "failure.png") as driver,
    ):
        code, verdict = harness.verify(date.isoformat())  # while the webserver boots
        assert code == 0, verdict
        _assert_recorded_as_tables(harness.home, verdict)
        url = web.wait_answering()
        ui = DagsterUI(driver, url)
        nodes, drawn = ui.lineage(GROUP, LOCATION, CHAIN)
        assert sorted(n.name for n in nodes) == sorted(CHAIN)
        assert {n.name: n.checks for n in nodes} == {
            name: f"{len(checks[name])} / {len(checks[name])} Passed" for name in CHAIN
        }
        assert drawn == edges
        assert set(itertools.pairwise(CHAIN)) <= drawn  # the runbook's order
        driver.save_screenshot(str(SCREENSHOT))

        for asset in CHAIN:
            assert ui.checks_listed(asset) == checks[asset], asset

        header = ui.check_partition(
            "orphan_report", "soft_fk_orphans_within_allowlist", date.isoformat()
        )
        assert header.find_element(By.XPATH, ".//*[@data-tooltip]").text == "Passed"
        ui.wait.until(
            EC.visibility_of_element_located(
                (By.XPATH, f"//a[starts-with(@href, '/runs/{verdict['run_id']}')]")
            )
        )
        ui.visible_text("1 soft FK(s) within their allowlist tolerance")  # the check's description

        columns, rows = ui.metadata_table("orphan_report", date.isoformat(), "orphans_table")
        [sweep] = verdict["orphans"]
        row = dict(zip(columns, rows[0]))
        assert len(rows) == 1
        assert (row["child"], row["orphans"], row["max_orphans"]) == (
            sweep["child"],
            str(sweep["orphans"]),
            str(sweep["max_orphans"]),
        )


PLOTS_SCREENSHOT = REPO / "docs" / "plots-restored-db.png"
PLOTTED = [  # defs/plots.py's numbers of restored_db, one chart each
    "download_seconds",
    "dump_bytes",
    "restore_data_seconds",
    "restore_post_data_seconds",
    "restore_pre_data_seconds",
    "restore_seconds",
    "restored_bytes",
]


@pytest.mark.e2e
def test_the_plots_tab_draws_a_week_of_partitions(harness, make_dump, tmp_path):
    """A week of nightly dumps, growing a little each day, verified one date after the other:
    restored_db's Plots tab draws its numbers (defs/plots.py) over the seven partitions."""
    today = dt.datetime.now(dt.UTC).date()
    dates = [today - dt.timedelta(days=d) for d in range(7, 0, -1)]
    for day, date in enumerate(dates):
        grow = 1 + day / 20  # within the row-count tolerance day over day
        dump = make_dump(bookings=int(1000 * grow), messages=int(3000 * grow), orphans=7 + day)
        harness.put(f"pg_dump_{date:%Y%m%d}_0100.dump", dump)
    with (
        dagster_webserver(harness.home, REPO / "workspace.yaml", tmp_path / "webserver.log") as web,
        chromium(tmp_path / "failure.png") as driver,
    ):
        for date in dates:  # while the webserver boots
            code, verdict = harness.verify(date.isoformat())
            assert code == 0, verdict
        ui = DagsterUI(driver, web.wait_answering())
        ui.plots("restored_db", PLOTTED)  # waits for a chart per key
        driver.save_screenshot(str(PLOTS_SCREENSHOT))
        ui.plots("row_count_report", ["vacuum_analyze_seconds", "rows.commerce.bookings"])
        ui.plots("orphan_report", ["orphans.communications.messages.booking_id", "run_seconds"])
