"""A disposable cluster's watchdog: when the process that owns the cluster dies, however it dies
(SIGKILL included), the server is stopped and the cluster's directory removed within seconds.

`pg_ctl` daemonizes the postmaster, so nothing ties the server's life to ours (a parent-death
signal would reach pg_ctl, not the server). Instead each cluster gets a small watcher process
of its own, in its own session (a signal to our process group does not reach it), that polls
the owner every POLL_SECONDS. Once the owner is gone, the watcher stops the server (immediate)
and removes the directory, exactly as `DisposablePostgres.stop()` would, then exits. When the
directory disappears first (the owner's normal `stop()`), it exits quietly; `stop()` also ends
and reaps it.

The watcher only runs `pg_ctl stop` (as the server's OS user), a SIGKILL of the cluster's own
postmaster and a removal of the directory: nothing the restored dump could have written.

A pid can be reused: the owner is identified by its pid and its start time (/proc/<pid>/stat),
read when the watcher is spawned.

Run as `python -m busflow_verify.core.postgres.watchdog --owner PID --owner-start TICKS --root DIR
--bin-dir DIR [--run-as USER]` (`spawn` builds that command line).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from busflow_verify.core.proc import child_env, process_alive, process_start_time, stop_and_remove

POLL_SECONDS = 0.5
REAPPEAR_SECONDS = 3.0  # after the removal: a start killed mid-way may still write its directory


def spawn(root: Path, bin_dir: Path, run_as: str | None) -> subprocess.Popen:
    """Start the watcher of the cluster in `root`, owned by this process."""
    owner = os.getpid()
    argv = [
        sys.executable,
        "-m",
        "busflow_verify.core.postgres.watchdog",
        "--owner",
        str(owner),
        "--owner-start",
        str(process_start_time(owner) or ""),
        "--root",
        str(root),
        "--bin-dir",
        str(bin_dir),
    ]
    if run_as:
        argv += ["--run-as", run_as]
    package_parent = str(Path(__file__).resolve().parents[2])
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # an inherited pipe would keep a reader of ours waiting
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        cwd="/",
        env=child_env({"PYTHONPATH": package_parent}),
    )


def end(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """End a watcher whose cluster was stopped normally, and reap it."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.terminate()
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def watch(
    owner: int,
    owner_start: int | None,
    root: Path,
    bin_dir: Path,
    run_as: str | None,
    poll: float = POLL_SECONDS,
) -> str:
    """Wait for the owner to die or the cluster to go; returns which happened."""
    while True:
        if not root.exists():
            return "removed"
        if not process_alive(owner, owner_start):
            stop_and_remove(root, bin_dir, run_as)
            deadline = time.monotonic() + REAPPEAR_SECONDS
            while time.monotonic() < deadline:
                time.sleep(poll)
                if root.exists():  # an initdb or pg_ctl start the owner left running
                    stop_and_remove(root, bin_dir, run_as)
            return "owner died"
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="busflow_verify.core.postgres.watchdog")
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--owner-start", default="")
    parser.add_argument("--root", required=True)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--run-as", default=None)
    parser.add_argument("--poll", type=float, default=POLL_SECONDS)
    args = parser.parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGHUP):  # only the owner's death or SIGTERM end us
        signal.signal(signum, signal.SIG_IGN)
    watch(
        args.owner,
        int(args.owner_start) if args.owner_start else None,
        Path(args.root),
        Path(args.bin_dir),
        args.run_as,
        args.poll,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
