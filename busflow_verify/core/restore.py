"""Runbook step 3 and F2: sniff the dump's format, then restore it section by section.

Split-section restore (pre-data -> data -> post-data) is the runbook's canonical path (F2 step 4):
there is deliberately no single-stream option. Data and post-data run with `-j` from the local
file. Objects are restored without owners and privileges (`--no-owner --no-privileges`): the
disposable cluster has none of production's roles, and ownership is not what is being verified.
Plain-text dumps go through psql with ON_ERROR_STOP and no psqlrc.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from busflow_verify.core.failures import Finding, FindingError
from busflow_verify.core.pgcluster import ConnInfo

SECTIONS = ("pre-data", "data", "post-data")
CUSTOM_MAGIC = b"PGDMP"
SNIFF_BYTES = 4096


@dataclass
class SectionResult:
    section: str
    seconds: float
    ok: bool
    error: str | None = None


@dataclass
class RestoreReport:
    format: str
    dbname: str
    jobs: int
    sections: list[SectionResult] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sniff_format(path: Path, key: str) -> str:
    """'custom' or 'plain'; anything else is an F2 naming what the object looks like."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if head.startswith(CUSTOM_MAGIC):
        return "custom"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml")) or b"<html" in text[:512]:
        raise FindingError(Finding(
            "RESTORE_FAILED",
            f"{key} is an HTML/XML document, not a Postgres dump: the S3/MinIO endpoint served an "
            "error page (auth failure, common after a credential rotation); check the backup "
            "credentials (F2 step 1)",
            {"cause": "html_error_page", "key": key, "first_bytes": head[:120].decode("utf-8", "replace")},
        ))
    if _looks_like_plain_sql(head):
        return "plain"
    raise FindingError(Finding(
        "RESTORE_FAILED",
        f"{key} is not a Postgres dump: neither the PGDMP custom-format header nor plain-text SQL "
        f"({len(head)} bytes read); check the object in the bucket (F2 step 1)",
        {"cause": "not_a_dump", "key": key, "first_bytes_hex": head[:16].hex()},
    ))


def _looks_like_plain_sql(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return "PostgreSQL database dump" in text or bool(
        re.match(r"\s*(--|SET\s|CREATE\s|\\restrict\s|SELECT\s)", text)
    )


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


def restore(path: Path, key: str, target: ConnInfo, bin_dir: Path, jobs: int | None = None,
            log=None) -> RestoreReport:
    """Restore the local dump into the (existing, empty) database `target.dbname`."""
    fmt = sniff_format(path, key)
    report = RestoreReport(format=fmt, dbname=target.dbname, jobs=jobs or default_jobs())
    started = time.monotonic()
    steps = _custom_steps(path, target, bin_dir, report.jobs) if fmt == "custom" else \
        _plain_steps(path, target, bin_dir)
    for section, argv in steps:
        if log:
            log(f"restoring {section} of {key}")
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True)
        result = SectionResult(section, round(time.monotonic() - t0, 3), proc.returncode == 0)
        report.sections.append(result)
        if proc.returncode != 0:
            result.error = _first_error(proc.stderr)
            report.seconds = round(time.monotonic() - started, 3)
            raise FindingError(Finding(
                "RESTORE_FAILED",
                f"restoring {key} failed in section {section}: {result.error}",
                {"cause": "restore_error", "key": key, "section": section, "format": fmt,
                 "error": result.error, "sections": [asdict(s) for s in report.sections]},
            ))
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _custom_steps(path: Path, target: ConnInfo, bin_dir: Path, jobs: int):
    base = [str(bin_dir / "pg_restore"), *target.libpq_args(), "--no-owner", "--no-privileges",
            "--exit-on-error"]
    for section in SECTIONS:
        parallel = ["-j", str(jobs)] if section != "pre-data" and jobs > 1 else []
        yield section, [*base, f"--section={section}", *parallel, str(path)]


def _plain_steps(path: Path, target: ConnInfo, bin_dir: Path):
    yield "plain", [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                    *target.libpq_args(), "-f", str(path)]


def _first_error(stderr: str) -> str:
    """The first error line of pg_restore/psql output, with its DETAIL/CONTEXT, trimmed."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "error" in line.lower() or "fatal" in line.lower():
            tail = [ln for ln in lines[i + 1:i + 4] if ln.startswith(("DETAIL", "CONTEXT", "LINE",
                                                                     "Command was"))]
            return " | ".join([line, *tail])[:1000]
    return (lines[-1] if lines else "no error output")[:1000]
