"""Nothing outlives the run (issue 16, point 5): a disposable Postgres stops within seconds when
its owner dies, kill -9 included, and the run it was left in is failed and told by the next one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from busflow_verify.core import proc as procs
from busflow_verify.core.postgres import watchdog
from busflow_verify.core.postgres.cluster import (
    DIR_PREFIX,
    OWNER_FILE,
    SCRATCH_PREFIX,
    DisposablePostgres,
)
from busflow_verify.core.proc import pid_alive

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"
GONE_WITHIN = 15.0

_OWNER = """
import json, time
from busflow_verify.core.postgres.cluster import DisposablePostgres
pg = DisposablePostgres().start()
postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
print(json.dumps({"root": str(pg.root), "postmaster": postmaster, "watchdog": pg._watchdog.pid}),
      flush=True)
time.sleep(600)
"""


def _wait_until(condition, timeout: float, step: float = 0.05) -> float | None:
    """Seconds until `condition()` held, or None when it did not within `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(step)
    return None


def _processes_in(root: Path) -> list[int]:
    """Processes whose command line names `root` (a server, pg_restore, a watchdog)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(root) in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.e2e
def test_a_cluster_whose_owner_is_killed_stops_within_seconds():
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        started = json.loads(owner.stdout.readline())
    finally:
        owner.kill()  # SIGKILL: no handler, no atexit, no stop()
        owner.wait()
    root, postmaster = Path(started["root"]), started["postmaster"]
    took = _wait_until(
        lambda: not pid_alive(postmaster) and not root.exists(), GONE_WITHIN, step=0.1
    )
    assert took is not None, f"postgres {postmaster} or {root} outlived its owner"
    assert _wait_until(lambda: _processes_in(root) == [], 5) is not None, _processes_in(root)
    assert _wait_until(lambda: not pid_alive(started["watchdog"]), 5) is not None
    owner.stdout.close()


@pytest.mark.e2e
def test_a_normal_stop_removes_the_cluster_and_ends_its_watchdog():
    pg = DisposablePostgres().start()
    root, proc = pg.root, pg._watchdog
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    assert proc is not None and proc.poll() is None
    pg.stop()
    assert not root.exists() and not pid_alive(postmaster)
    assert proc.returncode is not None  # ended and reaped by stop(), not left to exit later
    assert not pid_alive(proc.pid)
    assert pg._watchdog is None


def test_the_watchdog_exits_quietly_when_its_cluster_is_removed(tmp_path):
    root = tmp_path / (DIR_PREFIX + "gone")
    root.mkdir()
    start = procs.process_start_time(os.getpid())
    proc = watchdog.spawn(root, Path("/nonexistent/bin"), None)
    time.sleep(0.3)
    assert proc.poll() is None  # its owner (we) is alive: it keeps watching
    root.rmdir()
    assert proc.wait(timeout=5) == 0
    assert procs.process_alive(os.getpid(), start)


def test_a_reused_pid_is_not_the_owner():
    start = procs.process_start_time(os.getpid())
    assert start is not None
    assert procs.process_alive(os.getpid(), start)
    assert not procs.process_alive(os.getpid(), start + 1)  # a later process, same pid
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    assert not procs.process_alive(dead.pid)


def _owned_by(pid: int, prefix: str) -> list[Path]:
    """The run's folders (clusters or scratch) under TMPDIR, by their owner file."""
    found = []
    for root in Path(tempfile.gettempdir()).glob(prefix + "*"):
        try:
            if json.loads((root / OWNER_FILE).read_text())["pid"] == pid:
                found.append(root)
        except (OSError, ValueError, KeyError):
            continue
    return found


def _cluster_of(pid: int) -> Path | None:
    return next(iter(_owned_by(pid, DIR_PREFIX)), None)


def _restoring_into(root: Path) -> bool:
    return any(
        "pg_restore" in (Path("/proc") / str(p) / "cmdline").read_bytes().decode(errors="replace")
        for p in _processes_in(root)
        if (Path("/proc") / str(p)).exists()
    )


@pytest.mark.e2e
def test_kill_9_mid_restore_leaves_no_postgres_and_the_next_run_reports_it(
    harness, make_dump, slack
):
    """The CLI killed -9 while pg_restore runs: within 15 s no postgres (nor pg_restore) of the
    run is left and its directory is gone; the next run's sweep marks the run failed and posts
    its VERIFY_JOB_ERROR to #ops once."""
    from busflow_verify.defs.run_history import JOB_NAME, verdict_for_run
    from busflow_verify.defs.stale_runs import report_stale_runs

    harness.put(KEY, make_dump(bookings=150_000, messages=450_000, legs=200_000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "busflow_verify.cli", "verify", "--date", DAY, "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    try:
        assert _wait_until(lambda: _cluster_of(proc.pid) is not None, 60) is not None
        root = _cluster_of(proc.pid)
        assert _wait_until(lambda: _restoring_into(root), 60, step=0.02) is not None, (
            "the run never reached pg_restore"
        )
        postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
        [scratch] = _owned_by(proc.pid, SCRATCH_PREFIX)  # the downloaded dump's folder
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    took = _wait_until(
        lambda: (
            not pid_alive(postmaster)
            and not root.exists()
            and not scratch.exists()
            and not _processes_in(root)
        ),
        GONE_WITHIN,
        step=0.1,
    )
    assert took is not None, (
        f"left behind: {_processes_in(root)}, dir exists: {root.exists()}, "
        f"scratch exists: {scratch.exists()}"
    )
    print(f"no postgres left {took:.1f} s after kill -9")

    # the run stayed STARTED: the CLI tags its runs with its pid, so the next run sees it died
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs(dg.RunsFilter(job_name=JOB_NAME))
        assert run.status == dg.DagsterRunStatus.STARTED
        assert report_stale_runs(instance, print) == [run.run_id]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        verdict = verdict_for_run(instance, run.run_id)
        assert not verdict.verified
        (failure,) = verdict.failures
        assert failure["code"] == "VERIFY_JOB_ERROR"
        assert "the verify process died (pid" in failure["summary"]
        assert "during step" in failure["summary"]
        assert len(slack.posts) == 1 and "VERIFY_JOB_ERROR" in slack.texts()[0]
        assert report_stale_runs(instance, print) == []
        assert len(slack.posts) == 1  # told once
