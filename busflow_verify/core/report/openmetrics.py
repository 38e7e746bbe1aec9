"""`busflow-verify status --openmetrics`: the state `status` reads, in the OpenMetrics text format
(for a node_exporter textfile collector or a cron'd scrape; docs/operating.md: Metrics).

Written by the format's rules, without a client library: one `# TYPE`, `# UNIT` (for a unit
suffix) and `# HELP` per family, every name prefixed `busflow_verify_`, units as suffixes
(`_seconds`, `_bytes`), gauges only (none of these counts up: no `_total`), label values escaped,
and `# EOF` last. A family with nothing to say (no verified date yet) keeps its metadata and has
no sample.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

PREFIX = "busflow_verify_"


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value)) if math.isfinite(value) else ("+Inf" if value > 0 else "-Inf")


class _Families:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, unit: str | None = None):
        full = PREFIX + name
        self.lines.append(f"# TYPE {full} {kind}")
        if unit:
            self.lines.append(f"# UNIT {full} {unit}")
        self.lines.append(f"# HELP {full} {_escape(help_text)}")
        return full

    def sample(self, name: str, value, labels: dict[str, Any] | None = None) -> None:
        if value is None:
            return
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in (labels or {}).items() if v is not None)
        self.lines.append(
            f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}"
        )


def _timestamp(iso: str | None) -> float | None:
    return dt.datetime.fromisoformat(iso).timestamp() if iso else None


def _last_verified(out: _Families, status: dict[str, Any], now: dt.datetime) -> None:
    dead = status.get("deadman") or {}
    at = _timestamp(dead.get("last_verified_at"))
    name = out.family(
        "last_verified_timestamp_seconds",
        "gauge",
        "End of the run that verified the newest verified date (Unix time)",
        "seconds",
    )
    out.sample(name, at, {"partition": dead.get("last_verified")})
    name = out.family(
        "last_verified_age_seconds",
        "gauge",
        "Seconds since the newest date was verified",
        "seconds",
    )
    out.sample(name, now.timestamp() - at if at is not None else None)
    name = out.family("deadman_stale", "gauge", "1 when nothing verified for the switch's limit")
    out.sample(name, bool(dead.get("stale")))
    name = out.family(
        "deadman_max_age_seconds", "gauge", "The dead-man's switch's limit", "seconds"
    )
    hours = dead.get("max_age_hours")
    out.sample(name, hours * 3600.0 if hours is not None else None)


def _last_run(out: _Families, run: dict[str, Any] | None) -> None:
    run = run or {}
    partition = run.get("partition")
    name = out.family("last_run", "info", "The newest verify run: its date, state and id")
    if run:
        out.sample(
            name + "_info",
            1,
            {"partition": partition, "status": run.get("status"), "run_id": run.get("run_id")},
        )
    name = out.family("last_run_verified", "gauge", "1 when the newest run verified its date")
    out.sample(name, bool(run.get("verified")) if run else None, {"partition": partition})
    name = out.family(
        "last_run_failure", "gauge", "1 per failure code of the newest run (its verdict)"
    )
    for f in run.get("failure_details") or []:
        out.sample(name, 1, {"code": f["code"], "name": f["name"], "severity": f["severity"]})
    name = out.family(
        "last_run_end_timestamp_seconds", "gauge", "When the newest run ended", "seconds"
    )
    out.sample(name, _timestamp(run.get("ended_at")))
    name = out.family(
        "last_run_restore_seconds", "gauge", "The newest run's restore time", "seconds"
    )
    out.sample(name, run.get("restore_seconds"))
    name = out.family("last_run_dump_bytes", "gauge", "The newest run's dump size", "bytes")
    out.sample(name, run.get("dump_bytes"))
    for suffix, field, help_text in (
        ("", "orphans", "Orphans per soft FK in the newest run"),
        ("_allowed", "max_orphans", "The allowlist's max_orphans per soft FK"),
    ):
        name = out.family(f"last_run_orphans{suffix}", "gauge", help_text)
        for o in run.get("orphans") or []:
            out.sample(name, o.get(field), {"child": o.get("child"), "parent": o.get("parent")})


def _delivery(out: _Families, status: dict[str, Any]) -> None:
    name = out.family("outbox_messages", "gauge", "#ops messages not delivered (the outbox)")
    out.sample(name, len(status.get("outbox") or []))
    evidence = status.get("evidence") or {}
    name = out.family("evidence_signing", "gauge", "1 when runs' evidence is signed and written")
    out.sample(name, bool(evidence.get("signing")))
    name = out.family("evidence_pending_runs", "gauge", "Runs whose evidence is not written yet")
    out.sample(name, len(evidence.get("pending") or []))
    name = out.family("cutover_halted", "gauge", "1 while cutover work is halted (F5 step 2)")
    out.sample(name, bool((status.get("f5") or {}).get("cutover_halt")))


def render(status: dict[str, Any], now: dt.datetime) -> str:
    """The OpenMetrics text of `status` (defs/status.py `status`) at `now`."""
    out = _Families()
    _last_verified(out, status, now)
    _last_run(out, status.get("last_run"))
    _delivery(out, status)
    return "\n".join([*out.lines, "# EOF"]) + "\n"
