"""Dump object names: `<prefix>pg_dump_YYYYMMDD_HHMM.dump`, the date being the partition (UTC)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_NAME = re.compile(r"^pg_dump_(\d{8})_(\d{4})\.dump$")


@dataclass(frozen=True, order=True)
class DumpName:
    taken_at: dt.datetime  # UTC, from the name
    key: str

    @property
    def date(self) -> dt.date:
        return self.taken_at.date()


def parse_dump_key(key: str, prefix: str = "") -> DumpName | None:
    """The DumpName for a key under prefix, or None when it is not a nightly dump's name."""
    if not key.startswith(prefix):
        return None
    match = _NAME.match(key[len(prefix) :])
    if not match:
        return None
    try:
        taken = dt.datetime.strptime(match[1] + match[2], "%Y%m%d%H%M")
    except ValueError:  # 20261399_2561 and friends
        return None
    return DumpName(taken_at=taken.replace(tzinfo=dt.timezone.utc), key=key)


def day_prefix(prefix: str, date: dt.date) -> str:
    """The listing prefix that selects every dump of one date."""
    return f"{prefix}pg_dump_{date:%Y%m%d}_"


def dump_key(prefix: str, taken_at: dt.datetime) -> str:
    return f"{prefix}pg_dump_{taken_at:%Y%m%d_%H%M}.dump"
