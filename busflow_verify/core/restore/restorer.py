"""Runbook step 3 and F2: walk the F2 decision tree, then restore section by section.

1. Format first (F2 step 1): `dump_format.sniff` names what the object is.
2. Preflight (F2 step 2): the extensions the dump creates are compared with the target's
   `pg_available_extensions` before anything is restored.
3. Split-section restore (F2 step 4, the canonical path; there is deliberately no single-stream
   option): pre-data, then data and post-data with `-j` from the local file.
4. Least privilege (core/postgres/privilege.py): every statement of the dump runs as the
   unprivileged role that owns the database. The extensions it needs are created first by the
   administrative role, only those on the allow-list; the restore then leaves out what that step
   did. Dumps are restored without owners and privileges (archives: `--no-owner
   --no-privileges`; plain dumps: a copy with those statements commented out), so no role of
   production's is needed or made.
5. A failure is classified (F2 step 3) by core/restore/f2_triage.py: a COPY failure names the
   table, the line inside its data and the column, and is P1 — source-side corruption suspected;
   a statement refused for lack of privilege names the object and the function, and is a
   security event.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from busflow_verify.core.failures import Finding, FindingError
from busflow_verify.core.postgres.cluster import ConnInfo
from busflow_verify.core.postgres.privilege import (
    ExtensionSetup,
    RestoreDatabase,
    allowed_extensions,
    create_extensions,
)
from busflow_verify.core.postgres.servers import Choice, major_of
from busflow_verify.core.proc import child_env
from busflow_verify.core.restore import f2_triage
from busflow_verify.core.restore import plain_scan as plainscan
from busflow_verify.core.restore.dump_format import DumpFormat, sniff
from busflow_verify.core.restore.f2_triage import RestoreFacts
from busflow_verify.core.restore.plain_scan import PlainScan, scan_plain
from busflow_verify.core.restore.toc import Toc, extension_schemas, parse_toc
from busflow_verify.core.restore.unlogged import unlog_tables

SECTIONS = ("pre-data", "data", "post-data")


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
    archive_version: str | None = None
    dumped_by: str | None = None
    extensions: list[str] = field(default_factory=list)
    restore_role: str | None = None  # the unprivileged owner every statement ran as
    server: dict[str, str] | None = None  # which PostgreSQL restored it, and why (ephemeral)
    extensions_created: dict[str, str | None] = field(default_factory=dict)  # by the admin step
    left_out: list[dict[str, Any]] = field(default_factory=list)  # and why (core/restore/toc.py)
    toc_entries: int | None = None
    unlogged_tables: int = 0  # made UNLOGGED before the data section (core/restore/unlogged.py)
    kept_logged: str | None = None  # why none were
    maintenance_work_mem: str | None = None  # the target's, for the index builds of post-data
    sections: list[SectionResult] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


class Restorer:
    """One restore of one local dump into the empty database `db`, as its owner."""

    def __init__(
        self,
        path: Path,
        key: str,
        db: RestoreDatabase | None,
        bin_dir: Path,
        scratch: Path,
        jobs: int | None = None,
        log=None,
    ):
        self.path, self.key, self.bin_dir = path, key, Path(bin_dir)
        self.scratch = scratch
        self.log = log or (lambda msg: None)
        self.format: DumpFormat | None = None
        self.toc: Toc | None = None
        self.scan: PlainScan | None = None
        self.source: Path | None = None  # what pg_restore/psql read, once inspected
        self.choice: Choice | None = None  # the server picked for this dump (ephemeral target)
        self.setup = ExtensionSetup()
        self.db: RestoreDatabase | None = None
        self.target: ConnInfo | None = None  # the database's owner, once attached
        self.report = RestoreReport(format="unknown", dbname="", jobs=jobs or default_jobs())
        self.inspect_seconds = 0.0
        # where the restored bytes go and whose disk it is, for a host fault's words (targets)
        self.data_path: Path | None = None
        self.data_host = "the verify host"
        if db is not None:
            self.attach(db)

    def inspect(self) -> Restorer:
        """Format, version and table of contents (or the plain scan), before any database is
        needed: they decide which server restores the dump. Done once."""
        if self.source is None:
            started = time.monotonic()
            try:
                self.format = sniff(self.path, self.key)
                self.report.format = self.format.kind
                self.report.archive_version = self.format.archive_version
                self.report.dumped_by = self.format.dumped_by
                self.source = self._prepare()
            finally:
                self.inspect_seconds = time.monotonic() - started
        return self

    def needs(self) -> dict[str, Any]:
        """What a server must offer to restore this dump (core/postgres/servers.py `choose`)."""
        version = self.format.archive_version if self.format else None
        return {
            "archive_version": _version_tuple(version),
            "dumped_by_major": major_of(self.format.dumped_by if self.format else None),
            "extensions": list(self.report.extensions),
        }

    def attach(
        self, db: RestoreDatabase, bin_dir: Path | None = None, choice: Choice | None = None
    ) -> None:
        """The database to restore into, with the tools of its server."""
        self.db, self.target = db, db.owner
        self.bin_dir = Path(bin_dir or self.bin_dir)
        self.report.dbname, self.report.restore_role = db.dbname, db.owner.user
        if choice is not None and choice.server is not None:
            self.choice = choice
            self.report.server = {
                "version": choice.server.version,
                "bin_dir": str(choice.server.bin_dir),
                "why": choice.reason,
            }

    def run(self) -> RestoreReport:
        started = time.monotonic()
        try:
            self.inspect()
            self._preflight_extensions()
            self._administer_extensions(self.source)
            if self.format.kind in ("plain", "plain_gzip"):
                self._restore_plain(self.source)
            else:
                self._restore_archive(self.source)
        finally:
            self.report.seconds = round(time.monotonic() - started + self.inspect_seconds, 3)
        return self.report

    # -- preparation -------------------------------------------------------------------------
    def _prepare(self) -> Path:
        kind = self.format.kind
        if kind == "plain_gzip":
            plain = self.scratch / "dump.sql"
            with gzip.open(self.path, "rb") as src, open(plain, "wb") as dst:
                try:
                    shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
                except (EOFError, OSError) as exc:
                    raise FindingError(
                        f2_triage.truncated(
                            self.key, f"the gzip stream ends early or is corrupt ({exc})"
                        )
                    ) from None
            return self._scan_plain(plain)
        if kind == "plain":
            return self._scan_plain(self.path)
        if kind == "directory_tar":
            source = self._extract_directory()
        else:
            source = self.path
        self.toc = self._read_toc(source)
        self.report.toc_entries = len(self.toc.entries)
        self.report.extensions = self.toc.extensions
        return source

    def _scan_plain(self, plain: Path) -> Path:
        with open(plain, encoding="utf-8", errors="replace") as fh:
            self.scan = scan_plain(fh)
        self.report.extensions = self.scan.extensions
        if self.scan.unsafe:
            raise FindingError(f2_triage.unsafe_plain_dump(self.key, self.scan))
        return plain

    def _extract_directory(self) -> Path:
        out = self.scratch / "dump.dir"
        out.mkdir(exist_ok=True)
        try:
            with tarfile.open(self.path) as tar:
                tar.extractall(out, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FindingError(
                f2_triage.truncated(
                    self.key, f"the tar of a directory-format dump cannot be read ({exc})"
                )
            ) from None
        toc = next(out.rglob("toc.dat"))
        return toc.parent

    def _read_toc(self, source: Path) -> Toc:
        proc = subprocess.run(
            [str(self.bin_dir / "pg_restore"), "-l", str(source)],
            capture_output=True,
            text=True,
            env=child_env(),
        )
        if proc.returncode != 0:
            raise FindingError(self.classify(proc.stderr, "table of contents"))
        return parse_toc(proc.stdout)

    # -- preflight ---------------------------------------------------------------------------
    def _preflight_extensions(self) -> None:
        wanted = self.report.extensions
        if not wanted:
            return
        with psycopg.connect(**self.target.kwargs()) as conn:
            available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        missing = [name for name in wanted if name not in available]
        if missing:
            raise FindingError(
                f2_triage.missing_extensions(self._facts(), missing, "before restoring anything")
            )

    # -- the administrative step -------------------------------------------------------------
    def _administer_extensions(self, source: Path) -> None:
        """Create the dump's extensions as the administrative role, only those on the
        allow-list (core/postgres/privilege.py); any other is an F2 naming it, before anything
        runs."""
        wanted = self._extension_schemas(source)
        if not wanted:
            return
        refused = sorted(set(wanted) - allowed_extensions(self.db.admin))
        if refused:
            raise FindingError(f2_triage.extensions_not_allowed(self.key, refused))
        try:
            self.setup = create_extensions(self.db, wanted)
        except psycopg.Error as exc:
            raise FindingError(
                f2_triage.extension_not_created(self.key, self.db.admin.user, wanted, exc)
            ) from None
        self.report.extensions_created = dict(self.setup.created)
        self.log(f"extensions created by the administrative role: {', '.join(wanted)}")

    def _extension_schemas(self, source: Path) -> dict[str, str | None]:
        if self.scan is not None:
            return dict(self.scan.extension_schemas)
        if not self.toc.extensions:
            return {}
        listing = self.scratch / "extensions.list"
        listing.write_text(self.toc.extension_list())
        proc = subprocess.run(
            [str(self.bin_dir / "pg_restore"), "-L", str(listing), "-f", "-", str(source)],
            capture_output=True,
            text=True,
            env=child_env(),
        )
        if proc.returncode != 0:
            raise FindingError(self.classify(proc.stderr, "table of contents"))
        found = extension_schemas(proc.stdout)
        return {name: found.get(name) for name in self.toc.extensions}

    # -- restore -----------------------------------------------------------------------------
    def _restore_archive(self, source: Path) -> None:
        listing, self.report.left_out = self.toc.restore_list(self.setup.schemas)
        entries = self.scratch / "restore.list"
        entries.write_text(listing)
        # --verbose names the TOC entry a COPY failed in, which qualifies its table
        base = [
            str(self.bin_dir / "pg_restore"),
            *self.target.libpq_args(),
            "--no-owner",
            "--no-privileges",
            "--no-security-labels",
            "--no-subscriptions",
            "--exit-on-error",
            "--verbose",
            "-L",
            str(entries),
        ]
        # pg_restore cannot run the tar format in parallel; custom and directory can.
        parallel = self.format.kind != "tar" and self.report.jobs > 1
        for section in SECTIONS:
            jobs = ["-j", str(self.report.jobs)] if parallel and section != "pre-data" else []
            self._section(section, [*base, f"--section={section}", *jobs, str(source)])
            if section == "pre-data":
                with psycopg.connect(**self.target.kwargs(), autocommit=True) as conn:
                    self.report.unlogged_tables, self.report.kept_logged = unlog_tables(
                        conn, self.toc.publishes
                    )
                    self.report.maintenance_work_mem = conn.execute(
                        "SHOW maintenance_work_mem"
                    ).fetchone()[0]

    def _restore_plain(self, plain: Path) -> None:
        """psql runs a copy of the dump without its ownership and privilege statements and
        without what the administrative step did (line numbers kept: errors still point into
        the original)."""
        restorable = self.scratch / "restorable.sql"
        with (
            open(plain, encoding="utf-8", errors="surrogateescape", newline="") as src,
            open(restorable, "w", encoding="utf-8", errors="surrogateescape", newline="") as dst,
        ):
            self.report.left_out = plainscan.write_restorable(
                src, dst, self.scan, set(self.setup.schemas)
            )
        psql = [
            str(self.bin_dir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            *self.target.libpq_args(),
            "-f",
            str(restorable),
        ]
        self._section("plain", psql)

    def _section(self, section: str, argv: list[str]) -> None:
        self.log(f"restoring {section} of {self.key}")
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.target.env())
        result = SectionResult(section, round(time.monotonic() - t0, 3), proc.returncode == 0)
        self.report.sections.append(result)
        if proc.returncode != 0:
            finding = self.classify(proc.stderr, section)
            result.error = finding.details.get("error")
            finding.details["sections"] = [asdict(s) for s in self.report.sections]
            raise FindingError(finding)
        self.log(f"restored {section} in {result.seconds} s")

    # -- F2 ----------------------------------------------------------------------------------
    def classify(self, stderr: str, section: str) -> Finding:
        """F2's finding for `section`, failed with `stderr` (core/restore/f2_triage.py)."""
        return f2_triage.classify(self._facts(), stderr, section)

    def no_server_reads(self, choice: Choice) -> Finding:
        """No installed PostgreSQL is as new as the pg_dump that wrote the dump."""
        return f2_triage.no_server_reads(self.key, self.format, choice)

    def _facts(self) -> RestoreFacts:
        """What F2's triage reads of this restore, as it stands now."""
        return RestoreFacts(
            key=self.key,
            format=self.format,
            toc=self.toc,
            scan=self.scan,
            bin_dir=self.bin_dir,
            restore_role=self.target.user if self.target else None,
            choice=self.choice,
            server=self.report.server,
            data_path=self.data_path,
            data_host=self.data_host,
            dependents_of=self._dependents_of,
        )

    def _dependents_of(self, function: str) -> list[str]:
        """What uses the function in the database restored into."""
        return f2_triage.dependents_of(self.target, function)


def _version_tuple(version: str | None) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(match[1]), int(match[2])) if match else None
