"""`busflow-verify allowlist check`: runbook F3 step 3, for pull requests."""

from __future__ import annotations

from busflow_verify.cli.parser import UsageError
from busflow_verify.core import config as cfg
from busflow_verify.core.checks.allowlist_rule import unjustified_changes
from busflow_verify.defs import environment


def check(args) -> int:
    """A raised or added tolerance of the allowlist (`--file`, default the config folder's) over
    `--base` needs a new justification UUID: 0 when every one has it, else 1."""
    path = args.file or str(environment.config_dir() / cfg.ALLOWLIST_FILE)
    try:
        problems = unjustified_changes(
            cfg.load_allowlist_file(args.base), cfg.load_allowlist_file(path)
        )
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
