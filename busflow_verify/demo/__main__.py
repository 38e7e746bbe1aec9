"""`make demo`: a week of nightly Busflow dumps served over S3, verified by the real job.

Builds a small Busflow-shaped database night by night, dumps each night with pg_dump into
`.demo/s3/<bucket>/`, serves that folder with `rclone serve s3` on loopback, and runs
`busflow-verify verify` (the same Dagster job the UI and the schedule use) for the newest date and
for a date with a planted orphan surge. The Dagster instance is `.demo/dagster_home`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from busflow_verify import cli
from busflow_verify.core import config as cfg
from busflow_verify.core.store.manifest import manifest_key
from busflow_verify.demo.busflow_db import write_nightly_dumps
from busflow_verify.demo.s3server import RcloneS3Server

BUCKET = "busflow-backups"
DAYS = 7
PLANTED_DAYS_AGO = 3
LOST_ROWS_DAYS_AGO = 5  # a dump that lacks rows its manifest counted
# The demo's dumps are a few hundred KB, so the 10 GB floor is scaled down to fit them; every
# other threshold is the shipped configuration.
DEMO_MIN_BYTES = 10_000


def _prepare(root: Path) -> tuple[Path, Path, Path]:
    shutil.rmtree(root, ignore_errors=True)
    s3_root, home, config = root / "s3", root / "dagster_home", root / "config"
    for folder in (s3_root / BUCKET, home, config):
        folder.mkdir(parents=True)
    shipped = cfg.config_dir()
    verify = yaml.safe_load((shipped / cfg.VERIFY_FILE).read_text())
    verify["size_guard"]["min_bytes"] = DEMO_MIN_BYTES
    (config / cfg.VERIFY_FILE).write_text(
        "# The shipped verify.yaml with min_bytes scaled to the demo's small dumps.\n"
        + yaml.safe_dump(verify, sort_keys=False)
    )
    shutil.copyfile(shipped / cfg.ALLOWLIST_FILE, config / cfg.ALLOWLIST_FILE)
    repo_instance = Path(__file__).resolve().parents[2] / "dagster.yaml"
    if repo_instance.exists():
        shutil.copyfile(repo_instance, home / "dagster.yaml")
    return s3_root, home, config


def _verify(date: dt.date, quiet: bool = False) -> int:
    argv = ["verify", "--date", date.isoformat(), "--log-level", "ERROR"]
    if not quiet:
        return cli.main(argv)
    with contextlib.redirect_stdout(io.StringIO()):
        return cli.main(argv)


@dataclass(frozen=True)
class Demo:
    """The demo's folders and dates: `.demo/s3/<bucket>/` holds the dumps, `.demo/dagster_home`
    the Dagster instance, `.demo/config` the verify.yaml and allowlist."""

    s3_root: Path
    home: Path
    config: Path
    today: dt.date
    planted: dt.date
    lost_rows: dt.date | None = None


def build(root: Path) -> Demo:
    """A fresh `root` with a week of nightly dumps, the newest dated today (UTC)."""
    today = dt.datetime.now(dt.UTC).date()
    dates = [today - dt.timedelta(days=n) for n in range(DAYS - 1, -1, -1)]
    planted = today - dt.timedelta(days=PLANTED_DAYS_AGO)
    lost = today - dt.timedelta(days=LOST_ROWS_DAYS_AGO)
    s3_root, home, config = _prepare(root)
    started = time.monotonic()
    print(
        f"building {DAYS} nightly dumps ({dates[0]} .. {dates[-1]}); {planted} has a planted "
        "orphan surge (an application bug deleted referenced bookings); each dump is taken by "
        f"`busflow-verify dump` with its manifest; {lost}'s dump lacks 2% of the messages its "
        "manifest counted"
    )
    paths = write_nightly_dumps(
        s3_root / BUCKET, dates, planted={planted: "orphan_surge", lost: "lost_rows"}
    )
    for path in paths:
        print(f"  {path.name}  {path.stat().st_size:,} bytes  (+ {manifest_key(path.name)})")
    print(f"  ({time.monotonic() - started:.1f} s)")
    return Demo(s3_root, home, config, today, planted, lost)


@contextlib.contextmanager
def served(demo: Demo) -> Iterator[RcloneS3Server]:
    """The dumps on a loopback S3 server, and the BACKUP_* / DAGSTER_HOME variables pointing at
    it and the demo's instance, while the block runs; the server is stopped after, whatever
    happened."""
    server = RcloneS3Server(
        demo.s3_root, access_key="busflow-demo", secret_key=secrets.token_hex(16)
    )
    server.start()
    try:
        os.environ.update(
            {
                "BACKUP_PRIMARY_ENDPOINT": server.endpoint,
                "BACKUP_BUCKET": BUCKET,
                "BACKUP_ACCESS_KEY_ID": server.access_key,
                "BACKUP_SECRET_ACCESS_KEY": server.secret_key,
                "DAGSTER_HOME": str(demo.home),
                cfg.CONFIG_DIR_ENV: str(demo.config),
            }
        )
        print(f"\nS3 endpoint {server.endpoint} (rclone serve s3), bucket {BUCKET}\n")
        yield server
    finally:
        server.stop()


def verify_demo_dates(demo: Demo) -> tuple[int, int]:
    """Two baselines quietly, then the newest dump and the planted problem; their exit codes."""
    for baseline in (demo.planted - dt.timedelta(days=1), demo.today - dt.timedelta(days=1)):
        code = _verify(baseline, quiet=True)
        print(f"verified {baseline} first, as the row-count baseline (exit {code})")
    print(f"\n=== the newest dump ({demo.today}) ===")
    newest = _verify(demo.today)
    print(f"exit {newest}\n\n=== the date with a planted problem ({demo.planted}) ===")
    problem = _verify(demo.planted)
    print(f"exit {problem}")
    if demo.lost_rows is not None and _lost_rows_caught(demo) != 1:
        problem = 0  # the manifest's counts did not catch the dump that lost rows
    return newest, problem


def _lost_rows_caught(demo: Demo) -> int:
    """The dump that lacks rows its manifest counted, after a baseline of its own (so
    the row-count tolerance had something to compare with, and passed it)."""
    baseline = demo.lost_rows - dt.timedelta(days=1)
    code = _verify(baseline, quiet=True)
    print(f"\nverified {baseline} first, as the row-count baseline (exit {code})")
    print(f"\n=== a dump missing rows its manifest counted ({demo.lost_rows}) ===")
    code = _verify(demo.lost_rows)
    print(f"exit {code}")
    return code


def main() -> int:
    demo = build(Path.cwd() / ".demo")
    with served(demo):
        newest, problem = verify_demo_dates(demo)
    print(f"""
The runs above are recorded in {demo.home}. To browse lineage, partitions and check results:

  make ui    # builds the demo again, keeps its S3 server up, Dagster on http://127.0.0.1:3000

or, for these runs as they are (the S3 server has stopped: no new runs from the UI):

  DAGSTER_HOME={demo.home} .venv/bin/dagster dev -m busflow_verify.definitions""")
    return 0 if (newest, problem) == (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
