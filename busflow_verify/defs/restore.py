"""Runbook step 3 and F2: download once, restore section by section into the restore target."""

import shutil
from dataclasses import asdict
from pathlib import Path

import dagster as dg

from busflow_verify.core.diskspace import check_space, restored_estimate
from busflow_verify.core.download import expected_digests
from busflow_verify.core.failures import FindingError
from busflow_verify.core.hostfaults import host_fault
from busflow_verify.core.manifest import Manifest, fetch_manifest
from busflow_verify.core.privilege import RestoreDatabase
from busflow_verify.core.restore import Restorer, restored_cron_jobs
from busflow_verify.core.store import DumpObject, covered_by_mirror
from busflow_verify.core.targets import server_major
from busflow_verify.core.transfer import Transfer, fetch_dump
from busflow_verify.defs.checks import restore_check, transfer_check
from busflow_verify.defs.descriptions import describe
from busflow_verify.defs.findings import check_result, fail_step
from busflow_verify.defs.jobs import RESTORE_POOL
from busflow_verify.defs.locate import endpoint_failure
from busflow_verify.defs.metadata_tables import table
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.plots import (
    restore_budget_check,
    restore_budget_result,
    restore_plots,
    restored_bytes,
)
from busflow_verify.defs.resources import BackupStore, RestoreSession, RestoreTarget, VerifySettings
from busflow_verify.defs.run_history import restored_size_history

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
    check_specs=[transfer_check, restore_check, restore_budget_check],
    output_required=False,
    pool=RESTORE_POOL,  # one run that restores per restore host, whoever launched it
    description=describe(
        3,
        "restore into a disposable Postgres",
        "The dump downloaded once to local scratch (parallel ranged GETs, bounded memory, its "
        "size and every digest the store gives checked; from the mirror when the primary cannot "
        "deliver it, F5) after a free-space check, and restored into a disposable Postgres that "
        "lives for this run: pre-data, then data and post-data in parallel (-j), without owners "
        "or privileges; the sections table times each. A full disk is the host's "
        "(HOST_OUT_OF_SPACE), never F2. A dump that failed the size guard is still restored to "
        "gather F1's evidence unless size_guard.restore_on_failure is false.",
        ["RESTORE_FAILED", "OFFSITE_ENDPOINT_DOWN", "HOST_OUT_OF_SPACE", "RTO_EXCEEDED"],
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
    config = verify_settings.verify_config()
    if not size_guard["passed"] and not config.size_guard.restore_on_failure:
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
        yield dg.AssetCheckResult(
            check_name=transfer_check.name,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="not downloaded: the restore was skipped",
            metadata={"skipped": True},
        )
        yield restore_budget_result(context, None, config.restore_budget)
        return
    session = restore_target.session
    scratch = session.target.scratch_dir()
    local = scratch / Path(dump_object.key).name
    _check_free_space(context, session.target, dump_object, config.disk_space)
    transfer = _download(context, backup_store, dump_object, local)
    download_seconds = transfer.seconds
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
        "downloaded_from": transfer.dump.endpoint,
        "digests_checked": sorted(transfer.digests),
        "restore_seconds": report.seconds,
        "restored_bytes": restored_bytes(session) if db else None,  # pg_database_size
    }
    yield dg.Output(
        summary,
        metadata={
            "restored": summary["restored"],
            "format": str(summary["format"]),
            "download_seconds": download_seconds,
            "restore_seconds": summary["restore_seconds"] or 0.0,
            "sections": table(SECTION_COLUMNS, sections),
            **restore_plots(dump_object, summary),  # the Plots tab (defs/plots.py)
            "restore": dg.MetadataValue.json(summary),
        },
    )
    yield _transfer_result(transfer)
    yield check_result(
        restore_check,
        findings,
        {"format": str(summary["format"])},
        passed_note=f"restored {dump_object.key} ({summary['format']} format)",
    )
    yield restore_budget_result(context, summary, config.restore_budget)


def _transfer_result(transfer: Transfer) -> dg.AssetCheckResult:
    """F5 step 1 for the bytes: informational when the mirror delivered what the primary could
    not."""
    for fault in transfer.faults:
        covered_by_mirror(fault, transfer.dump.endpoint, "transfer fault")
    served = transfer.dump
    return check_result(
        transfer_check,
        transfer.faults,
        {"endpoint": served.endpoint, "digests_checked": ", ".join(sorted(transfer.digests))},
        passed_note=f"{served.key} came intact from the {served.endpoint} endpoint "
        f"(size{''.join(', ' + d for d in sorted(transfer.digests))})",
        severity=dg.AssetCheckSeverity.WARN,
    )


def _restore(context, session: RestoreSession, restorer: Restorer) -> RestoreDatabase:
    """Inspect the dump, pick the server that restores it (ephemeral target), restore."""
    target = session.target
    restorer.data_path, restorer.data_host = target.data_path(), target.data_host
    try:
        return _inspect_and_restore(context, session, restorer)
    except FindingError:
        raise
    except Exception as exc:  # a full disk at initdb, CREATE DATABASE, unpacking: the host's
        stage = restorer.report.sections[-1].section if restorer.report.sections else None
        where = f"restoring {stage}" if stage else "initdb or CREATE DATABASE"
        fault = host_fault(exc, where, target.data_path(), where=target.data_host)
        if fault is None:
            raise
        raise FindingError(fault) from None


def _inspect_and_restore(context, session: RestoreSession, restorer: Restorer) -> RestoreDatabase:
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


def _download(context, backup_store: BackupStore, dump: DumpObject, local: Path) -> Transfer:
    """The one download, from the endpoint that listed the dump or else its mirror
    (core/transfer.py), checked by every digest the store gives and by the producer's manifest
    (its size and SHA-256) when there is one beside the dump."""
    manifest = _manifest_beside(context, backup_store, dump)
    sha256 = manifest.sha256 if manifest else None

    def expected(candidate: DumpObject):
        return expected_digests(candidate, sha256)

    try:
        transfer = fetch_dump(
            dump,
            backup_store.endpoints(),
            local,
            expected,
            report=context.log.info,
            expected_size=manifest.size_bytes if manifest else None,
        )
    except FindingError as exc:
        raise endpoint_failure(context, exc.finding) from None
    seconds, served = transfer.seconds, transfer.dump
    rate = served.size_bytes / seconds / 1e6 if seconds else 0.0
    checked = ", ".join(sorted(transfer.digests)) or "size only"
    context.log.info(
        f"downloaded {served.size_bytes:,} bytes of {served.key} from the {served.endpoint} "
        f"endpoint in {seconds} s ({rate:.1f} MB/s; checked: {checked})"
    )
    return transfer


def _manifest_beside(context, backup_store: BackupStore, dump: DumpObject) -> Manifest | None:
    """The producer's manifest, for the download's check; a missing or unreadable one checks
    nothing here (the manifest check names it)."""
    client = backup_store.endpoint(dump.endpoint).client()
    try:
        return fetch_manifest(client, dump.bucket, dump.key)
    except Exception as exc:  # ManifestError, or the endpoint: reported by the manifest check
        context.log.warning(f"the manifest beside {dump.key} is not used for the download: {exc}")
        return None


def _check_free_space(context, target, dump: DumpObject, config) -> None:
    """Disk before work (core/diskspace.py): HOST_OUT_OF_SPACE before a byte is written."""
    if not config.check:
        return
    history = restored_size_history(context.instance, context.partition_key)
    restored, how = restored_estimate(dump.size_bytes, history, config.restored_per_dump_byte)
    needs = target.space_needs(dump.size_bytes, restored)
    if finding := check_space(needs, config.headroom_ratio):
        finding.details["restored_estimate"] = how
        raise fail_step(finding)
    context.log.info(
        "free space checked: "
        + "; ".join(f"{n.what} {n.bytes:,} bytes at {n.path}" for n in needs)
        + f" (restored size: {how})"
    )


def _clear(scratch: Path) -> None:
    """The downloaded dump and anything unpacked from it are not needed after the restore."""
    for entry in scratch.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
