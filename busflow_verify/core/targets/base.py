"""What every restore target shares (runbook step 3): an empty database to restore into
(`open`: a RestoreDatabase owned by an unprivileged restore role, core/postgres/privilege.py),
local scratch space for the download, the PostgreSQL client binaries, and `close`, which removes
what the target made. The three targets: targets/ephemeral.py, server.py, docker.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import psycopg

from busflow_verify.core.diskspace import SpaceNeed
from busflow_verify.core.postgres import watchdog
from busflow_verify.core.postgres.cluster import OWNER_FILE, SCRATCH_PREFIX, ConnInfo, find_bin_dir
from busflow_verify.core.postgres.privilege import RestoreDatabase
from busflow_verify.core.postgres.servers import Choice

RESTORED_DB = "restored"  # the database name in a cluster or container of our own


class RestoreTargetError(RuntimeError):
    """The restore target could not be prepared or reached; the message says what to fix."""


class RestoreTargetNotReady(RestoreTargetError):
    """The restore container did not accept connections in time."""


class Target:
    """What the three targets share: bin dir, local scratch space, a logger."""

    kind = ""

    def __init__(self, bin_dir: str | None = None, scratch_base: str | None = None, log=None):
        self.bin_dir = find_bin_dir(bin_dir)
        self._scratch_base = scratch_base
        self._scratch: Path | None = None
        self._scratch_watchdog = None
        self.log = log or logging.getLogger(__name__)

    def scratch_dir(self) -> Path:
        """Local space for the download, removed by `close`."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=self._scratch_base))
            # owned like a cluster: a run killed outright has it removed by its watchdog within
            # seconds (core/postgres/watchdog.py: no postmaster there, so only the removal), or else by
            # the next run's sweep
            (self._scratch / OWNER_FILE).write_text(json.dumps({"pid": os.getpid()}))
            self._scratch_watchdog = watchdog.spawn(self._scratch, self.bin_dir, None)
        return self._scratch

    def _remove_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
            watchdog.end(self._scratch_watchdog)
            self._scratch_watchdog = None

    def prepare(self) -> None:
        """Begin making the target while the run's first steps go; nothing to do here."""

    def select_server(self, needs: dict) -> Choice | None:
        """The server to restore a dump with; None: the target's own (a restore server, the
        restore image), which the run does not choose."""
        return None

    # where the restored database's bytes go, and whose disk that is (core/hostfaults.py)
    data_host = "the restore server"

    def data_path(self) -> Path | None:
        """The local path the restored database is written under; None when not on this host."""
        return None

    def space_needs(self, dump_bytes: int, restored_bytes: int) -> list[SpaceNeed]:
        """What this target needs on the verify host (core/diskspace.py): the download."""
        return [SpaceNeed(self.scratch_dir(), dump_bytes, "the downloaded dump")]

    def open(self, partition: str, run_id: str, choice: Choice | None = None) -> RestoreDatabase:
        """The empty database of this run, owned by its restore role."""
        raise NotImplementedError

    def close(self) -> None:
        """Remove what the target made for the run (also after a failed run)."""
        raise NotImplementedError


def server_major(target: ConnInfo) -> int:
    with psycopg.connect(**target.kwargs(), connect_timeout=10) as conn:
        return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
