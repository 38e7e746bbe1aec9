"""The cost curve to production size: the floor and the project at growing sizes.

    .venv/bin/python bench/cost_curve.py --scales 400 1600 7200 --dumps /var/tmp/bench-dumps \
        --results docs/cost-curve.json --write-docs      (what `make bench-curve` runs)
    .venv/bin/python bench/cost_curve.py --write-docs   (the table again, from the results alone)

For each Busflow-shape scale (bench_shapes.py; scale 7200 restores to about 10.3 GB) it runs the
floor and the project of `verify_bench.py` one after the other, from nothing to nothing, and
records per size: the wall times and their ratio, seconds per restored GB of each stage (download,
pre-data, data, post-data, VACUUM ANALYZE, counts, sweep), the peak disk used per restored GB
(the used bytes of the work directory's filesystem, sampled every 0.5 s, above what they were at
the start: the downloaded dump and the cluster), and the verify process's peak RSS. From the curve
it estimates, labelled as estimates, the verify time of a 10 GB and a 50 GB database here and on
an 8-core runner.

A large database takes a long time to build (scale 7200: about 25 minutes), so `--dumps DIR`
keeps each built dump with a JSON note of its source (sizes, row counts, orphans) and reuses it;
`--results FILE` keeps each size's measurements, so sizes measured in separate runs (the largest
once, in the background) make one table; without `--scales` it is rendered without measuring.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import verify_bench as vb
from bench_report import machine, project_stages, replace_block
from bench_shapes import SHAPES

from busflow_verify.core.postgres.cluster import DisposablePostgres
from busflow_verify.demo.s3server import RcloneS3Server

REPO = vb.REPO
GB = 1e9
# the project's stages on the curve, and where each comes from
CURVE_STAGES = ["download", "pre-data", "data", "post-data", "vacuum_analyze", "counts", "sweep"]
# stages a -j run spreads over cores (CPU-bound: COPY, index builds, VACUUM, parallel scans)
PARALLEL_STAGES = {"data", "post-data", "vacuum_analyze", "counts", "sweep"}
PARALLEL_EFFICIENCY = 0.7  # assumed for 8 cores (see estimate_lines)


class DiskPeak(threading.Thread):
    """The peak of the used bytes of `path`'s filesystem above the value at the start."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.done = path, threading.Event()
        self.start_used = self.peak = self._used()

    def _used(self) -> int:
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.peak = max(self.peak, self._used())

    @property
    def bytes(self) -> int:
        return self.peak - self.start_used


@contextlib.contextmanager
def disk_peak(path: Path):
    sampler = DiskPeak(path)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.done.set()
        sampler.join()


# -- dumps, built once ---------------------------------------------------------------------------
def cached_dump(cache: Path, shape, scale: int, date: dt.date) -> vb.Dump:
    """The shape's dump at `scale` from `cache`, built there first when it is not."""
    note = cache / f"{shape.name}-{scale}.json"
    bucket = cache / "bucket"
    if not note.exists():
        bucket.mkdir(parents=True, exist_ok=True)
        src = Path(tempfile.mkdtemp(prefix="src-", dir=cache))
        src.chmod(0o711)
        try:
            with DisposablePostgres(base_dir=str(src)) as source:
                dump = vb._build_one(source, bucket, shape, scale, date)
        finally:
            shutil.rmtree(src, ignore_errors=True)
        note.write_text(json.dumps({**asdict(dump), "shape": shape.name}, default=str))
    raw = json.loads(note.read_text())
    return vb.Dump(**{**raw, "shape": shape, "date": dt.date.fromisoformat(raw["date"])})


def stage_bucket(cache: Path, work: Path, dump: vb.Dump) -> None:
    """The dump (a hard link when it can be) and its sparse trailing week in work's bucket."""
    bucket = work / "s3" / vb.BUCKET
    bucket.mkdir(parents=True)
    source = cache / "bucket" / dump.key
    try:
        os.link(source, bucket / dump.key)
    except OSError:
        shutil.copyfile(source, bucket / dump.key)
    vb.write_trailing_week(bucket, dump.date, dump.dump_bytes)


# -- one size ------------------------------------------------------------------------------------
def measure_size(cache: Path, workdir: str, shape, dump: vb.Dump, paths: list[str]) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"curve-{shape.name}-{dump.scale}-", dir=workdir))
    try:
        work.chmod(0o711)
        stage_bucket(cache, work, dump)
        load_before = os.getloadavg()
        results = {}
        with RcloneS3Server(
            work / "s3", access_key="bench-curve", secret_key=os.urandom(16).hex()
        ) as s3:
            env = vb.project_env(work, s3, shape)
            for path in paths:
                print(f"{shape.name} scale {dump.scale}: {path} ...", end=" ", flush=True)
                with disk_peak(work) as disk:
                    if path == "naive":
                        result = vb.naive(work, s3, dump)
                    elif path == "floor":
                        result = vb.floor(work, s3, dump)
                    else:
                        result = vb.project(work, env, dump)
                result.extra["disk_peak_bytes"] = disk.bytes
                if path == "project":
                    result.stages = project_stages(work / "dagster_home", result)
                    result.extra["metadata"] = run_metadata(work / "dagster_home", result)
                print(f"{result.wall:.1f} s", flush=True)
                results[path] = result
        vb.check_same_answers(dump, list(results.values()))
        return {
            "shape": shape.name,
            "scale": dump.scale,
            "db_bytes": dump.db_bytes,
            "dump_bytes": dump.dump_bytes,
            "machine": machine(load_before, os.getloadavg()),
            "results": {
                name: {"wall": r.wall, "stages": r.stages, "extra": _jsonable(r.extra)}
                for name, r in results.items()
            },
        }
    finally:
        vb._remove(work)


def run_metadata(home: Path, result) -> dict:
    """The materializations' numeric metadata of the run (restore sections, VACUUM, counts)."""
    import dagster as dg

    found = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for entry in instance.all_logs(result.extra["run_id"]):
            event = entry.dagster_event
            if event is None or event.event_type_value != "ASSET_MATERIALIZATION":
                continue
            for key, value in event.materialization.metadata.items():
                if isinstance(getattr(value, "value", None), (int, float)):
                    found[key] = value.value
    return found


def _jsonable(extra: dict) -> dict:
    return json.loads(json.dumps(extra, default=str))


# -- the curve -----------------------------------------------------------------------------------
def restored_gb(size: dict) -> float:
    meta = size["results"].get("project", {}).get("extra", {}).get("metadata", {})
    return (meta.get("restored_bytes") or size["db_bytes"]) / GB


def project_curve_seconds(size: dict) -> dict[str, float]:
    """The project's seconds per curve stage at one size (metadata, else the stage table)."""
    project = size["results"]["project"]
    meta, stages = project["extra"]["metadata"], project["stages"]
    vacuum_and_count = stages["vacuum_analyze"]  # wall of the step, the counts included
    summed = (meta.get("vacuum_analyze_seconds") or 0) + (meta.get("count_seconds") or 0)
    count_share = (meta.get("count_seconds") or 0) / summed if summed else 0.0
    return {
        "download": stages["download"],
        "pre-data": meta.get("restore_pre_data_seconds", 0.0),
        "data": meta.get("restore_data_seconds", 0.0),
        "post-data": meta.get("restore_post_data_seconds", 0.0),
        "vacuum_analyze": vacuum_and_count * (1 - count_share),
        "counts": vacuum_and_count * count_share,
        "sweep": stages["sweep"],
    }


def curve_table(sizes: list[dict]) -> list[str]:
    head = (
        "| scale | restored | dump | floor s | project s | project/floor "
        + "".join(f"| {s} s/GB " for s in CURVE_STAGES)
        + "| floor restore s/GB | disk GB/GB project (floor) | verify RSS |"
    )
    lines = [head, "|" + "---|" * (9 + len(CURVE_STAGES))]
    for size in sizes:
        gb, res = restored_gb(size), size["results"]
        project, floor = res["project"], res.get("floor")
        per_gb = project_curve_seconds(size)
        ratio = f"{project['wall'] / floor['wall']:.2f}" if floor else ""
        floor_restore = f"{floor['stages']['restore'] / gb:.2f}" if floor else ""
        disk = f"{project['extra']['disk_peak_bytes'] / GB / gb:.2f}"
        if floor:
            disk += f" ({floor['extra']['disk_peak_bytes'] / GB / gb:.2f})"
        cells = [
            str(size["scale"]),
            f"{gb:.2f} GB",
            f"{size['dump_bytes'] / 1e6:.0f} MB",
            f"{floor['wall']:.1f}" if floor else "",
            f"{project['wall']:.1f}",
            ratio,
            *(f"{per_gb[s] / gb:.2f}" for s in CURVE_STAGES),
            floor_restore,
            disk,
            f"{project['extra']['rss_self_mb']:.0f} MB",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares `seconds = a + b * GB`; one point gives a line through the origin."""
    if len(points) == 1:
        x, y = points[0]
        return 0.0, y / x
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


def estimate_lines(sizes: list[dict]) -> list[str]:
    gbs = [restored_gb(s) for s in sizes]
    per_stage = {
        stage: fit([(gb, project_curve_seconds(s)[stage]) for gb, s in zip(gbs, sizes)])
        for stage in CURVE_STAGES
    }
    walls = [s["results"]["project"]["wall"] for s in sizes]
    rest = fit(
        [
            (gb, wall - sum(project_curve_seconds(s).values()))
            for gb, wall, s in zip(gbs, walls, sizes)
        ]
    )
    cores = sizes[-1]["machine"]["cores"]
    speedup = 1 + (8 / cores - 1) * PARALLEL_EFFICIENCY

    def at(gb: float, scale_cores: bool) -> float:
        total = max(0.0, rest[0] + rest[1] * gb)
        for stage, (a, b) in per_stage.items():
            seconds = max(0.0, a + b * gb)
            if scale_cores and stage in PARALLEL_STAGES:
                seconds /= speedup
            total += seconds
        return total

    lines = [
        "| restored database | this machine (estimate) | 8-core runner (estimate) |",
        "|---|---|---|",
    ]
    for gb in (10, 50):
        here, eight = at(gb, False), at(gb, True)
        lines.append(
            f"| {gb} GB | {here:.0f} s ({here / 60:.1f} min) | {eight:.0f} s "
            f"({eight / 60:.1f} min) |"
        )
    fits = ", ".join(f"{s} {a:.1f} s + {b:.2f} s/GB" for s, (a, b) in per_stage.items())
    lines += [
        "",
        f"**Estimates, not measurements.** Each stage's seconds are fitted as a + b x GB "
        f"(least squares over the {len(sizes)} measured sizes: {fits}; everything else, "
        f"Dagster and the cluster's start and stop, {rest[0]:.1f} s + {rest[1]:.2f} s/GB) and "
        f"extrapolated. For the 8-core runner the CPU-bound stages ({', '.join(sorted(PARALLEL_STAGES))}) "
        f"are divided by {speedup:.2f}: {8 // cores}x the cores at an assumed "
        f"{PARALLEL_EFFICIENCY:.0%} parallel efficiency (pg_restore -j and the table-by-table "
        "VACUUM spread over more jobs, but one large table's COPY or index build bounds its "
        "section); the download and the fixed cost are unchanged. Past the largest measured "
        "size the fit assumes the per-GB cost stays linear, which holds while an index build's "
        "working set (an HNSW graph, a sort) fits maintenance_work_mem.",
    ]
    return lines


def render(sizes: list[dict], command: str) -> str:
    sizes = sorted(sizes, key=restored_gb)
    where = sizes[-1]["machine"]
    loads = ", ".join(
        f"{s['scale']}: {s['machine']['load_before'][0]:.2f}/{s['machine']['load_after'][0]:.2f}"
        for s in sizes
    )
    begin, end = curve_markers(sizes[-1]["shape"])
    return "\n".join(
        [
            begin,
            f"### {sizes[-1]['shape']}: the cost curve (written by `bench/cost_curve.py`)",
            "",
            f"Measured on {where['arch']}, {where['cpu']}, {where['cores']} cores, "
            f"{where['mem_gb']} GB RAM, PostgreSQL {where['postgres']}, dates "
            f"{', '.join(sorted({s['machine']['date'] for s in sizes}))}; load average before/"
            f"after per scale {loads}. Command: `{command}`.",
            "",
            "Wall seconds from nothing to nothing. s/GB: the project's seconds per restored GB "
            "(pg_database_size after the restore) of each stage, from its run's metadata "
            "(VACUUM ANALYZE and the counts run table by table in one step; its wall is split "
            "between them in proportion to their summed statement times). Disk: the peak used "
            "bytes of the work directory's filesystem above the start (the dump and the "
            "cluster), per restored GB. RSS: the verify process's peak.",
            "",
            *curve_table(sizes),
            "",
            *estimate_lines(sizes),
            end,
        ]
    )


def curve_markers(shape: str) -> tuple[str, str]:
    return f"<!-- cost-curve:{shape}:begin -->", f"<!-- cost-curve:{shape}:end -->"


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def save_result(path: Path, size: dict) -> None:
    """Keep one entry per (shape, scale): the latest measurement replaces an older one."""
    kept = [
        s for s in load_results(path) if (s["shape"], s["scale"]) != (size["shape"], size["scale"])
    ]
    path.write_text(json.dumps([*kept, size], indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="busflow")
    parser.add_argument("--scales", type=int, nargs="*", default=[])
    parser.add_argument(
        "--paths", nargs="+", default=["floor", "project"], choices=["naive", "floor", "project"]
    )
    parser.add_argument("--dumps", type=Path, help="build each dump here once, reuse it after")
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--results", type=Path, default=REPO / "docs/cost-curve.json")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--build-only", action="store_true", help="build the dumps into --dumps")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, vb._interrupt)
    cache = args.dumps or Path(tempfile.mkdtemp(prefix="curve-dumps-", dir=args.workdir))
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o711)
    shape = SHAPES[args.shape]
    try:
        for scale in sorted(args.scales):
            day = dt.date(2026, 1, 1) + dt.timedelta(days=scale // 100)  # a key per scale
            dump = cached_dump(cache, shape, scale, day)
            if args.build_only:
                continue
            save_result(args.results, measure_size(cache, args.workdir, shape, dump, args.paths))
    except KeyboardInterrupt:
        print("\ninterrupted: removed what the bench started", file=sys.stderr)
        return 130
    finally:
        if args.dumps is None:
            shutil.rmtree(cache, ignore_errors=True)
    if args.build_only:
        return 0
    sizes = [s for s in load_results(args.results) if s["shape"] == args.shape]
    if not sizes or not all("project" in s["results"] for s in sizes):
        print("no project measurement to draw a curve from", file=sys.stderr)
        return 1
    text = render(sizes, "make bench-curve")
    print(text, flush=True)
    if args.write_docs:
        write_docs_block(REPO / "docs/performance.md", args.shape, text)
        print("written to docs/performance.md", flush=True)
    return 0


def write_docs_block(path: Path, shape: str, text: str) -> None:
    replace_block(path, *curve_markers(shape), text)


if __name__ == "__main__":
    sys.exit(main())
