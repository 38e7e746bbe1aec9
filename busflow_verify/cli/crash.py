"""A verify that broke outside the job's own handling (the instance, the run, reading the verdict
back) still ends with a verdict: one VERIFY_JOB_ERROR naming the exception's class and first line
(secret values scrubbed), the #ops message attempted (an undelivered one is kept in the outbox),
and exit status 3."""

from __future__ import annotations

from busflow_verify.cli.scrub import scrub
from busflow_verify.core.failures import Finding
from busflow_verify.core.verdict import Verdict


def crash_verdict(partition: str, exc: BaseException, progress: dict) -> Verdict:
    """The verdict of a verify that broke outside the job's own handling: one VERIFY_JOB_ERROR
    naming the exception's class and first line, scrubbed."""
    lines = str(exc).strip().splitlines()
    first = scrub(lines[0] if lines else "")[:500]
    stage = progress.get("stage", "starting the Dagster instance")
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    finding = Finding(
        "VERIFY_JOB_ERROR",
        f"the verifier broke while {stage}: {what}; the day is not verified, re-run the date",
        {"cause": "verifier_crashed", "stage": stage, "error": type(exc).__name__},
    )
    return Verdict(
        partition=partition,
        verified=False,
        run_id=progress.get("run_id"),
        failures=(finding.to_dict(),),
    )


def finish_crash(verdict: Verdict, log) -> Verdict:
    """Tell #ops about a broken verifier (an undelivered message stays in the outbox)."""
    from busflow_verify.defs import environment
    from busflow_verify.defs.finish import alert_ops

    try:
        return alert_ops(verdict, environment.dagster_home(), log)
    except Exception as exc:  # nothing more to try: the verdict is still printed
        log(f"busflow-verify: the #ops message could not be sent or kept: {type(exc).__name__}")
        return verdict
