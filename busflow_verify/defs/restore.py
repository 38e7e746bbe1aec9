"""Runbook step 3 and F2: download once, restore section by section into the restore target."""

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import dagster as dg

from busflow_verify.core.download import DownloadError, download
from busflow_verify.core.failures import Finding, FindingError
from busflow_verify.core.privilege import RestoreDatabase
from busflow_verify.core.restore import Restorer, restored_cron_jobs
from busflow_verify.core.store import DumpObject, store_error_finding
from busflow_verify.core.targets import server_major
from busflow_verify.defs.checks import restore_check
from busflow_verify.defs.descriptions import describe
from busflow_verify.defs.findings import check_result, fail_step
from busflow_verify.defs.metadata_tables import table
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.resources import BackupStore, RestoreSession, RestoreTarget, VerifySettings

SECTION_COLUMNS = [
    ("section", "string", "pg_restore --section (split-section restore, F2 step 4)"),
    ("seconds", "float", "wall time of the section"),
    ("ok", "bool", "the section restored"),
    ("error", "string", "pg_restore's error, when it failed"),
]


@dg.asset(
    partitions_def=nightly_dump_partitions,
    group_name="backup_verify",
    kinds={"postgres"},
    ins={"size_guard": dg.AssetIn("size_check")},
    check_specs=[restore_check],
    output_required=False,
    description=describe(
        3,
        "restore into a disposable Postgres",
        "The dump downloaded once to local scratch (streamed, bounded memory) and restored into a "
        "disposable Postgres that lives for this run: pre-data, then data and post-data in "
        "parallel (-j), without owners or privileges; the sections table times each. A dump that "
        "failed the size guard is still restored to gather F1's evidence unless "
        "size_guard.restore_on_failure is false.",
        ["RESTORE_FAILED"],
    ),
)
def restored_db(
    context: dg.AssetExecutionContext,
    dump_object: DumpObject,
    size_guard: dict,
    backup_store: BackupStore,
    restore_target: RestoreTarget,
    verify_settings: VerifySettings,
):
    if (
        not size_guard["passed"]
        and not verify_settings.verify_config().size_guard.restore_on_failure
    ):
        note = (
            "not restored: the size guard failed and size_guard.restore_on_failure is false, "
            "so F1's evidence (row counts) was not gathered"
        )
        context.log.warning(note)
        # no Output: the counts and the sweep are skipped; the check says why, and is no pass
        yield dg.AssetCheckResult(
            check_name=restore_check.name,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=note,
            metadata={"skipped": True},
        )
        return
    session = restore_target.session
    scratch = session.target.scratch_dir()
    local = scratch / Path(dump_object.key).name
    download_seconds = _download(context, backup_store, dump_object, local)
    restorer = Restorer(
        local,
        dump_object.key,
        None,
        session.target.bin_dir,
        scratch,
        jobs=restore_target.parallel_jobs(),
        log=context.log.info,
    )
    findings, db = [], None
    try:
        db = _restore(context, session, restorer)
    except FindingError as exc:
        findings.append(exc.finding)
    finally:
        _clear(scratch)
    report = restorer.report
    sections = [asdict(s) for s in report.sections]
    summary = {
        **report.to_dict(),
        "restored": not findings,
        "restore_target": session.target.kind,
        "postgres_major": server_major(db.owner) if db else None,
        "cron_jobs": restored_cron_jobs(db.owner) if db and not findings else [],
        "download_seconds": download_seconds,
        "restore_seconds": report.seconds,
    }
    yield dg.Output(
        summary,
        metadata={
            "restored": summary["restored"],
            "format": str(summary["format"]),
            "download_seconds": download_seconds,
            "restore_seconds": summary["restore_seconds"] or 0.0,
            "sections": table(SECTION_COLUMNS, sections),
            "restore": dg.MetadataValue.json(summary),
        },
    )
    yield check_result(
        restore_check,
        findings,
        {"format": str(summary["format"])},
        passed_note=f"restored {dump_object.key} ({summary['format']} format)",
    )


def _restore(context, session: RestoreSession, restorer: Restorer) -> RestoreDatabase:
    """Inspect the dump, pick the server that restores it (ephemeral target), restore."""
    restorer.inspect()
    choice = session.target.select_server(restorer.needs())
    if choice is not None:
        if choice.server is None:
            raise FindingError(restorer.no_server_reads(choice))
        context.log.info(f"restoring with {choice.server.label}: {choice.reason}")
    db = session.target.open(context.partition_key, context.run_id, choice)
    restorer.attach(db, session.target.bin_dir, choice)
    restorer.run()
    session.mark_restored(db.owner)
    return db


def _download(context, backup_store: BackupStore, dump: DumpObject, local: Path) -> float:
    client = backup_store.endpoint(dump.endpoint).client()
    started = time.monotonic()
    try:
        download(client, dump, local, report=context.log.info)
    except DownloadError as exc:
        raise fail_step(
            Finding("RESTORE_FAILED", str(exc), {"cause": "download_incomplete", "key": dump.key})
        ) from None
    except Exception as exc:
        finding = store_error_finding(exc, dump.endpoint, dump.bucket)
        if finding is None:
            raise
        raise fail_step(finding) from None
    seconds = round(time.monotonic() - started, 3)
    rate = dump.size_bytes / seconds / 1e6 if seconds else 0.0
    context.log.info(
        f"downloaded {dump.size_bytes:,} bytes of {dump.key} in {seconds} s ({rate:.1f} MB/s)"
    )
    return seconds


def _clear(scratch: Path) -> None:
    """The downloaded dump and anything unpacked from it are not needed after the restore."""
    for entry in scratch.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
