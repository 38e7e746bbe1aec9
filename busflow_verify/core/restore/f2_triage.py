"""F2's triage: what the runbook's F2 says about a restore that failed, and why.

`classify` walks F2's decision tree over the stderr of the pg_restore or psql that failed:

- a full disk or an exhausted host is the host's (core/hostfaults.py), never source corruption;
- an archive newer than our pg_restore reads (step 1: the format is valid, the tool too old);
- a CREATE EXTENSION the target cannot run: the extension is missing (step 2);
- a statement refused for lack of privilege names the object and the function: code of the
  source's choosing asked for more than a database owner may do, a security event (P1);
- a COPY failure names the table, the line inside its data and the column: source-side
  corruption suspected (step 3, P1);
- an archive that ends early is truncated (P1);
- anything else is a plain restore error naming the section.

The findings the restore's own steps raise before any statement runs (an unsafe plain dump, an
extension not allowed or not created, no server new enough) are built here too, so that every
word of F2 lives in one place.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from busflow_verify.core.failures import CATALOGUE, Finding
from busflow_verify.core.hostfaults import host_fault
from busflow_verify.core.postgres.cluster import ConnInfo
from busflow_verify.core.postgres.privilege import PRODUCER_ENV
from busflow_verify.core.postgres.servers import Choice, PostgresBinariesNotFound, installed
from busflow_verify.core.proc import child_env
from busflow_verify.core.restore.dump_format import DumpFormat, writer_of
from busflow_verify.core.restore.plain_scan import PlainScan
from busflow_verify.core.restore.toc import Toc

SECURITY_ONCALL = "@security-oncall"
NOT_PACKAGED = {"pgsodium": " (it is in no Debian 12 or PyPI package)"}
SNAPSHOT_STEP = (
    "Snapshot the source immediately (PITR snapshot via Ubicloud) before touching "
    "anything else (F2 step 3); then re-run pg_dump."
)


@dataclass(frozen=True)
class RestoreFacts:
    """What the triage knows of the restore that failed: the dump, and where it went."""

    key: str
    format: DumpFormat | None
    toc: Toc | None  # an archive's table of contents
    scan: PlainScan | None  # a plain dump's scan
    bin_dir: Path  # whose pg_restore a version mismatch names
    restore_role: str | None  # the unprivileged owner every statement ran as
    choice: Choice | None  # the server picked for this dump (ephemeral target)
    server: dict[str, str] | None  # that server as the restore report records it
    data_path: Path | None  # where the restored bytes go, for a full disk's words
    data_host: str  # whose disk that is
    # what uses a function in the restored database (a constraint, an index, a view)
    dependents_of: Callable[[str], list[str]]


# -- the decision tree -----------------------------------------------------------------------
def classify(facts: RestoreFacts, stderr: str, section: str) -> Finding:
    """The finding for `section` of the restore, failed with `stderr` (F2 step 3's order)."""
    error = first_error(stderr)
    common = {
        "key": facts.key,
        "section": section,
        "error": error,
        "format": facts.format.kind if facts.format else None,
    }
    where = facts.data_host
    if fault := host_fault(stderr, f"restoring {section}", facts.data_path, where=where):
        fault.details.update({k: v for k, v in common.items() if k != "error"})
        return fault  # a full disk fails a COPY too: it is the host's, never source corruption
    if match := re.search(r"unsupported version \(([\d.]+)\) in file header", stderr):
        return _version_mismatch(facts, match[1], common)
    if missing := _missing_extension_names(stderr):
        finding = missing_extensions(facts, missing, f"while restoring {section}")
        finding.details.update(common)
        return finding
    if refused := _PRIVILEGE_REFUSED.search(stderr):
        return _privilege_refused(facts, refused["message"], stderr, common)
    if copy := _COPY_CONTEXT.search(stderr):
        return _copy_failed(facts, copy, stderr, common)
    if _TRUNCATED.search(stderr):
        return truncated(facts.key, error, common)
    return Finding(
        "RESTORE_FAILED",
        f"restoring {facts.key} failed in section {section}: {error}",
        {"cause": "restore_error", **common},
    )


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


# -- before anything runs: a plain dump that reaches outside the database -------------------
def unsafe_plain_dump(key: str, scan: PlainScan) -> Finding:
    """A plain dump carrying a psql meta-command or a statement that reaches outside the
    database: refused before anything runs."""
    line, command = scan.unsafe[0]
    what = (
        f"the psql meta-command {command} (pg_dump writes only \\connect, \\restrict, \\unrestrict)"
        if command.startswith("\\")
        else f"a statement that reaches outside the database ({command})"
    )
    return Finding(
        "RESTORE_FAILED",
        f"{key} is a plain dump containing {what} at line {line}: refused, nothing was run",
        {
            "cause": "unsafe_plain_dump",
            "key": key,
            "line": line,
            "command": command,
            "all": [{"line": n, "command": c} for n, c in scan.unsafe[:20]],
        },
        severity="P1",
        next_step="Treat the dump as tampered with: find who or what wrote it, and take a "
        "fresh pg_dump from the source.",
    )


# -- step 1: the format is valid, the tools too old ------------------------------------------
def _version_mismatch(facts: RestoreFacts, archive_version: str, common: dict) -> Finding:
    ours = subprocess.run(
        [str(facts.bin_dir / "pg_restore"), "--version"],
        capture_output=True,
        text=True,
        env=child_env(),
    ).stdout.strip()
    writer = (
        f"pg_dump {facts.format.dumped_by}"
        if facts.format and facts.format.dumped_by
        else writer_of(archive_version)
    )
    return Finding(
        "RESTORE_FAILED",
        f"{facts.key} is archive version {archive_version}, written by {writer}; the restore "
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


def no_server_reads(key: str, format: DumpFormat, choice: Choice) -> Finding:
    """No installed PostgreSQL is as new as the pg_dump that wrote the dump."""
    return Finding(
        "RESTORE_FAILED",
        f"{key} was written by pg_dump {format.dumped_by or '?'}: {choice.reason}; "
        "restore it with a PostgreSQL at least as new",
        {
            "cause": "version_mismatch",
            "key": key,
            "dumped_by": format.dumped_by,
            "archive_version": format.archive_version,
            "format": format.kind,
        },
        next_step="Install a PostgreSQL at least as new as the dump's pg_dump on the verify "
        "host (tools/postgres-newest, PG_MAJOR of the docker images) and re-run.",
    )


# -- step 2: the extensions ------------------------------------------------------------------
def missing_extensions(facts: RestoreFacts, missing: list[str], when: str) -> Finding:
    choice = facts.choice
    lacking = (
        f"{choice.server.label}, the server chosen for it ({choice.reason}), does not have"
        if choice
        else "the restore target does not have"
    )
    where = where_extensions_are(missing)
    return Finding(
        "RESTORE_FAILED",
        f"{facts.key} needs extension(s) {', '.join(missing)} that {lacking} (found {when}); "
        f"{where}: add them to EXTENSIONS in {PRODUCER_ENV} and re-run (F2 step 2)",
        {
            "cause": "missing_extension",
            "key": facts.key,
            "extensions": missing,
            "server": facts.server,
            "found_elsewhere": where,
            "remedy": f"add {', '.join(missing)} to EXTENSIONS in {PRODUCER_ENV}",
        },
        next_step=f"Add {', '.join(missing)} to EXTENSIONS in {PRODUCER_ENV} (the restore "
        "target's image) and re-run the date (F2 step 2).",
    )


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


def extensions_not_allowed(key: str, refused: list[str]) -> Finding:
    names = ", ".join(refused)
    return Finding(
        "RESTORE_FAILED",
        f"{key} needs extension(s) {names}, which are neither in EXTENSIONS of "
        f"{PRODUCER_ENV} nor trusted by the restore target's PostgreSQL: not created, "
        "nothing was restored (F2 step 2)",
        {
            "cause": "extension_not_allowed",
            "key": key,
            "extensions": refused,
            "remedy": f"if production really uses {names}, add it to EXTENSIONS in "
            f"{PRODUCER_ENV} (it is then created by a superuser before the restore)",
        },
        next_step=f"Check that production really uses {names} (an extension is created "
        f"with superuser rights); if so add it to EXTENSIONS in {PRODUCER_ENV} and "
        "re-run the date (F2 step 2).",
    )


def extension_not_created(key: str, admin_role: str, wanted: dict, exc: psycopg.Error) -> Finding:
    error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Finding(
        "RESTORE_FAILED",
        f"the administrative role {admin_role} could not create the extension(s) "
        f"{', '.join(wanted)} that {key} needs ({error}): nothing was restored",
        {
            "cause": "extension_not_created",
            "key": key,
            "extensions": list(wanted),
            "admin_role": admin_role,
            "error": error,
        },
        next_step="Give the restore target's administrative role the right to create these "
        "extensions (a superuser, for extensions that are not trusted), or install "
        f"them there ({PRODUCER_ENV}), then re-run the date (F2 step 2).",
    )


def _missing_extension_names(stderr: str) -> list[str]:
    names = re.findall(r'extension "([^"]+)" is not available', stderr)
    names += re.findall(r'could not open extension control file ".*/([^/"]+)\.control"', stderr)
    return sorted(set(names))


# -- a statement refused: a security event ---------------------------------------------------
def _privilege_refused(facts: RestoreFacts, message: str, stderr: str, common: dict) -> Finding:
    """A statement of the dump needed rights the restore role does not have: code of the
    source's choosing asked for more than a database owner may do (a function calling
    COPY ... TO PROGRAM from a CHECK constraint, an index expression, a materialized view).
    A security event, not a broken backup: P1, and @security-oncall is paged too."""
    where = _failing_statement(facts, stderr)
    functions = _failing_functions(stderr)  # innermost first
    used_by = sorted({d for f in functions for d in facts.dependents_of(f)})
    culprit = (
        f"function {functions[-1]}"
        + (f" (calling {', '.join(functions[-2::-1])})" if len(functions) > 1 else "")
        if functions
        else where["object"] or "a statement"
    )
    uses = f", used by {'; '.join(used_by)}," if used_by else ""
    return Finding(
        "RESTORE_FAILED",
        f"{facts.key}: {culprit}{uses} needed rights the restore role {facts.restore_role} "
        f"does not have, in {where['object'] or 'section ' + common['section']} "
        f"({message}): refused, nothing ran with more rights than a database owner has. A "
        "security event: the dump carries code that asks for superuser powers",
        {
            "cause": "insufficient_privilege",
            "object": where["object"],
            "statement": where["statement"],
            "functions": functions,
            "used_by": used_by,
            "restore_role": facts.restore_role,
            "message": message,
            **common,
        },
        severity="P1",
        escalate_to=(*CATALOGUE["RESTORE_FAILED"].escalate_to, SECURITY_ONCALL),
        next_step=f"Treat it as a security event: find who created {culprit} in production "
        "and what it was meant to run, remove it from the source, then take a "
        "fresh pg_dump. Do not restore this dump as a superuser.",
    )


def _failing_statement(facts: RestoreFacts, stderr: str) -> dict[str, str | None]:
    """The object and statement that failed: the TOC entry and "Command was" pg_restore
    prints, or the plain dump's statement at the line psql names."""
    if facts.toc and (entry := _TOC_ENTRY.search(stderr)):
        listed = facts.toc.entry(int(entry["id"]))
        command = _COMMAND.search(stderr)
        return {
            "object": listed.label if listed else None,
            "statement": command["statement"][:300] if command else None,
        }
    if facts.scan and (where := _PSQL_ERROR.search(stderr)):
        statement = facts.scan.statement_at(int(where["line"]))
        head = statement["head"] if statement else None
        return {
            "object": f"line {where['line']}" + (f": {head[:80]}" if head else ""),
            "statement": head,
        }
    return {"object": None, "statement": None}


def _failing_functions(stderr: str) -> list[str]:
    """The functions of the failing statement's CONTEXT, innermost first."""
    context = stderr[stderr.find("CONTEXT:") :] if "CONTEXT:" in stderr else ""
    found = [m["plpgsql"] or m["sql"] for m in _FUNCTION.finditer(context)]
    return list(dict.fromkeys(found))


def dependents_of(owner: ConnInfo, function: str) -> list[str]:
    """What uses the function in the restored database (a constraint, an index, a view)."""
    by_signature = "(" in function
    query = _DEPENDENTS + ("p.oid = to_regprocedure(%s)" if by_signature else "p.proname = %s")
    try:
        with psycopg.connect(**owner.kwargs(), connect_timeout=10) as conn:
            return [r[0] for r in conn.execute(query, (function,)).fetchall()]
    except psycopg.Error:
        return []


# -- step 3: a COPY failed, or the archive ends early ----------------------------------------
def _copy_failed(facts: RestoreFacts, copy: re.Match, stderr: str, common: dict) -> Finding:
    table = copy["table"]
    qualified = _failed_copy_table(facts, stderr)
    candidates = (
        facts.toc.qualify(table)
        if facts.toc
        else facts.scan.copy_table(table)
        if facts.scan
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


def _failed_copy_table(facts: RestoreFacts, stderr: str) -> str | None:
    """schema.table of the failed COPY: from the TOC entry pg_restore names, or the COPY
    block of the plain dump that the failing psql line falls in."""
    if facts.toc and (entry := _TOC_ENTRY.search(stderr)):
        return facts.toc.data.get(int(entry["id"]))
    if facts.scan and (where := _PSQL_ERROR.search(stderr)):
        blocks = [table for start, table in facts.scan.copies if start <= int(where["line"])]
        return blocks[-1] if blocks else None
    return None


def truncated(key: str, error: str, common: dict | None = None) -> Finding:
    return Finding(
        "RESTORE_FAILED",
        f"{key} ends early: the archive is truncated or corrupt ({error})",
        {"cause": "truncated", **(common or {"key": key, "error": error})},
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
_TOC_ENTRY = re.compile(r"from TOC entry (?P<id>\d+);")  # pg_restore --verbose
_PSQL_ERROR = re.compile(r"psql:[^\n]*?:(?P<line>\d+): ERROR")  # psql names the dump's line
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
