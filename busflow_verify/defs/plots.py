"""The numbers Dagster plots over partitions (an asset's *Plots* tab), named in one place.

Dagster draws int and float metadata of a partitioned asset's materializations as a line over
the partitions, one plot per key; the keys are the same every day (and on failure paths, where
the value is known) so the plots line up. Each asset adds its numbers with one line:

| asset | keys |
|---|---|
| `restored_db` | `dump_bytes`, `restored_bytes` (pg_database_size), `download_seconds`, `restore_seconds` (set by the asset), `restore_pre_data_seconds`, `restore_data_seconds`, `restore_post_data_seconds` (`restore_plain_seconds` for a plain dump) |
| `row_count_report` | `vacuum_analyze_seconds`, `count_seconds`, `vacuum_and_count_seconds`, `rows.<schema.table>` for each of size_guard.largest_tables |
| `orphan_report` | `orphans.<schema.table.column>` per soft FK, `run_seconds` (the run's start to the sweep's end) |

The restore seconds are also judged: the RTO budget check (defs/rto_budget.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from busflow_verify.core.checks.row_counts import database_bytes
from busflow_verify.core.store.listing import DumpObject
from busflow_verify.defs.run_history import DUMP_BYTES_KEY, RESTORED_BYTES_KEY

RUN_SECONDS_KEY = "run_seconds"


def section_key(section: str) -> str:
    return f"restore_{section.replace('-', '_')}_seconds"


def rows_key(table: str) -> str:
    return f"rows.{table}"


def orphans_key(child: str) -> str:
    return f"orphans.{child}"


def numbers(values: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """Int and float metadata values (what the Plots tab draws); unknown values are left out."""
    out: dict[str, dg.MetadataValue] = {}
    for key, value in values.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            out[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[key] = dg.MetadataValue.float(round(value, 3))
    return out


def restored_bytes(session) -> int:
    """pg_database_size of the database restored in this run (its RestoreSession)."""
    return database_bytes(session.connect)


def restore_plots(dump: DumpObject, summary: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """restored_db's numbers (download and total restore seconds are already its own keys)."""
    return numbers(
        {
            DUMP_BYTES_KEY: dump.size_bytes,
            RESTORED_BYTES_KEY: summary.get(RESTORED_BYTES_KEY),
            **{section_key(s["section"]): float(s["seconds"]) for s in summary["sections"]},
        }
    )


def row_count_plots(
    counts: Mapping[str, int], largest_tables: Iterable[str], timings: Mapping[str, float]
) -> dict[str, dg.MetadataValue]:
    """row_count_report's numbers: VACUUM ANALYZE and count seconds, the largest tables' rows."""
    return numbers({**timings, **{rows_key(t): counts.get(t) for t in largest_tables}})


def orphan_plots(
    context: dg.AssetExecutionContext, rows: Iterable[Mapping[str, Any]]
) -> dict[str, dg.MetadataValue]:
    """orphan_report's numbers: orphans per soft FK (a failed sweep has none) and the run's
    seconds so far: the sweep is the last stage."""
    record = context.instance.get_run_record_by_id(context.run_id)
    started = record.start_time if record else None
    return numbers(
        {
            **{orphans_key(r["child"]): r["orphans"] for r in rows},
            RUN_SECONDS_KEY: time.time() - started if started else None,
        }
    )
