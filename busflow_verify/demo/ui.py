"""`make ui`: the Dagster UI on the demo's data, until Ctrl-C.

Builds `.demo` as `make demo` does (a week of dumps, two baselines, the newest date verified and a
planted F3), keeps the demo's S3 server up so runs can also be launched from the UI, and runs
`dagster dev -w workspace.yaml` on loopback with DAGSTER_HOME=.demo/dagster_home. Ctrl-C (or
SIGTERM) shuts Dagster down and then stops the S3 server.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from busflow_verify.demo.__main__ import build, served, verify_demo_dates

REPO = Path(__file__).resolve().parents[2]
SHUTDOWN_SECONDS = 60


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: Dagster, then the S3 server


def dagster_dev(port: int) -> subprocess.Popen:
    """In its own session, so a Ctrl-C reaches it once, from us, and it shuts down in order
    (webserver, daemon, code server) instead of every process at once."""
    dagster = Path(sys.executable).parent / "dagster"
    return subprocess.Popen(
        [
            str(dagster),
            "dev",
            "-w",
            str(REPO / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        start_new_session=True,
    )


def hold_restore_pool_in(home: Path) -> None:
    """One run that restores at a time from the first queue pass on (defs/jobs.py)."""
    import dagster as dg

    from busflow_verify.defs.jobs import hold_restore_pool

    with dg.DagsterInstance.from_config(str(home)) as instance:
        hold_restore_pool(instance)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=SHUTDOWN_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of its session that outlived it
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000, help="loopback port (default 3000)")
    port = parser.parse_args(argv).port
    # A shell's background job starts with SIGINT ignored, and dagster dev would inherit that
    # (and map SIGTERM to it): Ctrl-C and SIGTERM must reach both.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    demo = build(Path.cwd() / ".demo")
    with served(demo):
        verify_demo_dates(demo)
        print(
            f"\nDagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={demo.home}). Look at: "
            "Lineage (the five stages), an asset's Checks tab -> Partitions -> "
            f"{demo.planted} (the planted F3), orphan_report's metadata tables. "
            "Ctrl-C stops it and the S3 server.\n",
            flush=True,
        )
        hold_restore_pool_in(demo.home)
        proc = dagster_dev(port)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
