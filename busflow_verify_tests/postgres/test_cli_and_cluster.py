"""Usage and configuration errors (exit 2), and the disposable cluster's whole life."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

from busflow_verify import cli
from busflow_verify.core.postgres.cluster import (
    DIR_PREFIX,
    OWNER_FILE,
    DisposablePostgres,
)
from busflow_verify.core.proc import pid_alive
from busflow_verify.core.targets.ephemeral import EarlyCluster, EphemeralTarget

DAY = "2026-11-20"
KEY = "pg_dump_20261120_0100.dump"


def run_cli(capsys, *argv):
    capsys.readouterr()
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.e2e
def test_bad_date_is_a_usage_error(harness, capsys):
    code, out, err = run_cli(capsys, "verify", "--date", "2026-11-31", "--json")
    assert code == 2 and out == ""
    assert "--date '2026-11-31' is not a date" in err


@pytest.mark.e2e
def test_date_outside_partitions_is_a_usage_error(harness, capsys):
    code, _, err = run_cli(capsys, "verify", "--date", "2019-01-01")
    assert code == 2 and "outside the partitions" in err


@pytest.mark.e2e
def test_missing_required_variable_is_named(harness, capsys, monkeypatch):
    monkeypatch.delenv("BACKUP_BUCKET")
    code, _, err = run_cli(capsys, "verify", "--date", DAY)
    assert code == 2 and "BACKUP_BUCKET" in err


@pytest.mark.e2e
def test_malformed_config_key_is_exit_2_naming_file_key_and_line(harness, capsys):
    (harness.config_dir / "soft-fk-allowlist.yaml").write_text(
        "soft_fks:\n  - child: communications.messages.booking_id\n"
        "    parent: commerce.bookings.id\n    max_orphan: 200\n"
    )
    code, out, err = run_cli(capsys, "verify", "--date", DAY, "--json")
    assert code == 2 and out == ""
    assert "soft-fk-allowlist.yaml: line 4: key soft_fks[0].max_orphan: unknown key" in err
    assert list(harness.home.glob("history/runs/*")) == []  # nothing was launched


def test_no_subcommand_is_a_usage_error(capsys):
    assert cli.main([]) == 2


# -- the disposable cluster ------------------------------------------------------------------------
@pytest.mark.e2e
def test_cluster_is_removed_with_its_server():
    pg = DisposablePostgres().start()
    root = pg.root
    pid = int((root / "data" / "postmaster.pid").read_text().split()[0])
    with psycopg.connect(**pg.conninfo().kwargs()) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW wal_level").fetchone() == ("minimal",)
        # sized to the host's memory, so a large HNSW graph is built in memory
        sized = conn.execute(
            "SELECT setting::bigint * 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'"
        ).fetchone()[0]
    # what it was started with (the host's available memory moves while tests run beside it)
    assert sized == int(pg.settings["maintenance_work_mem"].removesuffix("MB")) * 1024 * 1024
    assert sized >= 512 * 1024 * 1024
    pg.stop()
    assert not root.exists()
    assert not pid_alive(pid)


_ORPHANED_OWNER = """
import os, sys
from busflow_verify.core.postgres.cluster import DisposablePostgres
pg = DisposablePostgres().start()
print(pg.root, flush=True)
os.kill(os.getpid(), 9)
"""


@pytest.mark.e2e
def test_a_cluster_whose_owner_was_killed_is_swept_by_the_next_one():
    proc = subprocess.run([sys.executable, "-c", _ORPHANED_OWNER], capture_output=True, text=True)
    stale = Path(proc.stdout.strip())
    assert proc.returncode == -9 and stale.exists()
    pid = int((stale / "data" / "postmaster.pid").read_text().split()[0])
    with DisposablePostgres():
        assert not stale.exists()
        assert not pid_alive(pid)


@pytest.mark.e2e
@pytest.mark.parametrize("when", ["restoring data of", None])
def test_interrupted_run_removes_its_cluster(harness, make_dump, when):
    """SIGTERM during the restore, or before the run exists (the cluster the CLI starts while
    Dagster is imported): the verify stops and the disposable Postgres is gone."""
    harness.put(KEY, make_dump(bookings=150_000, messages=450_000, legs=200_000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "busflow_verify.cli", "verify", "--date", DAY, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
        text=True,
    )
    err_lines: list[str] = []
    seen = threading.Event()

    def read_stderr():
        for line in proc.stderr:
            err_lines.append(line)
            if when and when in line:
                seen.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    root = _wait_for_cluster_of(proc.pid, timeout=60)
    assert root is not None, "the run never started a cluster"
    if when:
        assert seen.wait(60), "".join(err_lines)[-2000:]
    else:
        assert not any("STEP_START" in line for line in err_lines)  # no run step yet
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()
    proc.wait(timeout=60)
    reader.join(10)
    assert proc.returncode != 0
    assert not root.exists(), "".join(err_lines)[-2000:]
    if out.strip():
        verdict = json.loads(out)
        assert verdict["verified"] is False
        assert "interrupted" in verdict["failures"][0]["summary"]


def _clusters_in(base: Path) -> list[Path]:
    return sorted(base.glob(DIR_PREFIX + "*"))


@pytest.mark.e2e
def test_the_cluster_started_before_the_run_is_the_one_the_run_restores_into(server_user_dir):
    early = EarlyCluster.start(str(server_user_dir))
    target = EphemeralTarget(scratch_base=str(server_user_dir), early=early)
    target.prepare()  # takes the early cluster over: no second one is started
    db = target.open(DAY, "run-1")
    try:
        assert len(_clusters_in(server_user_dir)) == 1
        with psycopg.connect(**db.owner.kwargs()) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (db.dbname,)
    finally:
        target.close()
    assert _clusters_in(server_user_dir) == []
    early.discard()  # nothing left to discard


@pytest.mark.e2e
def test_a_cluster_started_early_that_no_run_takes_is_removed(server_user_dir, tmp_path):
    early = EarlyCluster.start(str(server_user_dir))
    other = EphemeralTarget(scratch_base=str(tmp_path), early=early)
    other.prepare()  # another scratch base: the early cluster is not taken
    other.close()
    deadline = time.monotonic() + 30
    while not _clusters_in(server_user_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    (root,) = _clusters_in(server_user_dir)
    early.discard()
    assert not root.exists()


def _wait_for_cluster_of(pid: int, timeout: float) -> Path | None:

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for root in Path(tempfile.gettempdir()).glob(DIR_PREFIX + "*"):
            try:
                if (
                    json.loads((root / OWNER_FILE).read_text())["pid"] == pid
                    and (root / "data" / "postmaster.pid").exists()
                ):
                    return root
            except (OSError, ValueError, KeyError):
                continue
        time.sleep(0.05)
    return None


def test_an_unowned_leftover_dir_is_swept_once_old(tmp_path):
    from busflow_verify.core.postgres.cluster import ORPHAN_AGE_SECONDS, sweep_stale_clusters

    old, fresh = tmp_path / (DIR_PREFIX + "old"), tmp_path / (DIR_PREFIX + "fresh")
    old.mkdir()
    fresh.mkdir()
    an_hour_ago = time.time() - ORPHAN_AGE_SECONDS - 60
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert sweep_stale_clusters(str(tmp_path)) == [str(old)]
    assert fresh.exists() and not old.exists()
