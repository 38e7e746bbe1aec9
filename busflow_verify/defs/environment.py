"""The environment, read in one place (docs/deploying.md: Configuration).

Every variable of the contract is read here and handed to the rest as values: core/ takes
values, never os.environ. The few other readers, each for a reason of its own, are listed in
docs/architecture.md (Where the environment is read). Secrets become `dg.EnvVar`s, so the UI and the event
log show their names, never their values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from busflow_verify.core import config as cfg
from busflow_verify.core.report.alerts import Links
from busflow_verify.core.targets import settings as targets

REQUIRED = ("BACKUP_PRIMARY_ENDPOINT", "BACKUP_BUCKET", "DAGSTER_HOME")  # by the CLI
WEBHOOK = "SLACK_OPS_WEBHOOK"
BOT_TOKEN, CHANNEL, API_URL = "SLACK_BOT_TOKEN", "SLACK_OPS_CHANNEL", "SLACK_API_URL"
# a PEM file of the Ed25519 public keys the producer's manifest signature must verify with
MANIFEST_PUBLIC_KEY = "BUSFLOW_MANIFEST_PUBLIC_KEY"


def is_set(name: str) -> bool:
    return bool(os.environ.get(name))


def env_var_or(name: str, default=None):
    """An EnvVar when the variable is set (its value is resolved at run time and never shown in
    the UI), else the default."""
    return dg.EnvVar(name) if is_set(name) else default


def missing_required() -> list[str]:
    return [name for name in REQUIRED if not is_set(name)]


def dagster_home() -> str | None:
    return os.environ.get("DAGSTER_HOME") or None


def config_dir() -> Path:
    """BUSFLOW_VERIFY_CONFIG_DIR, or the shipped config/backup-verify."""
    return cfg.config_dir(os.environ.get(cfg.CONFIG_DIR_ENV))


def manifest_public_key() -> str | None:
    """BUSFLOW_MANIFEST_PUBLIC_KEY: the public key file, or None (signatures not checked)."""
    return os.environ.get(MANIFEST_PUBLIC_KEY) or None


def restore_kind() -> str:
    """BUSFLOW_RESTORE_TARGET and its variables, checked (a ConfigError names the variable)."""
    return targets.target_kind(os.environ)


def restore_host() -> str:
    """What this deployment restores on: the value of the job's `busflow/restore_host` tag."""
    return targets.restore_host(os.environ)


def number(name: str, default, cast=int):
    return targets.env_number(name, default, cast, os.environ)


@dataclass(frozen=True)
class SlackSettings:
    """Where #ops messages go: the incoming webhook, else a bot token and a channel. The
    webhook and the token are secrets: kept out of repr."""

    webhook: str | None = field(default=None, repr=False)
    bot_token: str | None = field(default=None, repr=False)
    channel: str | None = None
    api_url: str | None = None  # a Slack-compatible API elsewhere (and the tests)


def slack() -> SlackSettings:
    return SlackSettings(
        os.environ.get(WEBHOOK) or None,
        os.environ.get(BOT_TOKEN) or None,
        os.environ.get(CHANNEL) or None,
        os.environ.get(API_URL) or None,
    )


EVIDENCE_SIGNING_KEY = "BUSFLOW_EVIDENCE_SIGNING_KEY"  # a secret: PEM text or a PEM file's path
EVIDENCE_PUBLIC_KEY = "BUSFLOW_EVIDENCE_PUBLIC_KEY"  # PEM text or a file: one or more keys
UI_BASE_URL, RUNBOOK_URL = "BUSFLOW_UI_BASE_URL", "BUSFLOW_RUNBOOK_URL"


def evidence_signing_key() -> str | None:
    """The value of BUSFLOW_EVIDENCE_SIGNING_KEY (a secret: handed only to
    core/report/signing.py `load_signing_key`), or None when evidence is not signed here."""
    return os.environ.get(EVIDENCE_SIGNING_KEY) or None


def evidence_public_keys() -> str | None:
    """The value of BUSFLOW_EVIDENCE_PUBLIC_KEY: the public keys `evidence verify` trusts."""
    return os.environ.get(EVIDENCE_PUBLIC_KEY) or None


def links() -> Links:
    """Where #ops messages link: the Dagster UI (its run pages) and the runbook (its sections)."""
    return Links(
        (os.environ.get(UI_BASE_URL) or "").rstrip("/") or None,
        os.environ.get(RUNBOOK_URL) or None,
    )
