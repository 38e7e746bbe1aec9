"""Process tools every other module stands on: the environment a child process may inherit,
whether a process still runs (and is still the one that started then), running a command in its
own process group, and stopping and removing a cluster's directory.

Nothing here knows about restores or Dagster; the watchdog (its own process) and the stale-run
check of the Dagster layer use it as much as the disposable cluster does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

# What a child process (initdb, the server, pg_restore, psql) may inherit from the job: the job's
# environment holds the backup store's keys and the #ops webhook, and a restored dump's code runs
# inside the server. Everything else is dropped; a password is added only where one is needed.
CHILD_ENV_NAMES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PGCONNECT_TIMEOUT",
        "PGAPPNAME",
        "PGTZ",
        "PGCLIENTENCODING",
        "PGTARGETSESSIONATTRS",
    }
)
CHILD_ENV_PREFIXES = ("LC_", "PGSSL", "PGGSS")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: the allow-listed variables of ours, plus `extra`."""
    kept = {
        k: v
        for k, v in os.environ.items()
        if k in CHILD_ENV_NAMES or k.startswith(CHILD_ENV_PREFIXES)
    }
    return {**kept, **(extra or {})}


def pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped by init) is not alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or
    None when it cannot be read (no such process, no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """True while the process `pid` runs (a zombie does not) and, when `start_time` is given, is
    still the process that started then (not a later one given the same pid)."""
    if pid <= 0 or not pid_alive(pid):
        return False
    if start_time is None:
        return True
    now = process_start_time(pid)
    return now is None or now == start_time


def run_in_own_group(argv: list[str]) -> tuple[int, str]:
    """Run a command in its own process group; if we are interrupted, kill the whole group.

    `runuser` does not pass SIGKILL on to initdb, so killing only our direct child would leave
    initdb writing into a directory that is being removed.
    """
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=child_env(),
    )
    try:
        _, stderr = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc.returncode, stderr


def stop_and_remove(root: Path, bin_dir: Path, run_as: str | None) -> None:
    """Stop the server whose data directory is `root`/data, if one runs there (immediate), and
    remove `root` with everything in it."""
    data = root / "data"
    pidfile = data / "postmaster.pid"
    if pidfile.exists():
        argv = [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        if run_as:
            argv = ["runuser", "-u", run_as, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, env=child_env())
        if proc.returncode != 0:  # pg_ctl could not stop it: kill the postmaster directly
            try:
                pid = int(pidfile.read_text().split()[0])
                if is_postmaster_of(pid, data):
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
    for _ in range(5):  # a process killed a moment ago may still be letting go of its files
        shutil.rmtree(root, ignore_errors=True)
        if not root.exists():
            break
        time.sleep(0.1)


def is_postmaster_of(pid: int, data: Path) -> bool:
    """Is `pid` a server running in `data`? The pid file is the server's, writable by whatever a
    restored dump runs in it: never SIGKILL (as root, maybe) a pid it names without checking that
    the process is this cluster's (the postmaster's working directory is its data directory)."""
    try:
        return pid > 1 and Path(os.readlink(f"/proc/{pid}/cwd")) == data.resolve()
    except OSError:
        return False
