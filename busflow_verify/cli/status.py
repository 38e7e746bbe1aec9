"""`busflow-verify status` and `history` (defs/status.py) on the instance in $DAGSTER_HOME."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

from busflow_verify.cli.parser import UsageError
from busflow_verify.cli.scrub import scrub
from busflow_verify.core import config as cfg
from busflow_verify.core.report import openmetrics
from busflow_verify.core.report.history import history_line, status_lines
from busflow_verify.defs import environment
from busflow_verify.defs import status as report
from busflow_verify.defs.instance import open_instance


def status(args) -> int:
    """The pointer, the runs, F5, the outbox; the dead-man's switch evaluated (and told)."""
    config = _require_instance_and_config()

    def log(message):
        print(scrub(message), file=sys.stderr)

    now = dt.datetime.now(dt.timezone.utc)
    with open_instance() as instance:
        state = report.status(instance, report.read_store_pointer(), now, config, log)
    if args.openmetrics:
        text = openmetrics.render(state, now).rstrip("\n")
    elif args.json:
        text = json.dumps(state, indent=2, default=str)
    else:
        text = "\n".join(status_lines(state, now))
    print(scrub(text))
    return 0


def history(args) -> int:
    """One line (or JSON object) per date of the last `--days`."""
    _require_instance_and_config(days=args.days)
    now = dt.datetime.now(dt.timezone.utc)
    with open_instance() as instance:
        window = report.history_window(instance, args.days, now)
    for row in window.rows:
        print(json.dumps(row, default=str) if args.json else history_line(row))
    note = outside_window(window, args.days)
    if note:  # with --json, stdout stays one object per line
        print(note, file=sys.stderr if args.json else sys.stdout)
    return 0


def outside_window(window: report.History, days: int) -> str | None:
    """What `history` says when the window is empty, or dates before it have completed runs."""
    head = "" if window.rows else f"no completed verify run in the last {days} day(s)"
    if not window.older:
        return head or None
    older = (
        f"{len(window.older)} older date(s) have one (the newest {window.older[0]}, the oldest "
        f"{window.older[-1]}): --days {window.days_for_all} shows them"
    )
    return f"{head}; {older}" if head else f"and {older}"


def _require_instance_and_config(days: int | None = None) -> cfg.VerifyConfig:
    home = environment.dagster_home()
    if not home or not os.path.isabs(home):
        raise UsageError("DAGSTER_HOME must be set to an absolute path (the instance)")
    if days is not None and days < 1:
        raise UsageError(f"--days {days}: must be at least 1")
    try:
        return cfg.load_verify_config(environment.config_dir())
    except cfg.ConfigError as exc:
        raise UsageError(f"configuration error: {exc}") from None
