"""`busflow-verify status` and `history`: a row per date, and the lines a terminal prints.

Plain Python: the facts are read from the Dagster instance by defs/status.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from busflow_verify.core.verdict import RunFacts, Verdict


def history_row(facts: RunFacts, verdict: Verdict, largest: list[str]) -> dict[str, Any]:
    """One date: verdict, dump size, restore seconds, the largest tables' rows and change,
    orphans, failure codes."""
    deltas = {d.get("table"): d for d in facts.row_count_deltas or []}
    counts = facts.row_counts or {}
    tables = []
    for table in largest:
        delta = deltas.get(table, {})
        rows = counts.get(table, delta.get("current"))
        tables.append({"table": table, "rows": rows, "change": delta.get("ratio")})
    return {
        "partition": facts.partition,
        "verified": verdict.verified,
        "run_status": facts.run_status,
        "run_id": facts.run_id,
        "dump_bytes": (facts.dump or {}).get("size_bytes"),
        "restore_seconds": (facts.restore or {}).get("restore_seconds"),
        "tables": tables,
        "orphans": sum(int(o.get("orphans") or 0) for o in facts.orphans or []),
        "failures": list(dict.fromkeys(f["code"] for f in verdict.failures)),
    }


def _bytes(n) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


def history_line(row: dict[str, Any]) -> str:
    verdict = "VERIFIED" if row["verified"] else "NOT VERIFIED"
    secs = row["restore_seconds"]
    parts = [
        row["partition"],
        f"{verdict:<12}",
        f"dump {_bytes(row['dump_bytes'])}",
        f"restore {secs:.1f} s" if isinstance(secs, (int, float)) else "restore -",
    ]
    for t in row["tables"]:
        rows = f"{t['rows']:,}" if isinstance(t["rows"], int) else "-"
        change = f" ({t['change']:+.1%})" if isinstance(t["change"], (int, float)) else ""
        parts.append(f"{t['table']} {rows}{change}")
    parts.append(f"orphans {row['orphans']}")
    parts.append("failures " + (",".join(row["failures"]) or "-"))
    return "  ".join(parts)


def age_text(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "unknown age"
    hours = (now - when).total_seconds() / 3600
    return f"{hours:.1f} h ago" if hours < 72 else f"{hours / 24:.1f} days ago"


def status_lines(status: dict[str, Any], now: dt.datetime) -> list[str]:
    pointer = status["pointer"]
    if pointer.get("error"):
        lines = [f"pointer: unavailable ({pointer['error']})"]
    elif not pointer.get("partition"):
        lines = ["pointer: none (no dump promoted yet)"]
    else:
        at = pointer.get("verified_at")
        when = dt.datetime.fromisoformat(at) if at else None
        lines = [
            f"pointer: {pointer['partition']}  {pointer.get('key')}  verified {age_text(when, now)}"
        ]
    run = status["last_run"]
    if run is None:
        lines.append("last run: none")
    else:
        outcome = "VERIFIED" if run["verified"] else run["status"]
        failures = ",".join(run["failures"]) or "-"
        lines.append(f"last run: {run['partition']}  {outcome}  failures {failures}")
    lines.append(f"next scheduled run: {status['next_run'] or 'never'} ({status['schedule']})")
    f5 = status["f5"]
    halt = f5.get("cutover_halt")
    halt_text = f"cutover HALTED since {halt['since']}" if halt else "no cutover halt"
    down = f5.get("primary_down_since")
    lines.append(
        f"F5: {halt_text}; primary "
        + (f"down since {down}" if down else "reachable at the last run")
    )
    dead = status["deadman"]
    lines.append(
        f"dead-man's switch: {'STALE' if dead['stale'] else 'fresh'} "
        f"(last verified {dead['last_verified'] or 'never'}, limit {dead['max_age_hours']} h"
        + (", #ops told" if dead["alerting"] else "")
        + ")"
    )
    outbox = status["outbox"]
    lines.append(f"undelivered #ops messages: {len(outbox)}")
    lines += [f"  {m['partition']}  {m['file']}  ({m['reason']})" for m in outbox]
    return lines + evidence_lines(status.get("evidence") or {})


def evidence_lines(evidence: dict[str, Any]) -> list[str]:
    """Whether runs are signed, and the runs whose evidence is pending."""
    if evidence.get("signing"):
        lines = [f"evidence: signed (key {evidence['keyid'][:16]}...)"]
    else:
        lines = [f"evidence: NOT written ({evidence.get('problem')})"]
    pending = evidence.get("pending") or []
    if pending:
        lines.append(
            f"  {len(pending)} run(s) whose evidence is pending (busflow-verify alerts repost):"
        )
        lines += [f"  {p['partition']}  {p['run_id']}" for p in pending]
    return lines
