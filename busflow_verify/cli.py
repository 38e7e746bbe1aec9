"""`busflow-verify`: run the backup verify for one date through the Dagster definitions.

    busflow-verify verify --date YYYY-MM-DD [--json]
    busflow-verify alerts repost
    busflow-verify allowlist check --base FILE [--file FILE]

Exit status (`verify`), one rule for every way a verify can end:

    0  verified
    1  not verified: a failure of the backup itself was found (F1, F2, F3, F5, DUMP_MISSING,
       ROW_COUNT_DRIFT), whatever else went wrong alongside
    2  usage or configuration error, found before anything is launched
    3  not verified because the verifier broke: the verdict's failures are only verifier faults
       (VERIFY_JOB_ERROR, HOST_OUT_OF_SPACE, VERIFY_HOST_FAULT, with an F4 when #ops could not
       be told either): a full disk on the verify host, a crashed step, the
       run not completing, or a crash outside the job (the instance, the run, reading the
       verdict back); nothing was learnt about the backup, re-run the date once it is fixed

F4 (an undelivered #ops message) never decides the status: it leaves `verified` as it is.

A crash outside the job still ends with a verdict: JSON (`--json`) or text with one
VERIFY_JOB_ERROR naming the exception's class and first line (secret values scrubbed), the
#ops message attempted (an undelivered one is kept in the outbox), and exit status 3.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import gc
import json
import os
import re
import signal
import sys
import traceback
import warnings

from busflow_verify.core.failures import VERIFIER_FAULTS

EXIT_VERIFIED, EXIT_NOT_VERIFIED, EXIT_USAGE, EXIT_VERIFIER_BROKE = 0, 1, 2, 3

# Failures that say nothing about the backup: the verifier's and its host's (core/failures.py
# VERIFIER_FAULTS, by code: they are their own codes), and the #ops delivery (F4).
NOT_ABOUT_THE_BACKUP = VERIFIER_FAULTS | {"F4"}

# Environment variables whose values must never appear in a crash verdict or on stderr.
SECRET_VARS = (
    "SLACK_OPS_WEBHOOK",
    "SLACK_BOT_TOKEN",
    "BACKUP_SECRET_ACCESS_KEY",
    "BACKUP_FALLBACK_SECRET_ACCESS_KEY",
    "BUSFLOW_RESTORE_SERVER_PASSWORD",
)


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="busflow-verify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="verify the newest dump of one date (a partition)")
    verify.add_argument("--date", required=True, help="the dump's date, YYYY-MM-DD (UTC)")
    verify.add_argument("--json", action="store_true", help="print the JSON verdict only")
    verify.add_argument(
        "--promote",
        action="store_true",
        help="move verified-latest to this dump if it verified (only forward)",
    )
    verify.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="Dagster run log level on stderr (default INFO)",
    )
    alerts = sub.add_parser("alerts", help="#ops messages")
    alerts.add_argument(
        "action",
        choices=["repost"],
        help="repost: send the messages kept in the outbox (undelivered)",
    )
    allow = sub.add_parser("allowlist", help="soft-fk-allowlist.yaml rules (F3 step 3)")
    allow.add_argument(
        "action",
        choices=["check"],
        help="check: a raised or added tolerance needs a new justification UUID",
    )
    allow.add_argument(
        "--base",
        required=True,
        help="the earlier version of the allowlist (e.g. the target branch's)",
    )
    allow.add_argument("--file", help="the changed allowlist (default: the config folder's)")
    _add_dump_parser(sub)  # issue 19: the producer (core/store/producer.py)
    _add_status_parsers(sub)  # issue 17: status, history, the dead-man's switch
    return parser


def _add_dump_parser(sub) -> None:
    dump = sub.add_parser(
        "dump", help="pg_dump -Fc the source and write its manifest beside it, in one snapshot"
    )
    dump.add_argument(
        "--dsn",
        default=os.environ.get("BUSFLOW_SOURCE_DSN"),
        help="the source (libpq string or URI; default $BUSFLOW_SOURCE_DSN); the password may "
        "also come from PGPASSWORD",
    )
    dump.add_argument("--out", required=True, help="the dump's path, pg_dump_YYYYMMDD_HHMM.dump")
    dump.add_argument(
        "--exact-tables",
        help="comma-separated schema.table counted exactly; the others by reltuples "
        "(default: every table exactly)",
    )
    dump.add_argument("--pg-bin", help="the PostgreSQL bin dir whose pg_dump to use")
    dump.add_argument(
        "--upload",
        action="store_true",
        help="then upload both to the primary endpoint verify reads (BACKUP_* variables)",
    )


def _add_status_parsers(sub) -> None:
    status = sub.add_parser(
        "status",
        help="the pointer, the last run, the next scheduled run, F5, the outbox; evaluates the "
        "dead-man's switch (posts only when it trips or clears, as the sensor does)",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    history = sub.add_parser("history", help="one line per date: verdict, sizes, rows, failures")
    history.add_argument("--days", type=int, default=14, help="dates to show (default 14)")
    history.add_argument("--json", action="store_true", help="print JSON, one object per date")


def _status_or_history(args) -> int:
    """`status` / `history` (defs/status.py) on the instance in $DAGSTER_HOME."""
    from busflow_verify.core import config as cfg
    from busflow_verify.core.report.history import history_line, status_lines
    from busflow_verify.defs import environment

    home = environment.dagster_home()
    if not home or not os.path.isabs(home):
        raise UsageError("DAGSTER_HOME must be set to an absolute path (the instance)")
    if args.command == "history" and args.days < 1:
        raise UsageError(f"--days {args.days}: must be at least 1")
    try:
        cfg.load_verify_config(environment.config_dir())
    except cfg.ConfigError as exc:
        raise UsageError(f"configuration error: {exc}") from None
    from busflow_verify.defs import deadman, status
    from busflow_verify.defs.instance import open_instance

    def log(message):
        print(scrub(message), file=sys.stderr)

    now = dt.datetime.now(dt.timezone.utc)
    with open_instance() as instance:
        if args.command == "history":
            rows = status.history(instance, args.days, now)
            for row in rows:
                print(json.dumps(row, default=str) if args.json else history_line(row))
            if not rows and not args.json:
                print(f"no completed verify run in the last {args.days} day(s)")
            return 0
        deadman.evaluate(instance, log, now)
        report = status.status(instance, status.read_store_pointer(), now)
    text = (
        json.dumps(report, indent=2, default=str)
        if args.json
        else "\n".join(status_lines(report, now))
    )
    print(scrub(text))
    return 0


def _upload_dump(result) -> list[str]:
    """`dump --upload`: to the primary endpoint and bucket of the verify configuration."""
    import dagster as dg

    from busflow_verify.core.store.producer import upload
    from busflow_verify.defs.resources import build_resources

    with dg.build_resources({"backup_store": build_resources()["backup_store"]}) as res:
        store = res.backup_store
        return upload(store.primary.client(), store.bucket, store.prefix, result)


def _dump(args) -> int:
    from busflow_verify.core.store.producer import ProducerError, produce

    if not args.dsn:
        raise UsageError("dump: --dsn (or BUSFLOW_SOURCE_DSN) is required")
    if args.upload:
        from busflow_verify.defs import environment

        if missing := [n for n in environment.REQUIRED[:2] if not environment.is_set(n)]:
            raise UsageError(f"dump --upload: {', '.join(missing)} not set")
    listed = (
        [t.strip() for t in args.exact_tables.split(",") if t.strip()]
        if args.exact_tables
        else None
    )
    try:
        result = produce(
            args.dsn, args.out, listed, args.pg_bin, log=lambda line: print(line, file=sys.stderr)
        )
    except ProducerError as exc:
        print(f"busflow-verify dump: {exc}", file=sys.stderr)
        return 1
    uploaded = _upload_dump(result) if args.upload else []
    print(
        json.dumps(
            {
                "uploaded": uploaded,
                "dump": str(result.dump_path),
                "manifest": str(result.manifest_path),
                "size_bytes": result.manifest.size_bytes,
                "sha256": result.manifest.sha256,
                "tables": len(result.manifest.tables),
                "seconds": result.seconds,
            }
        )
    )
    return 0


def _preflight(date_text: str) -> str:
    """Everything that is a usage or configuration error, before a run is launched."""
    from busflow_verify.core import config as cfg
    from busflow_verify.defs import environment
    from busflow_verify.defs.partitions import nightly_dump_partitions

    try:
        date = dt.date.fromisoformat(date_text)
    except ValueError:
        raise UsageError(f"--date {date_text!r} is not a date (YYYY-MM-DD)") from None
    missing = environment.missing_required()
    if missing:
        raise UsageError(
            f"environment variable(s) not set: {', '.join(missing)} (see README: Configuration)"
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
    except cfg.ConfigError as exc:
        raise UsageError(f"configuration error: {exc}") from None
    key = date.isoformat()
    if not nightly_dump_partitions.has_partition_key(key):
        first = nightly_dump_partitions.get_first_partition_key()
        last = nightly_dump_partitions.get_last_partition_key()
        raise UsageError(f"--date {key} is outside the partitions {first} .. {last}")
    return key


def _terminate_as_interrupt(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so the disposable Postgres is removed on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def run_verify(partition: str, log_level: str, promote: bool = False, progress=None, early=None):
    """Run the job for one partition in process, then finish it as the sensors finish theirs
    (defs/finish.py): the verdict, the pointer (with --promote), #ops. `progress` (a dict) gets
    the run's id as soon as there is one, for the crash verdict; `early`, the cluster started
    before the run (`_start_cluster_early`), is handed to the run's restore target."""
    import dagster as dg

    from busflow_verify.definitions import build_defs
    from busflow_verify.defs.finish import LAUNCHED_BY_TAG, finish_run
    from busflow_verify.defs.instance import open_instance
    from busflow_verify.defs.resources import restore_target_taking_over
    from busflow_verify.defs.run_history import JOB_NAME
    from busflow_verify.defs.stale_runs import report_stale_runs, run_tags_for_this_process

    progress = {} if progress is None else progress
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
                store=built.backup_store if promote else None,
                log=lambda m: print(m, file=sys.stderr),
            )


def scrub(text: str) -> str:
    """`text` without the values of the secret variables (a webhook's path alone is the secret
    too) and without the path of any URL (an exception may quote a request's URL)."""
    from urllib.parse import urlsplit

    secrets = []
    for name in SECRET_VARS:
        value = os.environ.get(name) or ""
        if len(value) >= 4:
            secrets.append(value)
            path = urlsplit(value).path if "://" in value else ""
            if len(path) > 1:
                secrets.append(path)
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, "***")
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s'\"]+)/[^\s'\"]*", r"\1/***", text)


def crash_verdict(partition: str, exc: BaseException, progress: dict):
    """The verdict of a verify that broke outside the job's own handling: one VERIFY_JOB_ERROR
    naming the exception's class and first line, scrubbed."""
    from busflow_verify.core.failures import Finding
    from busflow_verify.core.verdict import Verdict

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


def finish_crash(verdict, log):
    """Tell #ops about a broken verifier (an undelivered message stays in the outbox)."""
    from busflow_verify.defs import environment
    from busflow_verify.defs.finish import alert_ops

    try:
        return alert_ops(verdict, environment.dagster_home(), log)
    except Exception as exc:  # nothing more to try: the verdict is still printed
        log(f"busflow-verify: the #ops message could not be sent or kept: {type(exc).__name__}")
        return verdict


def exit_status(verdict) -> int:
    """0 verified; 1 a failure of the backup; 3 only verifier faults (module docstring)."""
    if verdict.verified:
        return EXIT_VERIFIED
    codes = {f["code"] for f in verdict.failures}
    if codes - NOT_ABOUT_THE_BACKUP:
        return EXIT_NOT_VERIFIED
    return EXIT_VERIFIER_BROKE


def verify(args) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return _verify(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        if target_kind(os.environ) == "ephemeral":
            return EarlyCluster.start()
    except (ValueError, ConfigError):
        pass  # _preflight names it
    return None


def _verify_date(args, early=None) -> int:
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


def repost() -> int:
    from busflow_verify.defs.alerts import alert_settings

    channel, outbox, policy = alert_settings()
    if channel is None:
        raise UsageError(
            "SLACK_OPS_WEBHOOK (or SLACK_BOT_TOKEN and SLACK_OPS_CHANNEL) is not "
            "set: nothing can be reposted"
        )
    results = outbox.repost(channel, policy)
    for r in results:
        state = (
            "delivered" if r["delivered"] else f"NOT delivered (HTTP {r['status']}, {r['error']})"
        )
        print(f"{r['partition']}  {r['file']}  {state}  after {r['attempts']} attempt(s)")
    print(f"{sum(r['delivered'] for r in results)} of {len(results)} pending message(s) delivered")
    return 0 if all(r["delivered"] for r in results) else 1


def check_allowlist(base: str, current: str | None) -> int:
    from busflow_verify.core import config as cfg
    from busflow_verify.core.checks.allowlist_rule import unjustified_changes
    from busflow_verify.defs import environment

    path = current or str(environment.config_dir() / cfg.ALLOWLIST_FILE)
    try:
        problems = unjustified_changes(cfg.load_allowlist_file(base), cfg.load_allowlist_file(path))
    except cfg.ConfigError as exc:
        raise UsageError(f"configuration error: {exc}") from None
    for problem in problems:
        print(f"{path}: {problem}")
    if problems:
        print(
            "Never blanket-raise a soft-FK tolerance: add the tenant_scrub_logs UUIDs that "
            "justify it (runbook F3 step 3)."
        )
        return 1
    print(f"{path}: every raised or added tolerance is justified by a new scrub-log UUID")
    return 0


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, a usage error 2
        return int(exc.code or 0)
    try:
        if args.command == "allowlist":
            return check_allowlist(args.base, args.file)
        if args.command == "dump":
            return _dump(args)
        if args.command in ("status", "history"):
            return _status_or_history(args)
        if args.command == "alerts":
            from busflow_verify.defs import environment

            if not environment.dagster_home():
                raise UsageError("DAGSTER_HOME is not set (the outbox lives there)")
            return repost()
        return verify(args)
    except UsageError as exc:
        print(f"busflow-verify: {exc}", file=sys.stderr)
        return EXIT_USAGE


def entry() -> None:
    """The `busflow-verify` command: `main`, then exit without the interpreter's teardown.

    By then everything is done (the run recorded, the restore target removed, the verdict
    printed and flushed); what teardown would add is Python freeing Dagster's import graph
    object by object, about 1.5 s per command on 2 cores (bench/verify_bench.py). The atexit
    handlers (logging's flush among them) still run.
    """
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
