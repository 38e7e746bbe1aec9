"""Runbook step 3 and F2: walk the F2 decision tree, then restore section by section.

1. Format first (F2 step 1): `dumpformat.sniff` names what the object is.
2. Preflight (F2 step 2): the extensions the dump creates are compared with the target's
   `pg_available_extensions` before anything is restored.
3. Split-section restore (F2 step 4, the canonical path; there is deliberately no single-stream
   option): pre-data, then data and post-data with `-j` from the local file.
4. Least privilege (core/postgres/privilege.py): every statement of the dump runs as the unprivileged role
   that owns the database. The extensions it needs are created first by the administrative
   role, only those on the allow-list; the restore then leaves out what that step did. Dumps are
   restored without owners and privileges (archives: `--no-owner --no-privileges`; plain dumps:
   a copy with those statements commented out), so no role of production's is needed or made.
5. A failure is classified (F2 step 3): a COPY failure names the table, the line inside its data
   and the column, and is P1 — source-side corruption suspected; a statement refused for lack of
   privilege names the object and the function, and is a security event.
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

from busflow_verify.core.failures import CATALOGUE, Finding, FindingError
from busflow_verify.core.hostfaults import host_fault
from busflow_verify.core.postgres.cluster import ConnInfo
from busflow_verify.core.postgres.privilege import (
    ExtensionSetup,
    RestoreDatabase,
    allowed_extensions,
    create_extensions,
)
from busflow_verify.core.postgres.servers import (
    Choice,
    PostgresBinariesNotFound,
    installed,
    major_of,
)
from busflow_verify.core.proc import child_env
from busflow_verify.core.restore import plain_scan as plainscan
from busflow_verify.core.restore.dump_format import DumpFormat, sniff, writer_of
from busflow_verify.core.restore.plain_scan import PlainScan, scan_plain
from busflow_verify.core.restore.toc import Toc, extension_schemas, parse_toc
from busflow_verify.core.restore.unlogged import unlog_tables

SECTIONS = ("pre-data", "data", "post-data")
PRODUCER_ENV = "docker/backup/producer.env"
SECURITY_ONCALL = "@security-oncall"
NOT_PACKAGED = {"pgsodium": " (it is in no Debian 12 or PyPI package)"}
SNAPSHOT_STEP = (
    "Snapshot the source immediately (PITR snapshot via Ubicloud) before touching "
    "anything else (F2 step 3); then re-run pg_dump."
)


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
                        self._truncated(f"the gzip stream ends early or is corrupt ({exc})")
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
            line, command = self.scan.unsafe[0]
            what = (
                f"the psql meta-command {command} (pg_dump writes only \\connect, \\restrict, "
                "\\unrestrict)"
                if command.startswith("\\")
                else f"a statement that reaches outside the database ({command})"
            )
            raise FindingError(
                Finding(
                    "RESTORE_FAILED",
                    f"{self.key} is a plain dump containing {what} at line {line}: refused, nothing "
                    "was run",
                    {
                        "cause": "unsafe_plain_dump",
                        "key": self.key,
                        "line": line,
                        "command": command,
                        "all": [{"line": n, "command": c} for n, c in self.scan.unsafe[:20]],
                    },
                    severity="P1",
                    next_step="Treat the dump as tampered with: find who or what wrote it, and take a "
                    "fresh pg_dump from the source.",
                )
            )
        return plain

    def _extract_directory(self) -> Path:
        out = self.scratch / "dump.dir"
        out.mkdir(exist_ok=True)
        try:
            with tarfile.open(self.path) as tar:
                tar.extractall(out, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FindingError(
                self._truncated(f"the tar of a directory-format dump cannot be read ({exc})")
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
            raise FindingError(self._missing_extensions(missing, "before restoring anything"))

    def _missing_extensions(self, missing: list[str], when: str) -> Finding:
        lacking = (
            f"{self.choice.server.label}, the server chosen for it ({self.choice.reason}), "
            "does not have"
            if self.choice
            else "the restore target does not have"
        )
        where = where_extensions_are(missing)
        return Finding(
            "RESTORE_FAILED",
            f"{self.key} needs extension(s) {', '.join(missing)} that {lacking} (found {when}); "
            f"{where}: add them to EXTENSIONS in {PRODUCER_ENV} and re-run (F2 step 2)",
            {
                "cause": "missing_extension",
                "key": self.key,
                "extensions": missing,
                "server": self.report.server,
                "found_elsewhere": where,
                "remedy": f"add {', '.join(missing)} to EXTENSIONS in {PRODUCER_ENV}",
            },
            next_step=f"Add {', '.join(missing)} to EXTENSIONS in {PRODUCER_ENV} (the restore "
            "target's image) and re-run the date (F2 step 2).",
        )

    # -- the administrative step -------------------------------------------------------------
    def _administer_extensions(self, source: Path) -> None:
        """Create the dump's extensions as the administrative role, only those on the
        allow-list (core/postgres/privilege.py); any other is an F2 naming it, before anything runs."""
        wanted = self._extension_schemas(source)
        if not wanted:
            return
        refused = sorted(set(wanted) - allowed_extensions(self.db.admin))
        if refused:
            raise FindingError(self._extensions_not_allowed(refused))
        try:
            self.setup = create_extensions(self.db, wanted)
        except psycopg.Error as exc:
            raise FindingError(self._extension_not_created(wanted, exc)) from None
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

    def _extensions_not_allowed(self, refused: list[str]) -> Finding:
        names = ", ".join(refused)
        return Finding(
            "RESTORE_FAILED",
            f"{self.key} needs extension(s) {names}, which are neither in EXTENSIONS of "
            f"{PRODUCER_ENV} nor trusted by the restore target's PostgreSQL: not created, "
            "nothing was restored (F2 step 2)",
            {
                "cause": "extension_not_allowed",
                "key": self.key,
                "extensions": refused,
                "remedy": f"if production really uses {names}, add it to EXTENSIONS in "
                f"{PRODUCER_ENV} (it is then created by a superuser before the restore)",
            },
            next_step=f"Check that production really uses {names} (an extension is created "
            f"with superuser rights); if so add it to EXTENSIONS in {PRODUCER_ENV} and "
            "re-run the date (F2 step 2).",
        )

    def _extension_not_created(self, wanted: dict, exc: psycopg.Error) -> Finding:
        error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Finding(
            "RESTORE_FAILED",
            f"the administrative role {self.db.admin.user} could not create the extension(s) "
            f"{', '.join(wanted)} that {self.key} needs ({error}): nothing was restored",
            {
                "cause": "extension_not_created",
                "key": self.key,
                "extensions": list(wanted),
                "admin_role": self.db.admin.user,
                "error": error,
            },
            next_step="Give the restore target's administrative role the right to create these "
            "extensions (a superuser, for extensions that are not trusted), or install "
            f"them there ({PRODUCER_ENV}), then re-run the date (F2 step 2).",
        )

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

    # -- F2 classification -------------------------------------------------------------------
    def classify(self, stderr: str, section: str) -> Finding:
        error = first_error(stderr)
        common = {
            "key": self.key,
            "section": section,
            "error": error,
            "format": self.format.kind if self.format else None,
        }
        where = self.data_host
        if fault := host_fault(stderr, f"restoring {section}", self.data_path, where=where):
            fault.details.update({k: v for k, v in common.items() if k != "error"})
            return fault  # a full disk fails a COPY too: it is the host's, never source corruption
        if match := re.search(r"unsupported version \(([\d.]+)\) in file header", stderr):
            return self._version_mismatch(match[1], common)
        if missing := _missing_extension_names(stderr):
            finding = self._missing_extensions(missing, f"while restoring {section}")
            finding.details.update(common)
            return finding
        if refused := _PRIVILEGE_REFUSED.search(stderr):
            return self._privilege_refused(refused["message"], stderr, common)
        if copy := _COPY_CONTEXT.search(stderr):
            return self._copy_failed(copy, stderr, common)
        if _TRUNCATED.search(stderr):
            return self._truncated(error, common)
        return Finding(
            "RESTORE_FAILED",
            f"restoring {self.key} failed in section {section}: {error}",
            {"cause": "restore_error", **common},
        )

    def no_server_reads(self, choice: Choice) -> Finding:
        """No installed PostgreSQL is as new as the pg_dump that wrote the dump."""
        return Finding(
            "RESTORE_FAILED",
            f"{self.key} was written by pg_dump {self.format.dumped_by or '?'}: {choice.reason}; "
            "restore it with a PostgreSQL at least as new",
            {
                "cause": "version_mismatch",
                "key": self.key,
                "dumped_by": self.format.dumped_by,
                "archive_version": self.format.archive_version,
                "format": self.format.kind,
            },
            next_step="Install a PostgreSQL at least as new as the dump's pg_dump on the verify "
            "host (tools/postgres-newest, PG_MAJOR of the docker images) and re-run.",
        )

    def _version_mismatch(self, archive_version: str, common: dict) -> Finding:
        ours = subprocess.run(
            [str(self.bin_dir / "pg_restore"), "--version"],
            capture_output=True,
            text=True,
            env=child_env(),
        ).stdout.strip()
        writer = (
            f"pg_dump {self.format.dumped_by}"
            if self.format and self.format.dumped_by
            else writer_of(archive_version)
        )
        return Finding(
            "RESTORE_FAILED",
            f"{self.key} is archive version {archive_version}, written by {writer}; the restore "
            f"target's {ours} cannot read it: upgrade the restore target's PostgreSQL",
            {
                "cause": "version_mismatch",
                "archive_version": archive_version,
                "written_by": writer,
                "pg_restore": ours,
                **common,
            },
            next_step="Restore with a pg_restore at least as new as the pg_dump that wrote the "
            "archive: raise the restore target's PostgreSQL major (docker/backup).",
        )

    def _privilege_refused(self, message: str, stderr: str, common: dict) -> Finding:
        """A statement of the dump needed rights the restore role does not have: code of the
        source's choosing asked for more than a database owner may do (a function calling
        COPY ... TO PROGRAM from a CHECK constraint, an index expression, a materialized view).
        A security event, not a broken backup: P1, and @security-oncall is paged too."""
        where = self._failing_statement(stderr)
        functions = _failing_functions(stderr)  # innermost first
        used_by = sorted({d for f in functions for d in self._dependents_of(f)})
        culprit = (
            f"function {functions[-1]}"
            + (f" (calling {', '.join(functions[-2::-1])})" if len(functions) > 1 else "")
            if functions
            else where["object"] or "a statement"
        )
        uses = f", used by {'; '.join(used_by)}," if used_by else ""
        return Finding(
            "RESTORE_FAILED",
            f"{self.key}: {culprit}{uses} needed rights the restore role {self.target.user} "
            f"does not have, in {where['object'] or 'section ' + common['section']} "
            f"({message}): refused, nothing ran with more rights than a database owner has. A "
            "security event: the dump carries code that asks for superuser powers",
            {
                "cause": "insufficient_privilege",
                "object": where["object"],
                "statement": where["statement"],
                "functions": functions,
                "used_by": used_by,
                "restore_role": self.target.user,
                "message": message,
                **common,
            },
            severity="P1",
            escalate_to=(*CATALOGUE["RESTORE_FAILED"].escalate_to, SECURITY_ONCALL),
            next_step=f"Treat it as a security event: find who created {culprit} in production "
            "and what it was meant to run, remove it from the source, then take a "
            "fresh pg_dump. Do not restore this dump as a superuser.",
        )

    def _failing_statement(self, stderr: str) -> dict[str, str | None]:
        """The object and statement that failed: the TOC entry and "Command was" pg_restore
        prints, or the plain dump's statement at the line psql names."""
        if self.toc and (entry := _TOC_ENTRY.search(stderr)):
            listed = self.toc.entry(int(entry["id"]))
            command = _COMMAND.search(stderr)
            return {
                "object": listed.label if listed else None,
                "statement": command["statement"][:300] if command else None,
            }
        if self.scan and (where := re.search(r"psql:[^\n]*?:(\d+): ERROR", stderr)):
            statement = self.scan.statement_at(int(where[1]))
            head = statement["head"] if statement else None
            return {
                "object": f"line {where[1]}" + (f": {head[:80]}" if head else ""),
                "statement": head,
            }
        return {"object": None, "statement": None}

    def _dependents_of(self, function: str) -> list[str]:
        """What uses the function in the restored database (a constraint, an index, a view)."""
        by_signature = "(" in function
        query = _DEPENDENTS + ("p.oid = to_regprocedure(%s)" if by_signature else "p.proname = %s")
        try:
            with psycopg.connect(**self.target.kwargs(), connect_timeout=10) as conn:
                return [r[0] for r in conn.execute(query, (function,)).fetchall()]
        except psycopg.Error:
            return []

    def _copy_failed(self, copy: re.Match, stderr: str, common: dict) -> Finding:
        table = copy["table"]
        qualified = self._failed_copy_table(stderr)
        candidates = (
            self.toc.qualify(table)
            if self.toc
            else self.scan.copy_table(table)
            if self.scan
            else []
        )
        if qualified is None:
            qualified = candidates[0] if len(candidates) == 1 else table
        line, column = int(copy["line"]), copy["column"]
        reason = _ERROR_LINE.search(stderr)
        return Finding(
            "RESTORE_FAILED",
            f"COPY into {qualified} failed at line {line} of its data"
            + (f", column {column}" if column else "")
            + f" ({reason[1] if reason else 'see error'}): source-side corruption suspected; "
            "snapshot the source (PITR via Ubicloud) before touching anything else",
            {
                "cause": "copy_failed",
                "table": qualified,
                "line": line,
                "column": column,
                "table_candidates": candidates,
                **common,
            },
            severity="P1",
            next_step=SNAPSHOT_STEP,
        )

    def _failed_copy_table(self, stderr: str) -> str | None:
        """schema.table of the failed COPY: from the TOC entry pg_restore names, or the COPY
        block of the plain dump that the failing psql line falls in."""
        if self.toc and (entry := re.search(r"from TOC entry (\d+);", stderr)):
            return self.toc.data.get(int(entry[1]))
        if self.scan and (where := re.search(r"psql:[^\n]*?:(\d+): ERROR", stderr)):
            blocks = [table for start, table in self.scan.copies if start <= int(where[1])]
            return blocks[-1] if blocks else None
        return None

    def _truncated(self, error: str, common: dict | None = None) -> Finding:
        return Finding(
            "RESTORE_FAILED",
            f"{self.key} ends early: the archive is truncated or corrupt ({error})",
            {"cause": "truncated", **(common or {"key": self.key, "error": error})},
            severity="P1",
            next_step="Re-run pg_dump from the source before the next pg_cron scrub cycle; if "
            "the source itself is suspect, snapshot it first (PITR via Ubicloud).",
        )


_COPY_CONTEXT = re.compile(
    r"CONTEXT:\s+COPY (?P<table>[^,\s]+), line (?P<line>\d+)(?:, column (?P<column>[^:\n]+))?"
)
_PRIVILEGE_REFUSED = re.compile(  # the messages of SQLSTATE 42501 and of superuser checks
    r"ERROR:\s+(?P<message>(?:permission denied|must be (?:superuser|owner|a member|member|able "
    r"to SET ROLE)|must have privileges of|only superusers?)[^\n]*)"
)
_TOC_ENTRY = re.compile(r"from TOC entry (?P<id>\d+);")
_COMMAND = re.compile(r"Command was: (?P<statement>[^\n]*)")
_FUNCTION = re.compile(
    r"PL/pgSQL function (?P<plpgsql>[^\s(]+\([^)]*\))|"
    r'SQL function "(?P<sql>[^"]+)"'
)
_DEPENDENTS = """
SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid
WHERE d.refclassid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'n' AND """
_ERROR_LINE = re.compile(r"ERROR:\s+(.*)")
_TRUNCATED = re.compile(
    r"end of file|unexpected EOF|could not read (?:from )?input file|"
    r"invalid compressed data|corrupt",
    re.I,
)


_CRON_JOBS = """
SELECT jobname, schedule, database, active, left(command, 200) AS command
FROM cron.job ORDER BY jobid
"""


def restored_cron_jobs(owner: ConnInfo) -> list[dict[str, Any]]:
    """The pg_cron jobs a restored dump carries (name, schedule, database, active): F1 step 3's
    deadline is the next run of a scrub job. Empty without pg_cron."""
    with psycopg.connect(**owner.kwargs(), connect_timeout=10) as conn:
        if not conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron')"
        ).fetchone()[0]:
            return []
        cursor = conn.execute(_CRON_JOBS)
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def where_extensions_are(names: list[str]) -> str:
    """Which installed servers have each extension, or that none here does (and what to use
    then: the docker target, whose image installs producer.env's extensions)."""
    try:
        servers = installed()
    except PostgresBinariesNotFound:
        servers = []
    parts = []
    for name in names:
        having = [s.version for s in servers if name in s.extensions]
        if having:
            parts.append(f"{name} is installed for PostgreSQL {', '.join(having)} here")
        else:
            parts.append(
                f"{name} is on no PostgreSQL of this machine"
                + (NOT_PACKAGED.get(name, ""))
                + "; the docker target (docker/restore-"
                "target.Dockerfile, which installs producer.env's EXTENSIONS) has it"
            )
    return "; ".join(parts)


def _version_tuple(version: str | None) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(match[1]), int(match[2])) if match else None


def _failing_functions(stderr: str) -> list[str]:
    """The functions of the failing statement's CONTEXT, innermost first."""
    context = stderr[stderr.find("CONTEXT:") :] if "CONTEXT:" in stderr else ""
    found = [m["plpgsql"] or m["sql"] for m in _FUNCTION.finditer(context)]
    return list(dict.fromkeys(found))


def _missing_extension_names(stderr: str) -> list[str]:
    names = re.findall(r'extension "([^"]+)" is not available', stderr)
    names += re.findall(r'could not open extension control file ".*/([^/"]+)\.control"', stderr)
    return sorted(set(names))


def first_error(stderr: str) -> str:
    """The first error line of pg_restore/psql output, with its DETAIL/CONTEXT, trimmed."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if re.search(r"\berror:|ERROR:|FATAL:", line):
            tail = [
                ln
                for ln in lines[i + 1 : i + 4]
                if ln.startswith(("DETAIL", "CONTEXT", "LINE", "Command was"))
            ]
            return " | ".join([line, *tail])[:1000]
    return (lines[-1] if lines else "no error output")[:1000]
