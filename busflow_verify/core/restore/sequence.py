"""Runbook step 3 as one sequence, owned here rather than by the Dagster layer.

Before the download, `free_space_before_download` checks that the dump and the restored database
fit (core/diskspace.py). After it, `restore_into` inspects the dump (format, version, TOC or plain
scan), chooses the server that restores it (the ephemeral target; the others bring their own),
opens the target's empty database and restores it section by section (core/restore/restorer.py),
then measures what the later steps and the trends need. A host's own fault met on the way (a
full disk at initdb, CREATE DATABASE or in a section) is named as the host's, never F2.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from busflow_verify.core.checks.row_counts import database_bytes
from busflow_verify.core.checks.scrub_jobs import restored_cron_jobs
from busflow_verify.core.config import DiskSpaceConfig
from busflow_verify.core.diskspace import SpaceNeed, check_space, restored_estimate
from busflow_verify.core.failures import Finding, FindingError
from busflow_verify.core.hostfaults import host_fault
from busflow_verify.core.postgres.privilege import RestoreDatabase
from busflow_verify.core.restore.restorer import Restorer, RestoreReport
from busflow_verify.core.targets.base import Target, server_major


@dataclass(frozen=True)
class SpaceChecked:
    """What the free-space check measured: the needs, and how the restored size was estimated."""

    needs: list[SpaceNeed]
    restored_estimate: str

    def note(self) -> str:
        return (
            "free space checked: "
            + "; ".join(f"{n.what} {n.bytes:,} bytes at {n.path}" for n in self.needs)
            + f" (restored size: {self.restored_estimate})"
        )


def free_space_before_download(
    target: Target, dump_bytes: int, history: list[tuple[int, int]], config: DiskSpaceConfig
) -> SpaceChecked:
    """Disk before work: the download and (for a local cluster) the restored database, estimated
    from `history` ((dump bytes, restored bytes) of earlier restores), must fit with the
    configured headroom. Too little is HOST_OUT_OF_SPACE, raised before a byte is written."""
    restored, how = restored_estimate(dump_bytes, history, config.restored_per_dump_byte)
    needs = target.space_needs(dump_bytes, restored)
    if finding := check_space(needs, config.headroom_ratio):
        finding.details["restored_estimate"] = how
        raise FindingError(finding)
    return SpaceChecked(needs, how)


@dataclass
class RestoreOutcome:
    """One restore: the report (sections, timings, what was left out), the database when it
    restored, the finding when it did not (F2, or the host's fault), and the restored copy's
    facts the later steps use."""

    report: RestoreReport
    db: RestoreDatabase | None = None
    finding: Finding | None = None
    postgres_major: int | None = None
    cron_jobs: list[dict[str, Any]] = field(default_factory=list)  # F1's scrub-job evidence
    restored_bytes: int | None = None  # pg_database_size of the copy

    @property
    def restored(self) -> bool:
        return self.finding is None


def restore_into(
    target: Target,
    dump_path: Path,
    dump_key: str,
    partition: str,
    run_id: str,
    jobs: int,
    log,
) -> RestoreOutcome:
    """Inspect → choose the server → open the target's database → restore, section by section.
    The downloaded dump and anything unpacked from it are removed afterwards, whatever happened."""
    scratch = target.scratch_dir()
    restorer = Restorer(dump_path, dump_key, None, target.bin_dir, scratch, jobs=jobs, log=log)
    restorer.data_path, restorer.data_host = target.data_path(), target.data_host
    try:
        db = _restore(target, restorer, partition, run_id, log)
    except FindingError as exc:
        return RestoreOutcome(restorer.report, finding=exc.finding)
    finally:
        clear_scratch(scratch)
    return RestoreOutcome(
        restorer.report,
        db,
        postgres_major=server_major(db.owner),
        cron_jobs=restored_cron_jobs(db.owner),
        restored_bytes=database_bytes(
            lambda: psycopg.connect(**db.owner.kwargs(), autocommit=True)
        ),
    )


def _restore(
    target: Target, restorer: Restorer, partition: str, run_id: str, log
) -> RestoreDatabase:
    """The sequence, with an error of the host's own (not the dump's) named as the host's."""
    try:
        restorer.inspect()
        choice = target.select_server(restorer.needs())
        if choice is not None:
            if choice.server is None:
                raise FindingError(restorer.no_server_reads(choice))
            log(f"restoring with {choice.server.label}: {choice.reason}")
        db = target.open(partition, run_id, choice)
        restorer.attach(db, target.bin_dir, choice)
        restorer.run()
        return db
    except FindingError:
        raise
    except Exception as exc:  # a full disk at initdb, CREATE DATABASE, unpacking: the host's
        stage = restorer.report.sections[-1].section if restorer.report.sections else None
        where = f"restoring {stage}" if stage else "initdb or CREATE DATABASE"
        fault = host_fault(exc, where, target.data_path(), where=target.data_host)
        if fault is None:
            raise
        raise FindingError(fault) from None


def clear_scratch(scratch: Path) -> None:
    """The downloaded dump and anything unpacked from it are not needed after the restore."""
    for entry in scratch.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
