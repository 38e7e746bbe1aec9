"""`busflow-verify status` and `history`: read from the Dagster instance (DagsterInstance APIs
only, so SQLite and PostgreSQL run storage alike) and the backup store's pointer.

Formatting is core/report/history.py; the dead-man's switch is core/report/deadman.py and defs/deadman.py.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from busflow_verify.core import config as cfg
from busflow_verify.core.checks.cron_schedule import next_run
from busflow_verify.core.report.alerts import Outbox
from busflow_verify.core.report.cutover import CutoverHalt
from busflow_verify.core.report.deadman import DeadmanState, age_of
from busflow_verify.core.report.history import history_row
from busflow_verify.core.store.pointer import read_pointer
from busflow_verify.defs import environment
from busflow_verify.defs.alerts import OUTBOX_DIR
from busflow_verify.defs.deadman import evaluate, max_age, observation
from busflow_verify.defs.evidence import evidence_state
from busflow_verify.defs.resources import built_backup_store
from busflow_verify.defs.run_history import (
    PARTITION_TAG,
    NewestRun,
    latest_completed_runs,
    newest_run,
    run_facts,
    verdict_from_facts,
)
from busflow_verify.defs.schedules import backup_verify_schedule

UTC = dt.timezone.utc


@dataclass(frozen=True)
class History:
    """`history`'s window: a row per date in it, and the dates before it that have a completed
    run (newest first), with the `--days` that would show them all."""

    rows: list[dict[str, Any]]
    older: list[str]
    days_for_all: int | None


def history_window(
    instance: dg.DagsterInstance, days: int, now: dt.datetime | None = None
) -> History:
    """One row per date of the last `days` days (UTC), newest first: the date's latest
    completed run; and the older dates that have one."""
    now = now or dt.datetime.now(UTC)
    first = (now.date() - dt.timedelta(days=days - 1)).isoformat()
    largest = cfg.load_verify_config(environment.config_dir()).size_guard.largest_tables
    halt = CutoverHalt(instance.root_directory).get()
    rows, older = [], []
    for partition, record in latest_completed_runs(instance).items():
        if partition < first:
            older.append(partition)  # newest first: only older dates follow
            continue
        facts = run_facts(instance, record.dagster_run)
        rows.append(history_row(facts, verdict_from_facts(instance, facts, halt), largest))
    oldest = dt.date.fromisoformat(older[-1]) if older else None
    return History(rows, older, (now.date() - oldest).days + 1 if oldest else None)


def history(instance: dg.DagsterInstance, days: int, now: dt.datetime | None = None) -> list:
    """The rows of `history_window`."""
    return history_window(instance, days, now).rows


def read_store_pointer() -> dict[str, Any]:
    """The verified-latest pointer, as promotion reads it; an unreachable store is said, never
    raised (and its error is named by class only: a message may carry an endpoint or a key)."""
    missing = [n for n in environment.REQUIRED[:2] if not environment.is_set(n)]
    if missing:
        return {"error": f"{', '.join(missing)} not set"}
    try:
        with built_backup_store() as store:
            return read_pointer(store.primary.client(), store.bucket, store.prefix) or {}
    except Exception as exc:
        return {"error": f"the primary store could not be read ({type(exc).__name__})"}


def outbox_messages(home: str) -> list[dict[str, Any]]:
    found = []
    for path in Outbox(Path(home) / OUTBOX_DIR).pending():
        try:
            message = json.loads(path.read_text())
        except (OSError, ValueError):
            message = {}
        found.append(
            {
                "file": path.name,
                "partition": message.get("partition"),
                "reason": message.get("reason"),
            }
        )
    return found


def _when(timestamp: float | None) -> str | None:
    return dt.datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None


def _last_run(newest: NewestRun | None) -> dict[str, Any] | None:
    """The newest run: its outcome and codes, and once it completed, its numbers."""
    if newest is None:
        return None
    run, verdict = newest.run, newest.verdict
    failures = list(verdict.failures) if verdict else []
    return {
        "partition": run.tags.get(PARTITION_TAG),
        "status": run.status.value,
        "run_id": run.run_id,
        "verified": newest.verified,
        "failures": list(newest.failure_codes),
        "failure_details": [{k: f.get(k) for k in ("code", "name", "severity")} for f in failures],
        "started_at": _when(newest.record.start_time),
        "ended_at": _when(newest.record.end_time),
        "dump_bytes": ((verdict.dump if verdict else None) or {}).get("size_bytes"),
        "restore_seconds": ((verdict.restore if verdict else None) or {}).get("restore_seconds"),
        "orphans": [
            {k: o.get(k) for k in ("child", "parent", "orphans", "max_orphans")}
            for o in (verdict.orphans if verdict else ())
        ],
    }


def _primary_down_since(newest: NewestRun | None) -> str | None:
    """When the outage the newest completed run found began, to the second."""
    since = newest.verdict.primary_down_since if newest and newest.verdict else None
    return dt.datetime.fromisoformat(since).isoformat(timespec="seconds") if since else None


def status(
    instance: dg.DagsterInstance,
    pointer: dict[str, Any],
    now: dt.datetime | None = None,
    config: cfg.VerifyConfig | None = None,
    log=None,
) -> dict[str, Any]:
    """The state `busflow-verify status` prints; with `log`, the dead-man's switch is evaluated
    first (and #ops told on a transition) from the same reading of the runs."""
    now = now or dt.datetime.now(UTC)
    config = config or cfg.load_verify_config(environment.config_dir())
    halt = CutoverHalt(instance.root_directory).get()
    newest = newest_run(instance, halt)
    obs = observation(instance, newest)
    if log is not None:
        evaluate(instance, log, now, config, obs)
    cron = backup_verify_schedule.cron_schedule
    upcoming = next_run(cron if isinstance(cron, str) else cron[0], now)
    limit = max_age(config)
    age = age_of(obs, now)
    return {
        "pointer": {k: pointer.get(k) for k in ("partition", "key", "verified_at", "error")},
        "last_run": _last_run(newest),
        "next_run": upcoming.isoformat(timespec="minutes") if upcoming else None,
        "schedule": f"{backup_verify_schedule.name}, {cron} UTC",
        "f5": {"cutover_halt": halt, "primary_down_since": _primary_down_since(newest)},
        "deadman": {
            "stale": age is not None and age > limit,
            "last_verified": obs.last_verified_partition,
            "last_verified_at": obs.last_verified_at.isoformat() if obs.last_verified_at else None,
            "age_seconds": age.total_seconds() if age is not None else None,
            "max_age_hours": limit.total_seconds() / 3600,
            "alerting": bool(DeadmanState(instance.root_directory).get().get("alerting")),
        },
        "outbox": outbox_messages(instance.root_directory),
        "evidence": evidence_state(instance.root_directory),
    }
