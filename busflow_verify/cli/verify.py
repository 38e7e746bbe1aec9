"""`busflow-verify verify --date D`: run the job for one partition through the Dagster
definitions, finish it as the sensors finish theirs, print the verdict, exit with its status.

Exit status, one rule for every way a verify can end:

    0  verified
    1  not verified: a failure of the backup itself was found (F1, F2, F3, F5, DUMP_MISSING,
       ROW_COUNT_DRIFT), whatever else went wrong alongside
    2  usage or configuration error, found before anything is launched
    3  not verified because the verifier broke: the verdict's failures are only verifier faults
       (VERIFY_JOB_ERROR, HOST_OUT_OF_SPACE, VERIFY_HOST_FAULT, with an F4 when #ops could not
       be told either): a full disk on the verify host, a crashed step, the run not completing,
       or a crash outside the job (cli/crash.py); nothing was learnt about the backup, re-run
       the date once it is fixed

F4 (an undelivered #ops message) and EVIDENCE_NOT_WRITTEN (the run's signed evidence could not be
written) never decide the status: they leave `verified` as it is.

Start-up: the disposable cluster is started first thing, and Dagster and the code location are
imported inside the functions that need them, after it, so initdb and the server's start run
while Dagster imports; the cyclic garbage collector is off while they import.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import os
import signal
import sys
import traceback

from busflow_verify.cli.parser import (
    EXIT_NOT_VERIFIED,
    EXIT_VERIFIED,
    EXIT_VERIFIER_BROKE,
    UsageError,
)
from busflow_verify.cli.scrub import scrub
from busflow_verify.core.failures import VERIFIER_FAULTS

# Failures that say nothing about the backup: the verifier's and its host's (core/failures.py
# VERIFIER_FAULTS, by code: they are their own codes), the #ops delivery (F4) and the evidence's
# write (EVIDENCE_NOT_WRITTEN): like F4, it never decides the status.
NOT_ABOUT_THE_BACKUP = VERIFIER_FAULTS | {"F4", "EVIDENCE_NOT_WRITTEN"}


def verify(args) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return _verify(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so the disposable Postgres is removed on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def _verify(args) -> int:
    gc.disable()  # until the run starts: see _collect_garbage_from_here
    early = _start_cluster_early(args.date)
    try:
        return _verify_date(args, early)
    finally:
        gc.enable()
        if early is not None:
            early.discard()  # a cluster the run did not take (it failed before, or chose)


def _collect_garbage_from_here() -> None:
    """Turn the cyclic garbage collector back on, with what exists now left out of it.

    Importing Dagster and the code location makes about 340 k objects that all stay alive; with
    the collector on, it scans them over and over while they are being made (measured here: the
    imports take 1.6 s instead of 2.0 s without it). Frozen, they are not scanned by any later
    collection either.
    """
    gc.freeze()
    gc.enable()


def _start_cluster_early(date_text: str):
    """The ephemeral target's cluster, started before Dagster is imported
    (core/targets/ephemeral.py EarlyCluster), to be handed to the run; None for another target,
    and for a date that is no date, which is a usage error at once."""
    from busflow_verify.core.config import ConfigError
    from busflow_verify.core.targets.ephemeral import EarlyCluster
    from busflow_verify.core.targets.settings import target_kind

    try:
        dt.date.fromisoformat(date_text)
        # os.environ itself: defs/environment.py imports Dagster, which this start overlaps
        if target_kind(os.environ) == "ephemeral":
            return EarlyCluster.start()
    except (ValueError, ConfigError):
        pass  # _preflight names it
    return None


def _verify_date(args, early) -> int:
    from busflow_verify.cli.crash import crash_verdict, finish_crash
    from busflow_verify.core.verdict import format_verdict

    partition = _preflight(args.date)
    progress: dict = {}

    def log(message):
        print(message, file=sys.stderr)

    # stdout carries only the verdict; Dagster's own output goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            verdict = run_verify(partition, args.log_level, args.promote, progress, early)
        except Exception as exc:
            log(scrub("".join(traceback.format_exception(exc))).rstrip())
            log(f"busflow-verify: the verifier broke ({type(exc).__name__})")
            verdict = finish_crash(crash_verdict(partition, exc, progress), log)
    print(
        json.dumps(verdict.to_json(), indent=2, default=str)
        if args.json
        else format_verdict(verdict)
    )
    return exit_status(verdict)


def _preflight(date_text: str) -> str:
    """Everything that is a usage or configuration error, before a run is launched."""
    from busflow_verify.core import config as cfg
    from busflow_verify.core.store.signature import KeyFileError, load_public_keys
    from busflow_verify.defs import environment
    from busflow_verify.defs.partitions import nightly_dump_partitions

    try:
        date = dt.date.fromisoformat(date_text)
    except ValueError:
        raise UsageError(f"--date {date_text!r} is not a date (YYYY-MM-DD)") from None
    missing = environment.missing_required()
    if missing:
        raise UsageError(
            f"environment variable(s) not set: {', '.join(missing)} (see docs/deploying.md: Configuration)"
        )
    home = environment.dagster_home()
    if not os.path.isabs(home):
        raise UsageError(f"DAGSTER_HOME must be an absolute path, got {home!r}")
    os.makedirs(home, exist_ok=True)
    folder = environment.config_dir()
    try:
        cfg.load_verify_config(folder)
        cfg.load_allowlist(folder)
        environment.restore_kind()
        if key_file := environment.manifest_public_key():
            load_public_keys(key_file, environment.MANIFEST_PUBLIC_KEY)
    except (cfg.ConfigError, KeyFileError) as exc:
        raise UsageError(f"configuration error: {exc}") from None
    key = date.isoformat()
    if not nightly_dump_partitions.has_partition_key(key):
        first = nightly_dump_partitions.get_first_partition_key()
        last = nightly_dump_partitions.get_last_partition_key()
        raise UsageError(f"--date {key} is outside the partitions {first} .. {last}")
    return key


def run_verify(partition: str, log_level: str, promote: bool, progress: dict, early):
    """Run the job for one partition in process, then finish it as the sensors finish theirs
    (defs/finish.py): the verdict, the pointer (with --promote), #ops. `progress` gets the
    stage and the run's id as soon as there is one, for the crash verdict; `early`, the cluster
    started before the run (`_start_cluster_early`), is handed to the run's restore target."""
    import dagster as dg

    from busflow_verify.definitions import build_defs
    from busflow_verify.defs.finish import LAUNCHED_BY_TAG, finish_run
    from busflow_verify.defs.instance import open_instance
    from busflow_verify.defs.resources import restore_target_taking_over
    from busflow_verify.defs.run_history import JOB_NAME
    from busflow_verify.defs.stale_runs import report_stale_runs, run_tags_for_this_process

    defs = build_defs()
    job = defs.resolve_job_def(JOB_NAME)
    with open_instance() as instance:
        try:  # runs of this host whose process died: failed, and reported to #ops once
            report_stale_runs(instance, log=lambda m: print(m, file=sys.stderr))
        except Exception as exc:  # a failed sweep must not block today's verify
            print(
                f"stale-run sweep failed: {type(exc).__name__}: {scrub(str(exc))}", file=sys.stderr
            )
        progress["stage"] = "running the job"
        _collect_garbage_from_here()
        result = job.execute_in_process(
            partition_key=partition,
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            tags={LAUNCHED_BY_TAG: "cli", **run_tags_for_this_process()},
            resources=(
                {
                    "restore_target": restore_target_taking_over(
                        defs.resources["restore_target"], early
                    )
                }
                if early is not None
                else None
            ),
        )
        progress["run_id"] = result.run_id
        progress["stage"] = "finishing the run"
        # the configured resource holds EnvVars; build_resources resolves them
        with dg.build_resources({"backup_store": defs.resources["backup_store"]}) as built:
            return finish_run(
                instance,
                result.run_id,
                store=built.backup_store,
                log=lambda m: print(m, file=sys.stderr),
                promote=promote,
            )


def exit_status(verdict) -> int:
    """0 verified; 1 a failure of the backup; 3 only verifier faults (module docstring)."""
    if verdict.verified:
        return EXIT_VERIFIED
    codes = {f["code"] for f in verdict.failures}
    if codes - NOT_ABOUT_THE_BACKUP:
        return EXIT_NOT_VERIFIED
    return EXIT_VERIFIER_BROKE
