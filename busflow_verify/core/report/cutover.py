"""F5 step 2's cutover halt: with both endpoints down, cutover work halts until a verified dump
exists again."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any


class CutoverHalt:
    """F5 step 2: with both endpoints down, cutover work halts until a verified dump exists.

    Kept beside the Dagster instance (the buckets are what is unreachable); set by the run that
    found both endpoints down, shown in every verdict and #ops message while it stands, cleared
    by the next promotion of a verified dump.
    """

    FILE = "busflow-cutover-halt.json"

    def __init__(self, home: str | Path):
        self.path = Path(home) / self.FILE

    def set(self, reason: str, run_id: str | None) -> None:
        if self.path.exists():
            return  # keep the first: since when cutover has been halted
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "reason": reason,
                    "run_id": run_id,
                }
            )
        )
        tmp.rename(self.path)

    def get(self) -> dict[str, Any] | None:
        return json.loads(self.path.read_text()) if self.path.exists() else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
