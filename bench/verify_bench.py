"""Restore-path benchmark: a naive job, the floor and this project, side by side.

    .venv/bin/python bench/verify_bench.py [--shapes pgbench busflow] [--scales N ...]
                                           [--workdir DIR] [--write-docs]

What the content fingerprints cost, the producer and verify with and without them, is
bench/fingerprint_cost.py's to measure.

For each shape (both by default, one after the other) and each of its scales (bench_shapes.py):
pgbench's schema and data (`pgbench -i -s N`, with a filler of md5 text so that the dump
compresses like real data, plus `public.account_notes`, whose `aid` is a soft FK to
`pgbench_accounts.aid` with 17 orphans; scale 100 is a 2.1 GB database), or the demo's Busflow
database (messages.booking_id, the shipped allowlist's soft FK, with the GDPR scrub's expected
orphans; scale 1600 is a 2.0 GB database); dumped with `pg_dump -Fc` as
`pg_dump_YYYYMMDD_0100.dump` into a bucket served by `rclone serve s3` on loopback, with a week
of same-sized history objects (sparse) before it for the size guard. Then, one after the other,
from nothing to nothing (creating and removing the cluster is in every wall time):

- naive: `rclone cat` of the object piped into `pg_restore` (no -j) against a default, durable
  cluster; then VACUUM ANALYZE, count(*) of every table and the soft FK's anti-join with psql;
- floor: `rclone copyto` to a local file, `pg_restore -j <cores>` into a cluster with durability
  off (fsync, full_page_writes, synchronous_commit off, wal_level minimal); the same psql queries;
- project: `busflow-verify verify --date D --json` in a subprocess, end to end, with a config
  folder whose size guard and row-count tolerances let every bench size verify.

It prints the wall times, project/floor and project/naive, the verify process's peak RSS (its own,
and separately the largest of its children: pg_restore, psql, initdb), the download throughput of
the project against `rclone copyto` of the same object, and where the project's time went (read
from its run's event log). `--write-docs` puts the tables into docs/performance.md. Everything it
starts (clusters, the S3 server, the verify process) is stopped and its folder removed, Ctrl-C
and SIGTERM included. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import machine, report, write_docs
from bench_shapes import SHAPES, Shape

from busflow_verify.core.postgres.cluster import DisposablePostgres, sweep_stale_clusters
from busflow_verify.demo.s3server import RcloneS3Server, rclone_binary

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench-backups"
CORES = os.cpu_count() or 1


class DurablePostgres(DisposablePostgres):
    """What a naive job restores into: PostgreSQL's defaults (durable), Unix socket only."""

    SETTINGS: ClassVar[dict[str, str]] = {"listen_addresses": "''"}


class DurabilityOffPostgres(DisposablePostgres):
    """The floor's target: durability off and nothing else tuned."""

    SETTINGS: ClassVar[dict[str, str]] = {
        "listen_addresses": "''",
        "fsync": "off",
        "full_page_writes": "off",
        "synchronous_commit": "off",
        "wal_level": "minimal",
        "max_wal_senders": "0",
    }


@dataclass
class Dump:
    shape: Shape
    scale: int
    date: dt.date
    key: str
    db_bytes: int
    dump_bytes: int
    counts: dict[str, int]
    orphans: int  # the soft FK's, counted in the source


@dataclass
class Result:
    path: str  # naive | floor | project
    wall: float
    stages: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    orphans: int | None = None
    extra: dict = field(default_factory=dict)


class Stages:
    """Named, timed stages of one path; the wall time covers them all."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.started = time.monotonic()

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - t0, 3)

    def wall(self) -> float:
        return round(time.monotonic() - self.started, 3)


# -- processes ---------------------------------------------------------------------------------
def run(argv: list[str], env: dict | None = None, stdin=None) -> str:
    """Run to the end in its own process group (killed whole if we are interrupted)."""
    proc = subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate()
    except BaseException:
        _kill(proc)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed ({proc.returncode}): {err[-2000:]}")
    return out


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def psql(pg: DisposablePostgres, dbname: str, sql: str) -> list[str]:
    out = run(
        [
            pg.tool("psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            *pg.conninfo(dbname).libpq_args(),
            "-c",
            sql,
        ]
    )
    return [line for line in out.splitlines() if line.strip()]


def rclone_env(s3: RcloneS3Server) -> dict:
    """An rclone remote named `bench` for the S3 server, from the environment (no config file)."""
    return {
        **os.environ,
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": s3.endpoint,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": s3.access_key,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": s3.secret_key,
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    }


# -- the dumps -----------------------------------------------------------------------------------
def build_dumps(work: Path, shape: Shape, scales: list[int], first: int = 0) -> list[Dump]:
    """One database and dump per scale, dated in order of size from the `first`-th date; the
    source cluster is gone before anything is timed."""
    bucket = work / "s3" / BUCKET
    bucket.mkdir(parents=True, exist_ok=True)
    dumps = []
    with DisposablePostgres(base_dir=str(work)) as source:
        for i, scale in enumerate(sorted(scales), start=first):
            dumps.append(
                _build_one(
                    source, bucket, shape, scale, dt.date(2026, 1, 10) + dt.timedelta(days=10 * i)
                )
            )
    return dumps


def _build_one(
    source: DisposablePostgres, bucket: Path, shape: Shape, scale: int, date: dt.date
) -> Dump:
    t0 = time.monotonic()
    db = f"bench_{shape.name}_{scale}"
    psql(source, "postgres", f"CREATE DATABASE {db}")
    shape.populate(source, db, scale, run)
    db_bytes = int(psql(source, db, f"SELECT pg_database_size('{db}')")[0])
    counts = {t: int(psql(source, db, f"SELECT count(*) FROM {t}")[0]) for t in shape.tables}
    orphans = int(psql(source, db, shape.sweep_sql)[0])
    key = f"pg_dump_{date:%Y%m%d}_0100.dump"
    run([source.tool("pg_dump"), "-Fc", *source.conninfo(db).libpq_args(), "-f", str(bucket / key)])
    size = (bucket / key).stat().st_size
    write_trailing_week(bucket, date, size)
    psql(source, "postgres", f"DROP DATABASE {db}")
    print(
        f"{shape.name} scale {scale}: database {db_bytes / 1e9:.2f} GB, "
        f"dump {size / 1e6:.0f} MB ({time.monotonic() - t0:.0f} s to build)",
        flush=True,
    )
    return Dump(shape, scale, date, key, db_bytes, size, counts, orphans)


def write_trailing_week(bucket: Path, date: dt.date, size: int) -> None:
    """The size guard's trailing week before `date`: dumps of the same size, sparse on disk."""
    for back in range(1, 8):
        with open(
            bucket / f"pg_dump_{date - dt.timedelta(days=back):%Y%m%d}_0100.dump", "wb"
        ) as fh:
            fh.truncate(size)


# -- the three paths -----------------------------------------------------------------------------
def queries(pg: DisposablePostgres, shape: Shape, stages: Stages, result: Result) -> None:
    """What the naive job and the floor run after the restore: the same statements."""
    with stages("vacuum_analyze"):
        psql(pg, "restored", "VACUUM ANALYZE")
    with stages("counts"):
        rows = psql(pg, "restored", "; ".join(f"SELECT count(*) FROM {t}" for t in shape.tables))
    result.counts = {t: int(n) for t, n in zip(shape.tables, rows)}
    with stages("sweep"):
        result.orphans = int(psql(pg, "restored", shape.sweep_sql)[0])


def restore_args(pg: DisposablePostgres) -> list[str]:
    return [
        pg.tool("pg_restore"),
        *pg.conninfo("restored").libpq_args(),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
    ]


def naive(work: Path, s3: RcloneS3Server, dump: Dump) -> Result:
    stages, result = Stages(), Result("naive", 0.0)
    with stages("cluster_start"):
        pg = DurablePostgres(base_dir=str(work)).start()
    try:
        psql(pg, "postgres", "CREATE DATABASE restored")
        with stages("stream_restore"):
            _stream_restore(s3, dump, pg)
        queries(pg, dump.shape, stages, result)
    finally:
        with stages("cluster_stop"):
            pg.stop()
    result.wall, result.stages = stages.wall(), stages.seconds
    return result


def _stream_restore(s3: RcloneS3Server, dump: Dump, pg: DisposablePostgres) -> None:
    cat = subprocess.Popen(
        [rclone_binary(), "cat", f"bench:{BUCKET}/{dump.key}", "--config", "/dev/null"],
        env=rclone_env(s3),
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        run(restore_args(pg), stdin=cat.stdout)
        cat.stdout.close()
        if cat.wait() != 0:
            raise RuntimeError(f"rclone cat exited {cat.returncode}")
    finally:
        if cat.poll() is None:
            _kill(cat)


def floor(work: Path, s3: RcloneS3Server, dump: Dump) -> Result:
    stages, result = Stages(), Result("floor", 0.0)
    local = work / "floor.dump"
    try:
        with stages("download"):
            run(
                [
                    rclone_binary(),
                    "copyto",
                    f"bench:{BUCKET}/{dump.key}",
                    str(local),
                    "--config",
                    "/dev/null",
                ],
                env=rclone_env(s3),
            )
        with stages("cluster_start"):
            pg = DurabilityOffPostgres(base_dir=str(work)).start()
        try:
            psql(pg, "postgres", "CREATE DATABASE restored")
            with stages("restore"):
                run([*restore_args(pg), "-j", str(CORES), str(local)])
            queries(pg, dump.shape, stages, result)
        finally:
            with stages("cluster_stop"):
                pg.stop()
    finally:
        local.unlink(missing_ok=True)
    result.wall, result.stages = stages.wall(), stages.seconds
    result.extra["download_mb_s"] = dump.dump_bytes / stages.seconds["download"] / 1e6
    return result


# `busflow-verify` is `cli.entry()`; this adds a note of the process's own peak RSS at exit
# (getrusage of itself; Linux's RUSAGE_CHILDREN would count each forked child's copy of the
# parent's memory from before its exec, so the children are sampled instead).
RUSAGE_WRAPPER = """
import atexit, os, resource, sys

def note_peak():
    with open(os.environ["BENCH_RUSAGE"], "w") as fh:
        fh.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))

atexit.register(note_peak)
from busflow_verify.cli import entry
entry()
"""


class ChildrenPeak(threading.Thread):
    """The largest peak RSS (VmHWM) among the descendants of `pid` (pg_restore and its workers,
    psql, initdb; not the restore target's server processes), sampled every quarter second."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.kb, self.name = pid, 0, ""
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            for child in _descendants(self.pid):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    status = Path(f"/proc/{child}/status").read_text()
                    kb = int(status.split("VmHWM:")[1].split()[0])
                    if kb > self.kb and status.split()[1] != "postgres":  # not the server
                        self.kb, self.name = kb, status.split()[1]


def _descendants(pid: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def project(work: Path, env: dict, dump: Dump) -> Result:
    """`busflow-verify verify` as the console script runs it (`cli.main`), with its peak RSS."""
    usage = work / "rusage.txt"
    log = work / f"verify-{dump.scale}.log"
    argv = [
        sys.executable,
        "-c",
        RUSAGE_WRAPPER,
        "verify",
        "--date",
        dump.date.isoformat(),
        "--json",
    ]
    launched, t0 = time.time(), time.monotonic()
    with open(log, "w") as err:
        proc = subprocess.Popen(
            argv,
            env={**env, "BENCH_RUSAGE": str(usage)},
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        children = ChildrenPeak(proc.pid)
        children.start()
        try:
            out, _ = proc.communicate()
        except BaseException:
            _stop_verify(proc)
            raise
        finally:
            children.done.set()
    wall = round(time.monotonic() - t0, 3)
    try:
        verdict = json.loads(out)
    except ValueError:
        raise RuntimeError(
            f"verify printed no JSON (exit {proc.returncode}); its log: {log}"
        ) from None
    result = Result(
        "project",
        wall,
        counts=verdict.get("row_counts") or {},
        orphans=(verdict.get("orphans") or [{}])[0].get("orphans"),
    )
    result.extra = {
        "verified": verdict["verified"],
        "exit": proc.returncode,
        "run_id": verdict["run_id"],
        "launched": launched,
        "exited": time.time(),
        "rss_self_mb": int(usage.read_text()) / 1024,
        "rss_children_mb": children.kb / 1024,
        "rss_children_name": children.name,
        "download_seconds": verdict["restore"]["download_seconds"],
        "restore": verdict["restore"],
    }
    result.extra["download_mb_s"] = dump.dump_bytes / result.extra["download_seconds"] / 1e6
    return result


def _stop_verify(proc: subprocess.Popen) -> None:
    """SIGTERM first: the verify removes its own cluster on the way out."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        _kill(proc)


def project_env(work: Path, s3: RcloneS3Server, shape: Shape) -> dict:
    """The verify's environment: the bench's S3 server, instance and config, scratch in `work`."""
    home, config = work / "dagster_home", work / "config"
    home.mkdir()
    config.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    shipped = yaml.safe_load((REPO / "config/backup-verify/verify.yaml").read_text())
    shipped["size_guard"]["min_bytes"] = 1000  # the bench's dumps are under 10 GB
    shipped["row_counts"]["max_growth_ratio"] = 1000.0  # each size is bigger than the last
    (config / "verify.yaml").write_text(yaml.safe_dump(shipped))
    (config / "soft-fk-allowlist.yaml").write_text(yaml.safe_dump({"soft_fks": [shape.soft_fk]}))
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("BACKUP_", "SLACK_"))
    }
    return {
        **env,
        "BACKUP_PRIMARY_ENDPOINT": s3.endpoint,
        "BACKUP_BUCKET": BUCKET,
        "BACKUP_ACCESS_KEY_ID": s3.access_key,
        "BACKUP_SECRET_ACCESS_KEY": s3.secret_key,
        "DAGSTER_HOME": str(home),
        "BUSFLOW_VERIFY_CONFIG_DIR": str(config),
        "TMPDIR": str(work),
    }


def download_race(work: Path, s3: RcloneS3Server, dump: Dump, rounds: int = 3) -> dict:
    """The project's download (core.store.download.download, the client the verify builds) against
    `rclone copyto` of the same object from the same endpoint: best of `rounds`, alternating."""
    from busflow_verify.core.store.download import download
    from busflow_verify.core.store.listing import DumpObject
    from busflow_verify.defs.resources import S3Endpoint

    client = S3Endpoint(
        endpoint_url=s3.endpoint, access_key_id=s3.access_key, secret_access_key=s3.secret_key
    ).client()
    obj = DumpObject(BUCKET, dump.key, dump.dump_bytes, "", "primary", s3.endpoint, "")
    local, best = work / "race.dump", {"project": float("inf"), "rclone": float("inf")}
    try:
        for _ in range(rounds):
            t0 = time.monotonic()
            download(client, obj, local)
            best["project"] = min(best["project"], time.monotonic() - t0)
            local.unlink()
            t0 = time.monotonic()
            run(
                [
                    rclone_binary(),
                    "copyto",
                    f"bench:{BUCKET}/{dump.key}",
                    str(local),
                    "--config",
                    "/dev/null",
                ],
                env=rclone_env(s3),
            )
            best["rclone"] = min(best["rclone"], time.monotonic() - t0)
            local.unlink()
    finally:
        local.unlink(missing_ok=True)
    return {name: dump.dump_bytes / seconds / 1e6 for name, seconds in best.items()}


def check_same_answers(dump: Dump, results: list[Result]) -> None:
    """Every path must have found the source's rows and the planted orphans."""
    for r in results:
        if r.counts != dump.counts or r.orphans != dump.orphans:
            raise RuntimeError(
                f"{r.path} at {dump.shape.name} scale {dump.scale} found "
                f"{r.counts} and {r.orphans} orphans; the source had "
                f"{dump.counts}, {dump.orphans}"
            )


# -- main ----------------------------------------------------------------------------------------
def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _remove(work: Path) -> None:
    sweep_stale_clusters(str(work))  # a verify killed outright leaves its cluster running
    shutil.rmtree(work, ignore_errors=True)


def fixed_cost(work: Path, s3: RcloneS3Server, env: dict, dump: Dump, runs: int) -> dict:
    """The floor and the project on the tiny dump, alternated `runs` times: the medians, and
    what the project spends above the floor's own steps (Python, Dagster, its bookkeeping)."""
    floors, projects = [], []
    for _ in range(runs):
        floors.append(floor(work, s3, dump))
        projects.append(project(work, env, dump))
    check_same_answers(dump, [floors[-1], projects[-1]])
    return {"dump": dump, "floor": _median(floors).wall, "project": _median(projects), "runs": runs}


def _median(results: list[Result]) -> Result:
    """The run of median wall time (the upper one of an even count)."""
    return sorted(results, key=lambda r: r.wall)[len(results) // 2]


def measure(
    work: Path, shape: Shape, scales: list[int], fixed_runs: int = 3
) -> tuple[list[Dump], list[list[Result]], dict, dict]:
    # the tiny dump is built and measured first, alone: building the large ones leaves the
    # disk writing back gigabytes for a while, which a run of a few seconds would measure
    (tiny,) = build_dumps(work, shape, [shape.tiny_scale])
    rows = []
    with RcloneS3Server(
        work / "s3", access_key="bench-" + secrets.token_hex(4), secret_key=secrets.token_hex(16)
    ) as s3:
        env = project_env(work, s3, shape)
        print(f"{shape.name} scale {tiny.scale}: fixed cost ...", end=" ", flush=True)
        fixed = fixed_cost(work, s3, env, tiny, fixed_runs)
        print(f"floor {fixed['floor']:.2f} s, project {fixed['project'].wall:.2f} s", flush=True)
        larger = sorted(set(scales) - {tiny.scale})
        built = {d.scale: d for d in [tiny, *build_dumps(work, shape, larger, first=1)]}
        s3.settle()  # written straight into its folder: served once its listing is renewed
        dumps = [built[s] for s in sorted(set(scales))]
        for dump in dumps:
            results = []
            for path in ("naive", "floor", "project"):
                print(f"{shape.name} scale {dump.scale}: {path} ...", end=" ", flush=True)
                results.append(
                    naive(work, s3, dump)
                    if path == "naive"
                    else floor(work, s3, dump)
                    if path == "floor"
                    else project(work, env, dump)
                )
                print(f"{results[-1].wall:.1f} s", flush=True)
            check_same_answers(dump, results)
            rows.append(results)
        race = download_race(work, s3, dumps[-1])
    return dumps, rows, race, fixed


def bench_shape(
    workdir: str, shape: Shape, scales: list[int], write: bool, fixed_runs: int = 3
) -> None:
    """Build, measure and report one shape; everything it made is removed, interrupted or not."""
    work = Path(tempfile.mkdtemp(prefix=f"bench-{shape.name}-", dir=workdir))
    try:
        work.chmod(0o711)  # the clusters' server user (postgres, when we are root) passes through
        load_before = os.getloadavg()
        dumps, rows, race, fixed = measure(work, shape, scales, fixed_runs)
        text = report(
            dumps,
            rows,
            race,
            machine(load_before, os.getloadavg()),
            f"--shapes {shape.name} --scales {' '.join(map(str, scales))}",
            work / "dagster_home",
            fixed,
        )
    finally:
        _remove(work)
    print(text, flush=True)
    if write:
        write_docs(REPO / "docs/performance.md", shape.name, text)
        print("written to docs/performance.md", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=sorted(SHAPES),
        default=list(SHAPES),
        help="the databases restored, one after the other (bench_shapes.py)",
    )
    parser.add_argument(
        "--scales",
        type=int,
        nargs="+",
        help="with one shape only; "
        + "; ".join(
            f"{s.name}: {s.scale_help} (default {' '.join(map(str, s.default_scales))})"
            for s in SHAPES.values()
        ),
    )
    parser.add_argument(
        "--workdir",
        default=tempfile.gettempdir(),
        help="where clusters, dumps and the S3 folder go (default TMPDIR)",
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write each shape's tables into docs/performance.md",
    )
    parser.add_argument(
        "--fixed-cost-runs",
        type=int,
        default=3,
        help="floor and project on the shape's tiny dump, alternated this many times (medians)",
    )
    args = parser.parse_args()
    if args.scales and len(args.shapes) > 1:
        parser.error("--scales is per shape: give one shape with it")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for name in args.shapes:
            shape = SHAPES[name]
            bench_shape(
                args.workdir,
                shape,
                args.scales or shape.default_scales,
                args.write_docs,
                args.fixed_cost_runs,
            )
    except KeyboardInterrupt:
        print("\ninterrupted: removed what the bench started", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
