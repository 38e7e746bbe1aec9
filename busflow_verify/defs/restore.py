"""Runbook step 3 and F2: download once, restore section by section into the restore target."""

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from busflow_verify.core.checks.fingerprint import FingerprintRequest
from busflow_verify.core.failures import FindingError
from busflow_verify.core.restore.sequence import (
    RestoreOutcome,
    free_space_before_download,
    restore_into,
)
from busflow_verify.core.store.download import expected_digests
from busflow_verify.core.store.endpoints import covered_by_mirror
from busflow_verify.core.store.listing import DumpObject
from busflow_verify.core.store.transfer import Transfer, fetch_dump
from busflow_verify.defs.checks import restore_budget_check, restore_check, transfer_check
from busflow_verify.defs.descriptions import describe
from busflow_verify.defs.findings import check_result, fail_step
from busflow_verify.defs.jobs import RESTORE_POOL
from busflow_verify.defs.locate import endpoint_failure
from busflow_verify.defs.metadata_tables import table
from busflow_verify.defs.partitions import nightly_dump_partitions
from busflow_verify.defs.plots import restore_plots
from busflow_verify.defs.resources import BackupStore, RestoreTarget, VerifySettings
from busflow_verify.defs.rto_budget import restore_budget_result
from busflow_verify.defs.run_history import restored_size_history
from busflow_verify.defs.size_guard import SizeGuardOutcome

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
    size_guard: SizeGuardOutcome,
    backup_store: BackupStore,
    restore_target: RestoreTarget,
    verify_settings: VerifySettings,
):
    config = verify_settings.verify_config()
    if not size_guard["passed"] and not config.size_guard.restore_on_failure:
        yield from _not_restored(context, config, size_guard)
        return  # no Output: the counts and the sweep are skipped; the check says why
    session = restore_target.session
    target = session.target
    _check_free_space(context, target, dump_object, config.disk_space)
    local = target.scratch_dir() / Path(dump_object.key).name
    transfer = _download(context, backup_store, dump_object, local)
    outcome = restore_into(
        target,
        local,
        dump_object.key,
        context.partition_key,
        context.run_id,
        restore_target.parallel_jobs(),
        context.log.info,
    )
    if outcome.db is not None:
        session.mark_restored(outcome.db.owner)
    summary = _summary(outcome, transfer, target.kind)
    manifest = dump_object.manifest.usable() if dump_object.manifest else None
    yield dg.Output(
        RestoredDump(
            summary,
            manifest.exact_counts() if manifest else None,
            manifest.fingerprint_requests() if manifest else {},
        ),
        metadata={
            "restored": summary["restored"],
            "format": str(summary["format"]),
            "download_seconds": transfer.seconds,
            "restore_seconds": summary["restore_seconds"] or 0.0,
            "sections": table(SECTION_COLUMNS, summary["sections"]),
            **restore_plots(dump_object, summary),  # the Plots tab (defs/plots.py)
            "restore": dg.MetadataValue.json(summary),
        },
    )
    yield _transfer_result(transfer)
    yield check_result(
        restore_check,
        [outcome.finding] if outcome.finding else [],
        {"format": str(summary["format"])},
        passed_note=f"restored {dump_object.key} ({summary['format']} format)",
    )
    yield restore_budget_result(context, summary, config.restore_budget, size_guard.verified)


@dataclass(frozen=True)
class RestoredDump:
    """restored_db's value for the later steps of the run: the restore's summary (its metadata
    too) and, from the manifest read when the dump was located, the source's exact counts (F1's
    triage compares the restored counts with them) and the fingerprints to compute over the
    restored tables (in the scan that counts them)."""

    summary: dict
    source_counts: dict[str, int] | None
    fingerprints: dict[str, FingerprintRequest] = field(default_factory=dict)


def _summary(outcome: RestoreOutcome, transfer: Transfer, target_kind: str) -> dict:
    """The restore's numbers and facts, as restored_db's `restore` metadata shows them."""
    report = outcome.report
    return {
        **report.to_dict(),
        "restored": outcome.restored,
        "restore_target": target_kind,
        "postgres_major": outcome.postgres_major,
        "cron_jobs": outcome.cron_jobs,
        "download_seconds": transfer.seconds,
        "downloaded_from": transfer.dump.endpoint,
        "digests_checked": sorted(transfer.digests),
        "restore_seconds": report.seconds,
        "restored_bytes": outcome.restored_bytes,  # pg_database_size
        "dump_sha256": transfer.sha256,  # of the bytes restored (the run's evidence)
    }


def _not_restored(context: dg.AssetExecutionContext, config, size_guard: SizeGuardOutcome):
    """The size guard failed and size_guard.restore_on_failure is false: the checks say why."""
    note = (
        "not restored: the size guard failed and size_guard.restore_on_failure is false, "
        "so F1's evidence (row counts) was not gathered"
    )
    context.log.warning(note)
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
    yield restore_budget_result(context, None, config.restore_budget, size_guard.verified)


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


def _download(context, backup_store: BackupStore, dump: DumpObject, local: Path) -> Transfer:
    """The one download, from the endpoint that listed the dump or else its mirror
    (core/store/transfer.py), checked by every digest the store gives and by the producer's
    manifest (its size and SHA-256), read when the dump was located."""
    manifest = dump.manifest.usable() if dump.manifest else None
    if dump.manifest and (problem := dump.manifest.problem()):
        context.log.warning(
            f"the manifest beside {dump.key} is not used for the download: {problem}"
        )
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


def _check_free_space(context, target, dump: DumpObject, config) -> None:
    """Disk before work (core/restore/sequence.py): HOST_OUT_OF_SPACE before a byte is written."""
    if not config.check:
        return
    history = restored_size_history(context.instance, context.partition_key)
    try:
        checked = free_space_before_download(target, dump.size_bytes, history, config)
    except FindingError as exc:
        raise fail_step(exc.finding) from None
    context.log.info(checked.note())
