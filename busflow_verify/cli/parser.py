"""The command line: every command and its options, the exit codes, and the usage error.
Nothing here imports Dagster (cli/__init__.py says why)."""

from __future__ import annotations

import argparse
import os

EXIT_VERIFIED, EXIT_NOT_VERIFIED, EXIT_USAGE, EXIT_VERIFIER_BROKE = 0, 1, 2, 3

DESCRIPTION = """\
Restore the nightly pg_dump of Busflow's database into a disposable PostgreSQL
and verify it (runbook F1-F5), through the same Dagster definitions as the UI."""
EPILOG = """\
exit status (verify; the other commands: 0 done, 1 failed, 2 usage error):
  0  verified
  1  not verified: the backup failed (F1-F3, F5, DUMP_MISSING, ROW_COUNT_DRIFT)
  2  usage or configuration error, found before anything is launched
  3  not verified: the verifier or its host broke; fix it and re-run the date

A command's options: busflow-verify COMMAND --help. Reference: README.md, docs/.
"""


class UsageError(Exception):
    """A usage or configuration error, found before anything is launched: exit 2."""


def build_parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="busflow-verify",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    commands = main.add_subparsers(
        dest="command", required=True, title="commands", metavar="COMMAND"
    )
    _add_verify(commands)
    _add_status_and_history(commands)
    _add_alerts_and_allowlist(commands)
    _add_evidence(commands)
    _add_dump(commands)
    return main


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """The epilog as written; each command's help on its own line on an 80-column terminal,
    the commands listed under their title without argparse's line of the COMMAND metavar."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=16)

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            actions = action._get_subactions()
        else:
            actions = [action]
        format_one = super()._format_action
        return "".join(format_one(a) for a in actions)


def _add_verify(commands) -> None:
    verify = commands.add_parser("verify", help="verify the newest dump of one date (a partition)")
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


def _add_status_and_history(commands) -> None:
    status = commands.add_parser(
        "status",
        help="the pointer, the runs, F5, the outbox, the dead-man's switch",
        description="The pointer, the last run, the next scheduled run, F5, the outbox; "
        "evaluates the dead-man's switch (posts only when it trips or clears, as the sensor "
        "does).",
    )
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print JSON")
    shown.add_argument(
        "--openmetrics",
        action="store_true",
        help="print the state as OpenMetrics text (a textfile collector, a cron'd scrape)",
    )
    history = commands.add_parser(
        "history", help="one line per date: verdict, sizes, rows, failures"
    )
    history.add_argument("--days", type=int, default=14, help="dates to show (default 14)")
    history.add_argument("--json", action="store_true", help="print JSON, one object per date")


def _add_alerts_and_allowlist(commands) -> None:
    alerts = commands.add_parser("alerts", help="repost: send the #ops messages of the outbox")
    alerts.add_argument(
        "action",
        choices=["repost"],
        help="repost: send the messages kept in the outbox (undelivered)",
    )
    allow = commands.add_parser(
        "allowlist", help="check: soft-fk-allowlist.yaml's changes justified (F3)"
    )
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


def _add_evidence(commands) -> None:
    evidence = commands.add_parser(
        "evidence",
        help="verify | list | write: the signed evidence of verify runs",
        description="verify: check a date's evidence (signature with BUSFLOW_EVIDENCE_PUBLIC_KEY, "
        "statement, chain, the dump now): exit 0 when it holds, 1 with the reason. list: the "
        "date's evidence objects. write: (re)write a completed run's evidence "
        "(BUSFLOW_EVIDENCE_SIGNING_KEY), or every pending one.",
    )
    evidence.add_argument("action", choices=["verify", "list", "write"])
    evidence.add_argument("--date", help="the partition, YYYY-MM-DD (UTC)")
    evidence.add_argument("--run", help="one run's evidence (default: the date's newest)")
    evidence.add_argument(
        "--pending", action="store_true", help="write: every run whose evidence is pending"
    )
    evidence.add_argument("--json", action="store_true", help="print JSON")


def _add_dump(commands) -> None:
    dump = commands.add_parser(
        "dump",
        help="the producer: pg_dump -Fc the source, its manifest beside it",
        description="pg_dump -Fc the source and write its manifest beside it, in one snapshot.",
    )
    dump.add_argument(
        "--dsn",
        # os.environ itself: defs/environment.py imports Dagster, which --help must not wait for
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
        "--signing-key",
        metavar="FILE",
        help="an Ed25519 private key (PEM, PKCS#8: openssl genpkey -algorithm ed25519): sign the "
        "manifest, writing <name>.manifest.json.sig beside it",
    )
    dump.add_argument(
        "--no-fingerprints",
        action="store_true",
        help="count only: no content fingerprint per table (older manifests' form)",
    )
    dump.add_argument(
        "--upload",
        action="store_true",
        help="then upload both to the primary endpoint verify reads (BACKUP_* variables)",
    )
