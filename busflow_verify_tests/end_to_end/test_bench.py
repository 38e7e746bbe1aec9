"""The restore-path benchmark (bench/verify_bench.py) runs end to end at a tiny scale.

No timings are asserted (the numbers belong in docs/performance.md, not in `make test`); what is
checked is that the three paths restore the same rows and orphans as the source had (the bench
fails otherwise), that the report has its table, and that the bench leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(server_user_dir):
    return server_user_dir


def _bench(workdir, *args: str, script: str = "verify_bench.py") -> subprocess.CompletedProcess:
    """bench/`script` with `args`, its work in `workdir`, without the job's variables."""
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")},
    )


@pytest.mark.parametrize("shape, scale", [("busflow", 3), ("pgbench", 1)])
def test_bench_measures_the_three_paths_and_cleans_up(workdir, shape, scale):
    proc = _bench(workdir, "--shapes", shape, "--scales", str(scale), "--fixed-cost-runs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"<!-- verify-bench:{shape}:begin -->" in out
    assert f"<!-- verify-bench:{shape}:end -->" in out
    row = re.search(rf"^\| {scale} \| [\d.]+ GB \| \d+ MB \|(.*)$", out, re.M)
    assert row, out
    cells = [c.strip() for c in row.group(1).split("|")]
    naive, floor, project = (float(c) for c in cells[:3])
    assert naive > 0 and floor > 0 and project > 0
    assert re.match(r"\d+ MB \(\d+ MB \w+\)", cells[6]), cells  # the verify's peak RSS
    assert "| **wall** |" in out and f"at the largest, scale {scale}" in out
    fixed = re.search(
        rf"Fixed cost, on the {shape} scale-{scale} dump .* median of 1 alternated runs: "
        r"floor ([\d.]+) s, project ([\d.]+) s, so the project spends \*\*(-?[\d.]+) s above",
        out,
    )
    assert fixed, out
    assert float(fixed[3]) == pytest.approx(float(fixed[2]) - float(fixed[1]), abs=0.011)
    assert list(workdir.iterdir()) == []  # clusters, dumps, S3 folder and instance removed


def test_fingerprint_bench_measures_both_kinds_and_cleans_up(workdir):
    """bench/fingerprint_cost.py at a tiny scale: the producer and verify, with and without
    fingerprints, every verify verified (the bench fails otherwise), the table written, nothing
    left."""
    proc = _bench(
        workdir, "--shape", "busflow", "--scale", "3", "--runs", "1", script="fingerprint_cost.py"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "<!-- fingerprint-bench:begin -->" in out and "<!-- fingerprint-bench:end -->" in out
    assert re.search(r"^\| producer .* \| [+-][\d.]+% \| <= \+25% \|$", out, re.M), out
    assert re.search(r"^\| verify .* \| [+-][\d.]+% \| <= \+10% \|$", out, re.M), out
    assert list(workdir.iterdir()) == []


def test_cost_curve_keeps_dumps_and_results_and_estimates_from_them(workdir):
    """One tiny size measured (floor and project), its dump kept, then the table rendered again
    from the saved results alone, with the labelled estimates."""
    cache, results = workdir / "dumps", workdir / "curve.json"
    curve = [sys.executable, str(REPO / "bench/cost_curve.py"), "--workdir", str(workdir)]
    common = ["--dumps", str(cache), "--results", str(results)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    measured = subprocess.run(
        [*curve, *common, "--scales", "3"], capture_output=True, text=True, timeout=300, env=env
    )
    assert measured.returncode == 0, measured.stderr[-3000:]
    assert (cache / "busflow-3.json").exists()  # the dump is kept for the next run
    rendered = subprocess.run(
        [*curve, *common], capture_output=True, text=True, timeout=120, env=env
    )
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    assert "floor ..." not in rendered.stdout  # nothing measured the second time
    row = re.search(
        r"^\| 3 \| [\d.]+ GB \| \d+ MB \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|",
        rendered.stdout,
        re.M,
    )
    assert row, rendered.stdout
    floor, project, ratio = (float(v) for v in row.groups())
    # The table rounds the walls to 0.1 s, so the ratio is checked against the saved results.
    (saved,) = json.loads(results.read_text())
    walls = {path: r["wall"] for path, r in saved["results"].items()}
    assert floor == pytest.approx(walls["floor"], abs=0.051)
    assert project == pytest.approx(walls["project"], abs=0.051)
    assert ratio == pytest.approx(walls["project"] / walls["floor"], abs=0.006)
    assert "| 10 GB |" in rendered.stdout and "| 50 GB |" in rendered.stdout
    assert "**Estimates, not measurements.**" in rendered.stdout
    leftovers = {p.name for p in workdir.iterdir()}
    assert leftovers == {"dumps", "curve.json"}  # clusters, S3 folders, instances removed
