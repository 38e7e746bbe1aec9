"""`busflow-verify`, the command line. Its commands, options and exit codes: cli/parser.py.

Each command is in its own module, imported only when that command runs: Dagster and the code
location take about 1.6 s to import, which `--help` does not wait for and `verify` overlaps
with starting its disposable cluster (cli/verify.py).
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import warnings

from busflow_verify.cli.parser import EXIT_USAGE, UsageError, build_parser

# Each command's module in this package and the function that runs it, given the parsed args.
COMMANDS = {
    "verify": ("verify", "verify"),
    "status": ("status", "status"),
    "history": ("status", "history"),
    "alerts": ("alerts", "repost"),
    "allowlist": ("allowlist", "check"),
    "evidence": ("evidence", "evidence"),
    "dump": ("dump", "dump"),
}


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, a usage error 2
        return int(exc.code or 0)
    module, function = COMMANDS[args.command]
    run = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    try:
        return run(args)
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
