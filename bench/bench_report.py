"""The tables `verify_bench.py` prints and writes into docs/performance.md.

The project's own stages are read from its run's event log: step starts and ends, and the
progress lines the steps log (cluster started, VACUUM ANALYZE, counted, sweeps done), so the
time outside them (process start, imports, Dagster's run and event bookkeeping) is measured,
not guessed.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

from busflow_verify.core.postgres.cluster import find_bin_dir

STAGES = [
    "startup",
    "download",
    "cluster_start",
    "restore",
    "stream_restore",
    "vacuum_analyze",
    "counts",
    "sweep",
    "cluster_stop",
    "other",
]
ABOUT = {
    "startup": "process start, imports, definitions, instance, run launch (project)",
    "download": "the dump to a local file",
    "cluster_start": "initdb and start of the restore target (project: the wait left after "
    "starting it in the background at run start)",
    "restore": "pg_restore from the local file (project: sniff, TOC, 3 sections)",
    "stream_restore": "rclone cat \\| pg_restore, no -j (naive)",
    "vacuum_analyze": "VACUUM ANALYZE (project: with the counts, table by table, 2 at a time)",
    "counts": "count(*) of every table",
    "sweep": "the soft FK's orphan count",
    "cluster_stop": "stop and remove the cluster",
    "other": "the rest of the wall time (project: Dagster steps, events, verdict, alert, exit)",
}


def machine(load_before, load_after) -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = int(
        next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    )
    pg_restore = str(find_bin_dir() / "pg_restore")
    version = subprocess.run(
        [pg_restore, "--version"], capture_output=True, text=True, check=True
    ).stdout
    pg = version.split("(PostgreSQL)")[-1].split()
    return {
        "date": dt.date.today().isoformat(),
        "arch": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gb": round(mem / 1024 / 1024),
        "postgres": pg[0] if pg else "?",
        "load_before": load_before,
        "load_after": load_after,
    }


def markers(shape: str) -> tuple[str, str]:
    """Where a shape's latest run sits in docs/performance.md."""
    return f"<!-- verify-bench:{shape}:begin -->", f"<!-- verify-bench:{shape}:end -->"


def project_stages(home: Path, result) -> dict[str, float]:
    """Seconds per stage of one verify run, from its event log and its verdict."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        logs = instance.all_logs(result.extra["run_id"])
    first, last = logs[0].timestamp, logs[-1].timestamp

    def at(text: str, last_one: bool = False) -> float:
        found = [e.timestamp for e in logs if text in (e.user_message or "")]
        return found[-1] if last_one else found[0]

    def step_start(step: str) -> float:
        return next(
            e.timestamp
            for e in logs
            if e.dagster_event
            and e.dagster_event.step_key == step
            and e.dagster_event.event_type_value == "STEP_START"
        )

    restore = result.extra["restore"]
    stages = {
        "startup": first - result.extra["launched"],
        # started in the background at run start: only what restored_db still had to wait
        "cluster_start": max(0.0, at("disposable Postgres") - step_start("restored_db")),
        "download": restore["download_seconds"],
        "restore": restore["restore_seconds"],
        "vacuum_analyze": at("counted ") - step_start("row_count_report"),
        "sweep": at("done: ", last_one=True) - step_start("orphan_report"),
        "cluster_stop": at("stopped and removed") - at("done: ", last_one=True),
    }
    stages["other"] = result.wall - sum(stages.values())
    result.extra.update(
        events=len(logs), run_seconds=last - first, after_run=result.extra["exited"] - last
    )
    return {k: round(v, 2) for k, v in stages.items()}


def _summary_row(dump, naive, floor, project) -> str:
    return (
        f"| {dump.scale} | {dump.db_bytes / 1e9:.2f} GB | {dump.dump_bytes / 1e6:.0f} MB "
        f"| {naive.wall:.1f} | {floor.wall:.1f} | {project.wall:.1f} "
        f"| {project.wall / floor.wall:.2f} | {project.wall / naive.wall:.2f} "
        f"| {floor.wall / naive.wall:.2f} "
        f"| {project.extra['rss_self_mb']:.0f} MB ({project.extra['rss_children_mb']:.0f} MB "
        f"{project.extra['rss_children_name']}) "
        f"| {project.extra['download_mb_s']:.0f} / {floor.extra['download_mb_s']:.0f} "
        f"= {project.extra['download_mb_s'] / floor.extra['download_mb_s']:.2f} |"
    )


def _stage_table(largest) -> list[str]:
    naive, floor, project = largest
    lines = ["| stage | naive s | floor s | project s | what |", "|---|---|---|---|---|"]
    for name in STAGES:
        cells = []
        for r in (naive, floor, project):
            value = r.stages.get(name)
            if name == "other" and r.path != "project":
                value = round(r.wall - sum(r.stages.values()), 2)
            cells.append("" if value is None else f"{value:.2f}")
        lines.append(f"| {name} | {' | '.join(cells)} | {ABOUT[name]} |")
    lines.append(f"| **wall** | {naive.wall:.2f} | {floor.wall:.2f} | {project.wall:.2f} | |")
    return lines


def _fixed_cost(fixed: dict, home: Path) -> str:
    """The paragraph on the tiny dump: what a run costs above the floor's own steps."""
    dump, p = fixed["dump"], fixed["project"]
    stages = project_stages(home, p)
    over = p.wall - fixed["floor"]
    split = ", ".join(f"{name} {stages[name]:.2f}" for name in STAGES if name in stages)
    return (
        f"Fixed cost, on the {dump.shape.name} scale-{dump.scale} dump "
        f"({dump.dump_bytes / 1e6:.1f} MB), median of {fixed['runs']} alternated runs: floor "
        f"{fixed['floor']:.2f} s, project {p.wall:.2f} s, so the project spends "
        f"**{over:.2f} s above the floor's own steps** (target <= 1.5 s: "
        f"{'met' if over <= 1.5 else 'not met'}). The project's seconds: {split}; its run "
        f"wrote {p.extra['events']} events."
    )


def report(
    dumps, rows, race: dict, where: dict, args: str, home: Path, fixed: dict | None = None
) -> str:
    shape = dumps[-1].shape.name
    begin, end = markers(shape)
    for results in rows:
        results[2].stages = project_stages(home, results[2])
    largest = rows[-1]
    p = largest[2]
    rss = [r[2].extra["rss_self_mb"] for r in rows]
    header = (
        f"Measured {where['date']} on {where['arch']}, {where['cpu']}, {where['cores']} "
        f"cores, {where['mem_gb']} GB RAM, PostgreSQL {where['postgres']}; load average "
        f"{where['load_before'][0]:.2f} before and {where['load_after'][0]:.2f} after "
        f"(1 min). Command: `.venv/bin/python bench/verify_bench.py {args} --write-docs`."
    )
    legend = (
        "Wall seconds from nothing to nothing (cluster creation and removal included). "
        "RSS: peak of the verify process itself (getrusage at its exit; in brackets the "
        "largest peak among its child processes, sampled every 0.25 s, and which one). "
        "floor/naive: the best any path that restores the dump with pg_restore reached "
        "against the naive one on this machine. Download: the project's MB/s (restore "
        "metadata) / `rclone copyto`'s MB/s (its whole command) for the same object, each "
        "once in its path."
    )
    race_line = (
        f"Download of the {shape} scale-{dumps[-1].scale} dump alone, best of 3: the "
        f"project's `core.store.download.download` {race['project']:.0f} MB/s, `rclone copyto` "
        f"{race['rclone']:.0f} MB/s (its whole command, process start included): "
        f"{race['project'] / race['rclone']:.2f}x."
    )
    events = (
        f"The project's run wrote {p.extra['events']} event-log entries; the Dagster run "
        f"itself lasted {p.extra['run_seconds']:.2f} s, and {p.extra['after_run']:.2f} s "
        "passed from its last event to the process's exit (reading the verdict back, the "
        "#ops message, exit)."
    )
    smallest = rows[0]
    targets = (
        f"Targets: project/floor {smallest[2].wall / smallest[1].wall:.2f} at the smallest "
        f"size, scale {dumps[0].scale} (target <= 1.0), and {p.wall / largest[1].wall:.2f} at "
        f"the largest, scale {dumps[-1].scale} (<= 0.9); verify RSS {min(rss):.0f}-"
        f"{max(rss):.0f} MB over a {dumps[-1].dump_bytes / dumps[0].dump_bytes:.1f}x dump "
        f"range (<= 300 MB, flat); project/naive {p.wall / largest[0].wall:.2f} at the "
        f"largest (the floor itself {largest[1].wall / largest[0].wall:.2f}); download "
        f"{race['project'] / race['rclone']:.2f}x rclone (>= 0.9)."
    )
    summary = [
        (
            "| scale | database | dump | naive | floor | project | project/floor "
            "| project/naive | floor/naive | verify RSS (children) "
            "| download project / rclone |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[_summary_row(d, *r) for d, r in zip(dumps, rows)],
    ]
    title = f"### {shape}: latest run (written by `bench/verify_bench.py --write-docs`)"
    lines = [
        begin,
        title,
        "",
        header,
        "",
        legend,
        "",
        *summary,
        "",
        f"Where the time went at {shape} scale {dumps[-1].scale}:",
        "",
        *_stage_table(largest),
        "",
        race_line,
        "",
        events,
        "",
        *([_fixed_cost(fixed, home), ""] if fixed else []),
        targets,
        end,
    ]
    return "\n".join(lines)


def write_docs(path: Path, shape: str, text: str) -> None:
    """Replace the shape's section of docs/performance.md, or add it at the end."""
    replace_block(path, *markers(shape), text)


def replace_block(path: Path, begin: str, end: str, text: str) -> None:
    """Replace what lies between `begin` and `end` (both in `text`) in `path`, or append it."""
    current = path.read_text()
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + text + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(current)
