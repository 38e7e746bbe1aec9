"""Runbook step 3 and F2: walk the F2 decision tree, then restore section by section.

1. Format first (F2 step 1): `dumpformat.sniff` names what the object is.
2. Preflight (F2 step 2): the extensions the dump creates are compared with the target's
   `pg_available_extensions` before anything is restored.
3. Split-section restore (F2 step 4, the canonical path; there is deliberately no single-stream
   option): pre-data, then data and post-data with `-j` from the local file. Archives are
   restored without owners and privileges (`--no-owner --no-privileges`): the disposable cluster
   has none of production's roles, and ownership is not what is being verified. Plain dumps keep
   their `OWNER TO` lines, so the roles they name are created first (NOLOGIN).
4. A failure is classified (F2 step 3): a COPY failure names the table, the line inside its data
   and the column, and is P1 — source-side corruption suspected.
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
from psycopg import sql

from busflow_verify.core.dumpformat import DumpFormat, sniff, writer_of
from busflow_verify.core.failures import Finding, FindingError
from busflow_verify.core.pgcluster import ConnInfo
from busflow_verify.core.plainscan import PlainScan, scan_plain
from busflow_verify.core.unlogged import unlog_tables

SECTIONS = ("pre-data", "data", "post-data")
PRODUCER_ENV = "docker/backup/producer.env"
SNAPSHOT_STEP = ("Snapshot the source immediately (PITR snapshot via Ubicloud) before touching "
                 "anything else (F2 step 3); then re-run pg_dump.")


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
    roles_created: list[str] = field(default_factory=list)
    toc_entries: int | None = None
    unlogged_tables: int = 0  # made UNLOGGED before the data section (core/unlogged.py)
    kept_logged: str | None = None  # why none were
    sections: list[SectionResult] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Toc:
    """What an archive holds, from `pg_restore -l`."""

    entries: int
    extensions: list[str]
    data: dict[int, str]  # dump id of every TABLE DATA entry -> schema.table
    publishes: bool = False  # it adds tables to a publication

    def qualify(self, table: str) -> list[str]:
        return sorted({t for t in self.data.values() if t.split(".", 1)[1] == table or t == table})


_TOC_LINE = re.compile(r"^(?P<id>\d+); \d+ \d+ (?P<rest>.*)$")


def parse_toc(listing: str) -> Toc:
    entries, extensions, data, publishes = 0, [], {}, False
    for line in listing.splitlines():
        match = _TOC_LINE.match(line)
        if not match:
            continue
        entries += 1
        rest = match["rest"]
        if rest.startswith("EXTENSION - "):
            extensions.append(rest.split()[2])
        elif rest.startswith("TABLE DATA "):
            parts = rest.split()
            data[int(match["id"])] = f"{parts[2]}.{parts[3]}"
        elif rest.startswith("PUBLICATION TABLE"):
            publishes = True
    return Toc(entries, extensions, data, publishes)


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


class Restorer:
    """One restore of one local dump into the empty database `target`."""

    def __init__(self, path: Path, key: str, target: ConnInfo, bin_dir: Path, scratch: Path,
                 jobs: int | None = None, log=None):
        self.path, self.key, self.target, self.bin_dir = path, key, target, Path(bin_dir)
        self.scratch = scratch
        self.log = log or (lambda msg: None)
        self.format: DumpFormat | None = None
        self.toc: Toc | None = None
        self.scan: PlainScan | None = None
        self.report = RestoreReport(format="unknown", dbname=target.dbname,
                                    jobs=jobs or default_jobs())

    def run(self) -> RestoreReport:
        started = time.monotonic()
        try:
            self.format = sniff(self.path, self.key)
            self.report.format = self.format.kind
            self.report.archive_version = self.format.archive_version
            self.report.dumped_by = self.format.dumped_by
            source = self._prepare()
            self._preflight_extensions()
            if self.format.kind in ("plain", "plain_gzip"):
                self._restore_plain(source)
            else:
                self._restore_archive(source)
        finally:
            self.report.seconds = round(time.monotonic() - started, 3)
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
                    raise FindingError(self._truncated(
                        f"the gzip stream ends early or is corrupt ({exc})")) from None
            return self._scan_plain(plain)
        if kind == "plain":
            return self._scan_plain(self.path)
        if kind == "directory_tar":
            source = self._extract_directory()
        else:
            source = self.path
        self.toc = self._read_toc(source)
        self.report.toc_entries = self.toc.entries
        self.report.extensions = self.toc.extensions
        return source

    def _scan_plain(self, plain: Path) -> Path:
        with open(plain, encoding="utf-8", errors="replace") as fh:
            self.scan = scan_plain(fh)
        self.report.extensions = self.scan.extensions
        if self.scan.unsafe:
            line, command = self.scan.unsafe[0]
            raise FindingError(Finding(
                "RESTORE_FAILED",
                f"{self.key} is a plain dump containing the psql meta-command {command} at line "
                f"{line} (pg_dump writes only \\connect, \\restrict, \\unrestrict): refused, "
                "nothing was run",
                {"cause": "unsafe_plain_dump", "key": self.key, "line": line,
                 "command": command, "all": [{"line": n, "command": c}
                                             for n, c in self.scan.unsafe[:20]]},
                severity="P1",
                next_step="Treat the dump as tampered with: find who or what wrote it, and take a "
                          "fresh pg_dump from the source.",
            ))
        return plain

    def _extract_directory(self) -> Path:
        out = self.scratch / "dump.dir"
        out.mkdir(exist_ok=True)
        try:
            with tarfile.open(self.path) as tar:
                tar.extractall(out, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FindingError(self._truncated(
                f"the tar of a directory-format dump cannot be read ({exc})")) from None
        toc = next(out.rglob("toc.dat"))
        return toc.parent

    def _read_toc(self, source: Path) -> Toc:
        proc = subprocess.run([str(self.bin_dir / "pg_restore"), "-l", str(source)],
                              capture_output=True, text=True)
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
        return Finding(
            "RESTORE_FAILED",
            f"{self.key} needs extension(s) {', '.join(missing)} that the restore target does "
            f"not have (found {when}): add them to EXTENSIONS in {PRODUCER_ENV} and re-run "
            "(F2 step 2)",
            {"cause": "missing_extension", "key": self.key, "extensions": missing,
             "remedy": f"add {', '.join(missing)} to EXTENSIONS in {PRODUCER_ENV}"},
            next_step=f"Add {', '.join(missing)} to EXTENSIONS in {PRODUCER_ENV} (the restore "
                      "target's image) and re-run the date (F2 step 2).",
        )

    # -- restore -----------------------------------------------------------------------------
    def _restore_archive(self, source: Path) -> None:
        # --verbose names the TOC entry a COPY failed in, which qualifies its table
        base = [str(self.bin_dir / "pg_restore"), *self.target.libpq_args(), "--no-owner",
                "--no-privileges", "--exit-on-error", "--verbose"]
        # pg_restore cannot run the tar format in parallel; custom and directory can.
        parallel = self.format.kind != "tar" and self.report.jobs > 1
        for section in SECTIONS:
            jobs = ["-j", str(self.report.jobs)] if parallel and section != "pre-data" else []
            self._section(section, [*base, f"--section={section}", *jobs, str(source)])
            if section == "pre-data":
                with psycopg.connect(**self.target.kwargs(), autocommit=True) as conn:
                    self.report.unlogged_tables, self.report.kept_logged = unlog_tables(
                        conn, self.toc.publishes)

    def _restore_plain(self, plain: Path) -> None:
        self.report.roles_created = self._create_roles(sorted(self.scan.roles))
        psql = [str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                *self.target.libpq_args(), "-f", str(plain)]
        self._section("plain", psql)

    def _create_roles(self, roles: list[str]) -> list[str]:
        """Create the roles the dump names that the target lacks (NOLOGIN); existing roles are
        left as they are, and no role is ever dropped: roles are cluster-wide, and on a shared
        restore server they may be someone else's. A restore role that is not a superuser
        (CREATEROLE) is made a member of the roles it creates, or OWNER TO would be refused."""
        created = []
        with psycopg.connect(**self.target.kwargs(), autocommit=True) as conn:
            existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
            superuser = conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
            for role in roles:
                if role not in existing:
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
                    if not superuser:
                        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(
                            sql.Identifier(role)))
                    created.append(role)
        return created

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
        common = {"key": self.key, "section": section, "error": error,
                  "format": self.format.kind if self.format else None}
        if match := re.search(r"unsupported version \(([\d.]+)\) in file header", stderr):
            return self._version_mismatch(match[1], common)
        if missing := _missing_extension_names(stderr):
            finding = self._missing_extensions(missing, f"while restoring {section}")
            finding.details.update(common)
            return finding
        if owner := _OWNER_REFUSED.search(stderr):
            return self._owner_not_permitted(owner["role"] or owner["role16"], common)
        if copy := _COPY_CONTEXT.search(stderr):
            return self._copy_failed(copy, stderr, common)
        if _TRUNCATED.search(stderr):
            return self._truncated(error, common)
        return Finding("RESTORE_FAILED",
                       f"restoring {self.key} failed in section {section}: {error}",
                       {"cause": "restore_error", **common})

    def _version_mismatch(self, archive_version: str, common: dict) -> Finding:
        ours = subprocess.run([str(self.bin_dir / "pg_restore"), "--version"],
                              capture_output=True, text=True).stdout.strip()
        writer = (f"pg_dump {self.format.dumped_by}" if self.format and self.format.dumped_by
                  else writer_of(archive_version))
        return Finding(
            "RESTORE_FAILED",
            f"{self.key} is archive version {archive_version}, written by {writer}; the restore "
            f"target's {ours} cannot read it: upgrade the restore target's PostgreSQL",
            {"cause": "version_mismatch", "archive_version": archive_version,
             "written_by": writer, "pg_restore": ours, **common},
            next_step="Restore with a pg_restore at least as new as the pg_dump that wrote the "
                      "archive: raise the restore target's PostgreSQL major (docker/backup).",
        )

    def _owner_not_permitted(self, role: str, common: dict) -> Finding:
        """A plain dump's OWNER TO a role the restore role cannot take on: the restore server's
        role is no superuser and was not granted that role."""
        user = self.target.user
        return Finding(
            "RESTORE_FAILED",
            f"{self.key} is a plain dump that gives objects to role {role}, which the restore "
            f"role {user} cannot take on: grant {role} to {user} on the restore server, restore "
            "as a superuser there, or restore plain dumps with the docker or ephemeral target",
            {"cause": "owner_not_permitted", "role": role, "restore_role": user, **common},
            next_step=f"On the restore server: GRANT {role} TO {user} (a superuser role cannot "
                      "be granted safely: use the docker or ephemeral restore target for such "
                      "dumps), then re-run the date.",
        )

    def _copy_failed(self, copy: re.Match, stderr: str, common: dict) -> Finding:
        table = copy["table"]
        qualified = self._failed_copy_table(stderr)
        candidates = (self.toc.qualify(table) if self.toc else
                      self.scan.copy_table(table) if self.scan else [])
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
            {"cause": "copy_failed", "table": qualified, "line": line, "column": column,
             "table_candidates": candidates, **common},
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
    r"CONTEXT:\s+COPY (?P<table>[^,\s]+), line (?P<line>\d+)(?:, column (?P<column>[^:\n]+))?")
_OWNER_REFUSED = re.compile(  # PostgreSQL 15 and earlier, then 16 and later
    r'must be member of role "(?P<role>[^"]+)"|must be able to SET ROLE "(?P<role16>[^"]+)"')
_ERROR_LINE = re.compile(r"ERROR:\s+(.*)")
_TRUNCATED = re.compile(r"end of file|unexpected EOF|could not read (?:from )?input file|"
                        r"invalid compressed data|corrupt", re.I)


def _missing_extension_names(stderr: str) -> list[str]:
    names = re.findall(r'extension "([^"]+)" is not available', stderr)
    names += re.findall(r'could not open extension control file ".*/([^/"]+)\.control"', stderr)
    return sorted(set(names))


def first_error(stderr: str) -> str:
    """The first error line of pg_restore/psql output, with its DETAIL/CONTEXT, trimmed."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if re.search(r"\berror:|ERROR:|FATAL:", line):
            tail = [ln for ln in lines[i + 1:i + 4] if ln.startswith(("DETAIL", "CONTEXT", "LINE",
                                                                     "Command was"))]
            return " | ".join([line, *tail])[:1000]
    return (lines[-1] if lines else "no error output")[:1000]
