"""The dead-man's switch: silence must never pass for success.

When no dump has been verified for longer than verify.yaml's `deadman.max_age_hours` (default
26 h: the 03:00 UTC run plus two hours of slack), #ops gets one VERIFICATION_STALE (P1,
@infra-oncall) naming the last verified date and what the last run did (failed, never started,
still running); when a dump is verified again it gets one recovery message. Nothing in between.

The age is measured from the end of the run that verified the newest verified partition (a
backfill of an older date does not make verification fresh). With no verified run at all the
age is measured from the first run of the job; with no run at all there is nothing to judge yet.

Once-only: the switch's state lives in one file beside the Dagster instance
(`$DAGSTER_HOME/busflow-deadman.json`), read, decided and written under an exclusive lock
(`DeadmanState.transition`). The sensor and the CLI (`busflow-verify status`) both evaluate
through it, so whichever sees the silence first posts and the other finds it already told; a
Dagster sensor cursor is not used because the CLI cannot share it.

Plain Python: no Dagster import (the Dagster layer is defs/deadman.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busflow_verify.core.failures import Finding
from busflow_verify.core.report.alerts import failure_lines

UTC = dt.timezone.utc
STATE_FILE = "busflow-deadman.json"
CODE = "VERIFICATION_STALE"


@dataclass(frozen=True)
class LastRun:
    """The newest run of the verify job, as the switch reports it."""

    partition: str | None
    status: str  # Dagster's run status: SUCCESS, FAILURE, STARTED, QUEUED, NOT_STARTED, ...
    created: dt.datetime
    failure_codes: tuple[str, ...] = ()
    verified: bool = False


@dataclass(frozen=True)
class Observation:
    """What the instance says: the newest verified partition and when its run ended, the first
    run of the job (for an instance that never verified anything) and the newest run."""

    last_verified_partition: str | None
    last_verified_at: dt.datetime | None
    first_run_at: dt.datetime | None = None
    last_run: LastRun | None = None


@dataclass(frozen=True)
class Decision:
    stale: bool
    age: dt.timedelta | None  # None: nothing to judge yet (no run at all)
    message: str | None = None  # what to post (a transition only), None: stay quiet
    kind: str | None = None  # "stale" | "recovered" | None
    finding: dict[str, Any] | None = None


def _fmt_age(age: dt.timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 72 else f"{hours / 24:.1f} days"


def age_of(obs: Observation, now: dt.datetime) -> dt.timedelta | None:
    since = obs.last_verified_at or obs.first_run_at
    return None if since is None else now - since


def describe_last_run(obs: Observation, now: dt.datetime) -> str:
    """What the last run did, in the words on-call needs: failed, never started, still running."""
    run = obs.last_run
    if run is None or (run.verified and run.partition == obs.last_verified_partition):
        return (
            "no run of backup_verify_job since then: scheduled runs never started "
            "(daemon down or the schedule stopped?)"
        )
    what = f"the last run (partition {run.partition or '?'}, created {_iso(run.created)})"
    if run.verified:
        return f"{what} verified an older date (a backfill); no newer date was verified"
    if run.status in ("NOT_STARTED", "QUEUED", "STARTING"):
        waited = _fmt_age(now - run.created)
        return f"{what} never started: {run.status} for {waited} (run queue stuck?)"
    if run.status in ("STARTED", "CANCELING"):
        return f"{what} is still running after {_fmt_age(now - run.created)}"
    if run.status == "FAILURE" or run.failure_codes:
        codes = ", ".join(run.failure_codes) or "no failure recorded"
        return f"{what} failed: {codes}"
    if run.status == "CANCELED":
        return f"{what} was canceled"
    return f"{what} completed but did not verify"


def _iso(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def stale_finding(obs: Observation, age: dt.timedelta, max_age: dt.timedelta, now) -> Finding:
    last = obs.last_verified_partition
    verified = (
        f"the last verified dump is of {last} (verified {_iso(obs.last_verified_at)})"
        if last and obs.last_verified_at
        else "no dump has ever been verified on this instance"
    )
    return Finding(
        CODE,
        f"no dump verified for {_fmt_age(age)} (limit {_fmt_age(max_age)}): {verified}; "
        f"{describe_last_run(obs, now)}",
        {
            "last_verified_partition": last,
            "last_verified_at": obs.last_verified_at.isoformat() if obs.last_verified_at else None,
            "age_hours": round(age.total_seconds() / 3600, 2),
            "max_age_hours": round(max_age.total_seconds() / 3600, 2),
            "last_run_status": obs.last_run.status if obs.last_run else None,
            "last_run_partition": obs.last_run.partition if obs.last_run else None,
        },
    )


def decide(
    state: dict[str, Any], obs: Observation, now: dt.datetime, max_age: dt.timedelta
) -> tuple[dict[str, Any], Decision]:
    """(the new state, the decision). Posts only on a transition: quiet -> stale (one P1),
    stale -> fresh (one recovery). `state` is {"alerting": bool, "since": iso, ...}."""
    age = age_of(obs, now)
    stale = age is not None and age > max_age
    alerting = bool(state.get("alerting"))
    if stale and not alerting:
        finding = stale_finding(obs, age, max_age, now).to_dict()
        text = "\n".join(
            [f":skull: Backup verify dead-man's switch: NOTHING VERIFIED for {_fmt_age(age)}"]
            + failure_lines(finding)
        )
        new = {
            "alerting": True,
            "since": now.isoformat(timespec="seconds"),
            "last_verified_partition": obs.last_verified_partition,
        }
        return new, Decision(True, age, text, "stale", finding)
    if not stale and alerting:
        silent_since = state.get("since", "?")
        text = (
            f":white_check_mark: Backup verify dead-man's switch: RECOVERED — "
            f"{obs.last_verified_partition} verified {_iso(obs.last_verified_at)} "
            f"(VERIFICATION_STALE raised {silent_since} is cleared)"
        )
        new = {"alerting": False, "since": now.isoformat(timespec="seconds"), "cleared": True}
        return new, Decision(False, age, text, "recovered")
    return state, Decision(stale, age)


class DeadmanState:
    """The switch's state file, shared by the sensor and the CLI (module docstring)."""

    def __init__(self, home: str | Path):
        self.path = Path(home) / STATE_FILE

    def get(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _put(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.rename(self.path)  # a reader sees the old state or the new one

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released by the OS if the process dies
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def transition(
        self, obs: Observation, now: dt.datetime, max_age: dt.timedelta, send
    ) -> Decision:
        """Decide under the lock; on a transition call `send(decision)` (which posts, or keeps
        the message in the outbox), then record the new state: told once, by one process."""
        with self._locked():
            old = self.get()
            new, decision = decide(old, obs, now, max_age)
            if decision.message is not None:
                send(decision)
                self._put(new)
            return decision
