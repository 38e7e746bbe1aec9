"""`busflow-verify dump`: pg_dump plus the manifest, both from one snapshot of the source.

One REPEATABLE READ, READ ONLY transaction on the source exports its snapshot; `pg_dump -Fc
--snapshot=<id>` writes the dump to a pipe this process reads, hashes (SHA-256) and writes to
PATH, while the same transaction counts the rows of every user table and fingerprints their content
in the same statement (core/checks/fingerprint.py). So the counts and fingerprints are of the rows
the dump holds, not the rows of a moment before or after. With a signing key, the manifest's
detached Ed25519 signature is written beside it (core/store/signature.py). After pg_dump succeeded, the manifest
(core/store/manifest.py) is written beside the dump atomically (temp file + rename); a failed
pg_dump leaves neither dump nor manifest, and says why.

Plain Python, no Dagster. The DSN's password reaches pg_dump only as PGPASSWORD in its
environment (core/proc.py child_env: nothing else of ours), never on its command line, in
the manifest, or in an error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from busflow_verify.core.checks import fingerprint as fp
from busflow_verify.core.checks.row_counts import USER_TABLE_FILTER
from busflow_verify.core.postgres.servers import installed
from busflow_verify.core.proc import child_env
from busflow_verify.core.store.manifest import ESTIMATE, EXACT, Manifest, TableCount, manifest_key
from busflow_verify.core.store.signature import SigningKey, signature_key, signature_path

CHUNK = 1024 * 1024

_TABLES = f"""
SELECT n.nspname, c.relname,
       CASE WHEN c.relkind = 'r' THEN c.reltuples::bigint
            ELSE (SELECT coalesce(sum(p.reltuples) FILTER (WHERE p.reltuples >= 0), -1)::bigint
                  FROM pg_catalog.pg_partition_tree(c.oid) t
                  JOIN pg_catalog.pg_class p ON p.oid = t.relid WHERE p.relkind = 'r') END
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {USER_TABLE_FILTER}
ORDER BY 1, 2
"""


class ProducerError(RuntimeError):
    """The dump could not be produced; nothing was left at the output path."""


@dataclass
class DumpResult:
    dump_path: Path
    manifest_path: Path
    manifest: Manifest
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    signature_path: Path | None = None  # the manifest's detached signature, when signed


def split_dsn(dsn: str, password: str | None = None) -> tuple[str, str | None]:
    """The DSN without its password (for pg_dump's --dbname) and the password (for PGPASSWORD):
    the DSN's own, else `password` (the caller's $PGPASSWORD)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ProducerError("the --dsn is not a valid libpq connection string or URI") from None
    password = params.pop("password", None) or password or None
    return make_conninfo(**{k: str(v) for k, v in params.items()}), password


def pick_pg_dump(source_major: int, explicit: str | None = None) -> tuple[Path, str]:
    """pg_dump of the newest installed server (core/postgres/servers.py), which must be at least the
    source's major (pg_dump refuses newer servers); its bin dir and version."""
    servers = installed(explicit)
    for server in servers:
        tool = server.bin_dir / "pg_dump"
        if tool.exists() and server.major >= source_major:
            out = subprocess.run(
                [str(tool), "--version"], capture_output=True, text=True, env=child_env()
            )
            match = re.search(r"(\d+(?:\.\d+)+)", out.stdout)
            return tool, match[1] if match else server.version
        break  # newest first: when the newest is too old, every other is too
    found = ", ".join(s.label for s in servers) or "none"
    raise ProducerError(
        f"no pg_dump of major {source_major} or newer is installed (found: {found}); pg_dump "
        "cannot dump a newer server: install that PostgreSQL (make install) or pass --pg-bin"
    )


def _validate_tables(names: list[str]) -> list[str]:
    for name in names:
        if not re.match(r"^[^.\s]+\.[^.\s]+$", name):
            raise ProducerError(f"--exact-tables: {name!r} is not schema.table")
    return names


@dataclass(frozen=True)
class SourceSnapshot:
    """The source as its exported snapshot shows it: what the manifest records of it."""

    id: str  # pg_export_snapshot()'s, which pg_dump --snapshot uses
    taken_at: str  # ISO 8601 UTC
    server_version: str
    server_version_num: int
    database: str
    encoding: str  # server_encoding: the bytes a row's text form is hashed in
    extensions: dict[str, str]  # name → installed version
    tables: list[tuple[str, str, int]]  # schema, table, pg_class.reltuples


@dataclass
class _DumpRun:
    """One run of pg_dump: what was written of its stdout (size, SHA-256), its exit status and
    its stderr."""

    sha256: str = ""
    size: int = 0
    write_error: str | None = None  # writing the dump failed (set by the reader)
    exit_status: int | None = None
    stderr: str = ""

    def failure(self) -> str | None:
        """Why the dump is not whole, in the writer's words or pg_dump's; None when it is."""
        if self.exit_status == 0 and self.write_error is None:
            return None
        lines = self.stderr.splitlines()
        why = (
            [self.write_error]
            if self.write_error is not None
            else [ln for ln in lines if "error" in ln.lower()][:1] or lines[-1:] or ["?"]
        )
        return "".join(why)[:500]


def produce(
    dsn: str,
    out: str | Path,
    exact_tables: list[str] | None = None,
    pg_bin: str | None = None,
    log=None,
    password: str | None = None,
    fingerprints: bool = True,
    signing_key: SigningKey | None = None,
) -> DumpResult:
    """Dump the source at `dsn` to `out` (custom format) and write the manifest beside it.

    `exact_tables` None: every table is counted exactly. A list: those tables exactly (each
    must exist), the others by pg_class.reltuples, marked as estimates in the manifest.
    Every table counted exactly is fingerprinted in the same statement (core/checks/
    fingerprint.py) unless `fingerprints` is False. With `signing_key`, the manifest's detached
    signature is written beside it (`<manifest>.sig`, core/store/signature.py).
    `password` is used when the DSN has none (the caller passes $PGPASSWORD: pg_dump gets a
    scrubbed environment, core/proc.py child_env).
    """
    log = log or (lambda line: None)
    started = time.monotonic()
    out = Path(out)
    if not out.name.endswith(".dump"):
        raise ProducerError(f"--out {out}: the dump's name ends in .dump (pg_dump_YYYYMMDD_HHMM)")
    manifest_path = Path(manifest_key(str(out)))
    listed = _validate_tables(list(exact_tables)) if exact_tables is not None else None
    conninfo, password = split_dsn(dsn, password)
    pg_env = child_env({"PGPASSWORD": password} if password else None)
    partial = _partial(out)
    snapshot, (tool, dump_version), counts, run, timings = _dump_in_snapshot(
        dsn, conninfo, pg_env, out, listed, fingerprints, pg_bin, log
    )
    os.replace(partial, out)
    manifest = _manifest(out, snapshot, (tool, dump_version), listed, counts, run)
    signed = _write_manifest(manifest_path, manifest, signing_key)
    seconds = round(time.monotonic() - started, 3)
    log(
        f"wrote {out} ({manifest.size_bytes:,} bytes, sha256 {manifest.sha256[:12]}…) and "
        f"{manifest_path.name} ({len(counts)} tables) in {seconds} s"
    )
    return DumpResult(out, manifest_path, manifest, seconds, timings, signed)


def _dump_in_snapshot(dsn, conninfo, pg_env, out: Path, listed, fingerprints: bool, pg_bin, log):
    """Export a snapshot, then pg_dump it to the partial file while the same snapshot is counted
    (and fingerprinted). A failure of the source leaves no dump and no manifest behind."""
    partial = _partial(out)
    try:
        conn = psycopg.connect(dsn, autocommit=False, application_name="busflow-verify dump")
    except psycopg.Error as exc:
        raise ProducerError(f"cannot connect to the source: {_first_line(exc)}") from None
    try:
        with conn:
            snapshot = _export_snapshot(conn, listed)
            tool, dump_version = pick_pg_dump(snapshot.server_version_num // 10000, pg_bin)
            log(
                f"snapshot {snapshot.id} of {snapshot.database} (PostgreSQL "
                f"{snapshot.server_version}); {tool} {dump_version}"
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            command = [str(tool), "-Fc", f"--snapshot={snapshot.id}", f"--dbname={conninfo}"]
            counts, run, timings = _dump_while_counting(
                conn, command, pg_env, out, lambda: _count(conn, snapshot, listed, fingerprints)
            )
    except psycopg.Error as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise ProducerError(
            f"the source failed during the snapshot: {_first_line(exc)}; no dump and no manifest "
            f"were written to {out}"
        ) from None
    return snapshot, (tool, dump_version), counts, run, timings


def _write_manifest(path: Path, manifest: Manifest, signing_key: SigningKey | None) -> Path | None:
    """The manifest at `path` and, with a key, its signature over those exact bytes beside it,
    written first (a manifest is never there unsigned); the signature's path."""
    text = manifest.to_json().encode()
    signed = None
    if signing_key is not None:
        signed = signature_path(path)
        write_atomically(signed, signing_key.sign(text))
    write_atomically(path, text)
    return signed


def _partial(out: Path) -> Path:
    """Where pg_dump writes until the dump is whole (then renamed to `out`)."""
    return out.with_name(out.name + ".partial")


def _export_snapshot(conn: psycopg.Connection, listed: list[str] | None) -> SourceSnapshot:
    """Open the REPEATABLE READ, READ ONLY transaction, export its snapshot and read what the
    manifest records of the source; every listed table must exist."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    # like pg_dump: an error rather than rows silently hidden by row-level security
    conn.execute("SET LOCAL row_security = off")
    snapshot = conn.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()[0]
    taken_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    version, version_num, database, encoding = conn.execute(
        "SELECT current_setting('server_version'), "
        "current_setting('server_version_num')::int, current_database(), "
        "current_setting('server_encoding')"
    ).fetchone()
    extensions = dict(
        conn.execute("SELECT extname, extversion FROM pg_catalog.pg_extension").fetchall()
    )
    tables = conn.execute(_TABLES).fetchall()
    names = {f"{s}.{t}" for s, t, _ in tables}
    if listed is not None and (unknown := sorted(set(listed) - names)):
        raise ProducerError(f"--exact-tables: no such table in the source: {', '.join(unknown)}")
    return SourceSnapshot(
        snapshot, taken_at, version, version_num, database, encoding, extensions, tables
    )


def _dump_while_counting(
    conn: psycopg.Connection,
    command: list[str],
    env: dict[str, str],
    out: Path,
    count: Callable[[], dict[str, TableCount]],
) -> tuple[dict[str, TableCount], _DumpRun, dict[str, float]]:
    """pg_dump writes the partial dump (hashed on the way, in a thread) while `count` counts
    and fingerprints the rows in the same snapshot's transaction on `conn`; the counts, the run
    and how long each took. A failed pg_dump leaves nothing and says why."""
    partial = _partial(out)
    timings: dict[str, float] = {}
    run = _DumpRun()
    with tempfile.TemporaryFile() as stderr, open(partial, "wb") as sink:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
        reader = threading.Thread(target=_hash_into, args=(proc.stdout, sink, run))
        reader.start()
        try:
            t0 = time.monotonic()
            counts = count()
            timings["count_seconds"] = round(time.monotonic() - t0, 3)
        except BaseException:
            proc.kill()
            reader.join()
            proc.wait()
            partial.unlink(missing_ok=True)
            raise
        reader.join()
        run.exit_status = proc.wait()
        timings["pg_dump_seconds"] = round(time.monotonic() - t0, 3)
        stderr.seek(0)
        run.stderr = stderr.read().decode(errors="replace").strip()
    if (why := run.failure()) is not None:
        partial.unlink(missing_ok=True)
        raise ProducerError(
            f"pg_dump failed (exit status {run.exit_status}): {why}; no dump and no "
            f"manifest were written to {out}"
        )
    return counts, run, timings


def _manifest(
    out: Path,
    snapshot: SourceSnapshot,
    pg_dump: tuple[Path, str],
    listed: list[str] | None,
    counts: dict[str, TableCount],
    run: _DumpRun,
) -> Manifest:
    """The manifest of the dump at `out`: the snapshot's facts, the pg_dump that read it (its
    path and version), the counts and the bytes written."""
    tool, dump_version = pg_dump
    return Manifest(
        dump=out.name,
        taken_at=snapshot.taken_at,
        snapshot=snapshot.id,
        database=snapshot.database,
        server_version=snapshot.server_version,
        server_version_num=snapshot.server_version_num,
        pg_dump_version=dump_version,
        pg_dump_bin=str(tool.parent),
        extensions=snapshot.extensions,
        count_mode="exact" if listed is None else "listed",
        tables=counts,
        encoding=snapshot.encoding,
        fingerprint_method=(
            fp.METHOD if any(c.fingerprint is not None for c in counts.values()) else None
        ),
        size_bytes=run.size,
        sha256=run.sha256,
    )


def _hash_into(stream, sink, run: _DumpRun) -> None:
    """pg_dump's stdout to the file, hashed and counted on the way."""
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            sink.write(chunk)
            size += len(chunk)
        sink.flush()
        os.fsync(sink.fileno())
    except OSError as exc:
        run.write_error = f"writing the dump: {exc}"
        with contextlib.suppress(Exception):
            while stream.read(CHUNK):  # let pg_dump finish rather than block on a full pipe
                pass
    run.sha256, run.size = digest.hexdigest(), size


def _count(
    conn, snapshot: SourceSnapshot, listed: list[str] | None, fingerprints: bool
) -> dict[str, TableCount]:
    """Every table counted exactly (and fingerprinted, in the same statement), or estimated by
    reltuples when it is not listed; in the snapshot's transaction."""
    exact = [f"{s}.{t}" for s, t, _ in snapshot.tables if listed is None or f"{s}.{t}" in listed]
    columns = {}
    if fingerprints:
        columns = fp.table_columns(conn, exact, snapshot.server_version_num // 10000)
        fp.apply_settings(conn, local=True)
    counts = {}
    for schema, table, estimate in snapshot.tables:
        name = f"{schema}.{table}"
        if name in exact:
            counts[name] = _counted(conn, schema, table, columns.get(name))
        else:
            counts[name] = TableCount(int(estimate), ESTIMATE)
    return counts


def _counted(conn, schema: str, table: str, spec: fp.TableColumns | None) -> TableCount:
    """One statement: count(*) and the fingerprint (and, when some columns are of extension
    types, the fingerprint without them)."""
    hashed = []
    if spec is not None:
        hashed = [spec.columns, *([spec.builtin_columns] if spec.extension_columns else [])]
    row = conn.execute(fp.count_statement(schema, table, hashed)).fetchone()
    if spec is None:
        return TableCount(row[0], EXACT)
    return TableCount(
        row[0],
        EXACT,
        fingerprint=fp.as_fingerprint(row[1]),
        fingerprint_columns=spec.columns,
        left_out=dict(spec.left_out),
        extension_columns=dict(spec.extension_columns),
        fingerprint_builtin=fp.as_fingerprint(row[2]) if spec.extension_columns else None,
    )


def write_atomically(path: Path, text: str | bytes) -> None:
    """`text` at `path`, whole or not at all (a temp file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode() if isinstance(text, str) else text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def upload(client, bucket: str, prefix: str, result: DumpResult) -> list[str]:
    """The objects into the bucket verify reads (a boto3 client): the dump first, then the
    manifest's signature when there is one, the manifest last, so a manifest is never there
    without its dump and its signature. Returns the keys."""
    dump_key = f"{prefix}{result.dump_path.name}"
    client.upload_file(str(result.dump_path), bucket, dump_key)
    key = manifest_key(dump_key)
    keys = [dump_key]
    if result.signature_path is not None:
        keys.append(signature_key(key))
        client.put_object(
            Bucket=bucket,
            Key=keys[-1],
            Body=result.signature_path.read_bytes(),
            ContentType="text/plain",
        )
    client.put_object(
        Bucket=bucket,
        Key=key,
        Body=result.manifest_path.read_bytes(),
        ContentType="application/json",
    )
    return [*keys, key]
