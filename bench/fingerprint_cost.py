"""What the content fingerprints cost: the producer and verify, with and without them.

    .venv/bin/python bench/fingerprint_cost.py [--shape busflow] [--scale 1600] [--runs 2]
                                               [--write-docs]

One database of the shape at the scale (the largest default Busflow size unless told), kept up
while `busflow-verify dump` (core/store/producer.produce) dumps it, alternately count-only
(`fingerprints=False`, the manifest of older dumps) and with fingerprints, `runs` times each,
with a plain `pg_dump -Fc -f` beside them for reference. The two kinds of dump and manifest go to
two dates of the bench's S3 bucket; then `busflow-verify verify` runs each date, alternately,
`runs` times: the counts-only manifest asks for no fingerprint, the other for every table's,
computed in the statement that counts it. Medians of wall time; the producer's count (and
fingerprint) time, which overlaps pg_dump's, and verify's VACUUM ANALYZE-and-count stage beside.
Everything it made is removed, interrupted or not. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_report import machine, replace_block
from bench_shapes import SHAPES, Shape
from verify_bench import (
    BUCKET,
    REPO,
    _remove,
    project,
    project_env,
    psql,
    run,
    write_trailing_week,
)

from busflow_verify.core.postgres.cluster import DisposablePostgres
from busflow_verify.core.store.producer import produce
from busflow_verify.demo.s3server import RcloneS3Server

DATES = {"counts": dt.date(2026, 2, 10), "fingerprints": dt.date(2026, 2, 25)}
MARKERS = ("<!-- fingerprint-bench:begin -->", "<!-- fingerprint-bench:end -->")


def _produce_all(source: DisposablePostgres, db: str, bucket: Path, runs: int) -> dict:
    """Plain pg_dump, the producer count-only and with fingerprints, alternated `runs` times."""
    dsn = " ".join(f"{k}={v}" for k, v in source.conninfo(db).kwargs().items())
    walls: dict[str, list[float]] = {"pg_dump": [], "counts": [], "fingerprints": []}
    counting: dict[str, list[float]] = {"counts": [], "fingerprints": []}
    plain = bucket.parent / "plain.dump"
    for _ in range(runs):
        t0 = time.monotonic()
        run([source.tool("pg_dump"), "-Fc", *source.conninfo(db).libpq_args(), "-f", str(plain)])
        walls["pg_dump"].append(time.monotonic() - t0)
        plain.unlink()
        for mode, date in DATES.items():
            out = bucket / f"pg_dump_{date:%Y%m%d}_0100.dump"
            t0 = time.monotonic()
            result = produce(dsn, out, fingerprints=mode == "fingerprints")
            walls[mode].append(time.monotonic() - t0)
            counting[mode].append(result.timings["count_seconds"])
    size = (bucket / f"pg_dump_{DATES['counts']:%Y%m%d}_0100.dump").stat().st_size
    return {"walls": walls, "counting": counting, "dump_bytes": size}


def _verify_all(work: Path, s3: RcloneS3Server, shape: Shape, runs: int) -> dict:
    """verify of each date, alternated `runs` times: walls and VACUUM-and-count stages."""
    from bench_report import project_stages

    env = project_env(work, s3, shape)
    walls: dict[str, list[float]] = {mode: [] for mode in DATES}
    stages: dict[str, list[float]] = {mode: [] for mode in DATES}
    for _ in range(runs):
        for mode, date in DATES.items():
            dump = _BenchDump(shape, date)
            result = project(work, env, dump)
            if not result.extra["verified"]:
                raise RuntimeError(f"verify of the {mode} dump did not verify: see {work}")
            walls[mode].append(result.wall)
            stages[mode].append(project_stages(work / "dagster_home", result)["vacuum_analyze"])
    return {"walls": walls, "stages": stages}


class _BenchDump:
    """What verify_bench.project needs of a dump: its date, scale and size (for its rate)."""

    def __init__(self, shape: Shape, date: dt.date):
        self.shape, self.date, self.scale, self.dump_bytes = shape, date, 0, 1


def measure(workdir: str, shape: Shape, scale: int, runs: int) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-fingerprints-", dir=workdir))
    try:
        work.chmod(0o711)
        load_before = os.getloadavg()
        bucket = work / "s3" / BUCKET
        bucket.mkdir(parents=True)
        for date in DATES.values():
            write_trailing_week(bucket, date, 1 << 30)
        with DisposablePostgres(base_dir=str(work)) as source:
            db = f"bench_{shape.name}_{scale}"
            psql(source, "postgres", f"CREATE DATABASE {db}")
            t0 = time.monotonic()
            shape.populate(source, db, scale, run)
            db_bytes = int(psql(source, db, f"SELECT pg_database_size('{db}')")[0])
            print(f"built {db_bytes / 1e9:.2f} GB in {time.monotonic() - t0:.0f} s", flush=True)
            produced = _produce_all(source, db, bucket, runs)
        with RcloneS3Server(work / "s3", access_key="bench", secret_key=os.urandom(8).hex()) as s3:
            s3.settle()
            verified = _verify_all(work, s3, shape, runs)
        return _report(
            shape, scale, db_bytes, produced, verified, machine(load_before, os.getloadavg()), runs
        )
    finally:
        _remove(work)


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _report(shape, scale, db_bytes, produced, verified, host, runs) -> str:
    p, v = produced["walls"], verified["walls"]
    producer = _med(p["fingerprints"]) / _med(p["counts"]) - 1
    verify = _med(v["fingerprints"]) / _med(v["counts"]) - 1

    def runs_of(values):
        return ", ".join(f"{x:.1f}" for x in values)

    lines = [
        MARKERS[0],
        "### Fingerprints: latest run (written by `bench/fingerprint_cost.py --write-docs`)",
        "",
        f"Measured {host['date']} on {host['arch']}, {host['cores']} cores, PostgreSQL "
        f"{host['postgres']}; load average {host['load_before'][0]:.2f} before and "
        f"{host['load_after'][0]:.2f} after (1 min). {shape.name} scale {scale}: a "
        f"{db_bytes / 1e9:.2f} GB database, a {produced['dump_bytes'] / 1e6:.0f} MB dump. "
        f"Medians of {runs} alternated runs (each run's wall in brackets).",
        "",
        "| | counts only s | with fingerprints s | growth | target |",
        "|---|---|---|---|---|",
        f"| producer (`busflow-verify dump`), wall | {_med(p['counts']):.1f} "
        f"({runs_of(p['counts'])}) | {_med(p['fingerprints']):.1f} "
        f"({runs_of(p['fingerprints'])}) | {producer:+.1%} | <= +25% |",
        f"| producer's counting statements (beside pg_dump) | "
        f"{_med(produced['counting']['counts']):.1f} | "
        f"{_med(produced['counting']['fingerprints']):.1f} | | |",
        f"| verify (`busflow-verify verify`), wall | {_med(v['counts']):.1f} "
        f"({runs_of(v['counts'])}) | {_med(v['fingerprints']):.1f} "
        f"({runs_of(v['fingerprints'])}) | {verify:+.1%} | <= +10% |",
        f"| verify's VACUUM ANALYZE and count stage | {_med(verified['stages']['counts']):.1f} "
        f"| {_med(verified['stages']['fingerprints']):.1f} | | |",
        "",
        f"A plain `pg_dump -Fc -f` of the same database took {_med(p['pg_dump']):.1f} s "
        f"({runs_of(p['pg_dump'])}).",
        MARKERS[1],
    ]
    return "\n".join(lines)


def write(text: str) -> None:
    replace_block(REPO / "docs/performance.md", *MARKERS, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="busflow", choices=sorted(SHAPES))
    parser.add_argument("--scale", type=int, help="default: the shape's largest default scale")
    parser.add_argument("--runs", type=int, default=2, help="each measurement, alternated")
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    try:
        text = measure(args.workdir, shape, args.scale or max(shape.default_scales), args.runs)
    except KeyboardInterrupt:
        print("\ninterrupted: removed what the bench started", file=sys.stderr)
        return 130
    print(text, flush=True)
    if args.write_docs:
        write(text)
        print("written to docs/performance.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
