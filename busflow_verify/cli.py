"""`busflow-verify`: run the backup verify for one date through the Dagster definitions.

    busflow-verify verify --date YYYY-MM-DD [--json]
    busflow-verify alerts repost
    busflow-verify allowlist check --base FILE [--file FILE]

Exit status: 0 verified, 1 not verified (a failure was found), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import warnings

EXIT_VERIFIED, EXIT_NOT_VERIFIED, EXIT_USAGE = 0, 1, 2


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
    return parser


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


def run_verify(partition: str, log_level: str, promote: bool = False):
    """Run the job for one partition in process, then finish it as the sensors finish theirs
    (defs/finish.py): the verdict, the pointer (with --promote), #ops."""
    import dagster as dg

    from busflow_verify.definitions import build_defs
    from busflow_verify.defs.finish import LAUNCHED_BY_TAG, finish_run
    from busflow_verify.defs.run_history import JOB_NAME
    from busflow_verify.defs.stale_runs import report_stale_runs, run_tags_for_this_process

    defs = build_defs()
    job = defs.resolve_job_def(JOB_NAME)
    with dg.DagsterInstance.get() as instance:
        try:  # runs of this host whose process died: failed, and reported to #ops once
            report_stale_runs(instance, log=lambda m: print(m, file=sys.stderr))
        except Exception as exc:  # a failed sweep must not block today's verify
            print(f"stale-run sweep failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        result = job.execute_in_process(
            partition_key=partition,
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            tags={LAUNCHED_BY_TAG: "cli", **run_tags_for_this_process()},
        )
        # the configured resource holds EnvVars; build_resources resolves them
        with dg.build_resources({"backup_store": defs.resources["backup_store"]}) as built:
            return finish_run(
                instance,
                result.run_id,
                store=built.backup_store if promote else None,
                log=lambda m: print(m, file=sys.stderr),
            )


def verify(args) -> int:
    from busflow_verify.core.verdict import format_verdict

    partition = _preflight(args.date)
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        # stdout carries only the verdict; Dagster's own output goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            verdict = run_verify(partition, args.log_level, args.promote)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(
        json.dumps(verdict.to_json(), indent=2, default=str)
        if args.json
        else format_verdict(verdict)
    )
    return EXIT_VERIFIED if verdict.verified else EXIT_NOT_VERIFIED


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
    from busflow_verify.core.allowlist_rule import unjustified_changes
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
