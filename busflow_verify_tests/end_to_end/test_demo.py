"""`make demo` itself: a week of dumps, served over S3, verified by the real job."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_make_demo_verifies_the_newest_date_and_catches_the_planted_problem(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "busflow_verify.demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    newest, planted = proc.stdout.split("=== the date with a planted problem")
    assert ": VERIFIED" in newest
    assert "NOT VERIFIED" in planted and "F3 ORPHAN_FK_SURGE" in planted
    assert "dagster dev -m busflow_verify.definitions" in planted
    assert (tmp_path / ".demo" / "dagster_home").is_dir()
