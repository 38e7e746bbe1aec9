"""Secret values kept out of what the CLI prints: a crash verdict, a traceback, `status`."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

# Environment variables whose values must never appear in a crash verdict or on stderr.
SECRET_VARS = (
    "SLACK_OPS_WEBHOOK",
    "SLACK_BOT_TOKEN",
    "BACKUP_SECRET_ACCESS_KEY",
    "BACKUP_FALLBACK_SECRET_ACCESS_KEY",
    "BUSFLOW_RESTORE_SERVER_PASSWORD",
    "BUSFLOW_EVIDENCE_SIGNING_KEY",
)


def scrub(text: str) -> str:
    """`text` without the values of the secret variables (a webhook's path alone is the secret
    too) and without the path of any URL (an exception may quote a request's URL)."""
    secrets = []
    for name in SECRET_VARS:
        # os.environ itself: scrubbing must work when importing Dagster (and with it
        # defs/environment.py) is what broke
        value = os.environ.get(name) or ""
        if len(value) >= 4:
            secrets.append(value)
            path = urlsplit(value).path if "://" in value else ""
            if len(path) > 1:
                secrets.append(path)
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, "***")
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s'\"]+)/[^\s'\"]*", r"\1/***", text)
