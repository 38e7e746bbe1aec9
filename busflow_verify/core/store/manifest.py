"""The dump's manifest: the source's own numbers, taken in pg_dump's snapshot.

`busflow-verify dump` (core/store/producer.py) writes `pg_dump_YYYYMMDD_HHMM.manifest.json` beside
`pg_dump_YYYYMMDD_HHMM.dump`: the server's and pg_dump's versions, the extensions, every user
table with its row count in the very snapshot pg_dump read (exact, or `reltuples` where the
producer was told to estimate) and, for the exact ones, the fingerprint of its rows' content taken
in the same statement (core/checks/fingerprint.py), and the dump's size and SHA-256 computed while
it was written; optionally its Ed25519 signature beside it (core/store/signature.py). Verify reads
it back once (`read_manifest_beside`): the stored object and the download are checked against size
and SHA-256, the restored counts and fingerprints against the manifest's.

Plain Python; no Dagster. A manifest that does not parse or lacks a field raises ManifestError
naming the object and the field; an absent manifest is None (older dumps have none).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from busflow_verify.core.checks import fingerprint
from busflow_verify.core.checks.fingerprint import Fingerprint, FingerprintRequest
from busflow_verify.core.failures import Finding
from busflow_verify.core.store import signature as sig
from busflow_verify.core.store.endpoints import store_error_finding

FORMAT_VERSION = 1
DUMP_SUFFIX = ".dump"
MANIFEST_SUFFIX = ".manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a manifest of 100 000 tables is a few MB

EXACT = "exact"  # count(*) in the snapshot
ESTIMATE = "reltuples"  # pg_class.reltuples: an estimate, never compared exactly
COUNT_METHODS = (EXACT, ESTIMATE)
COUNT_MODES = ("exact", "listed")  # every table exact, or only the listed ones

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TABLE = re.compile(r"^[^.]+\..+$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")


class ManifestError(ValueError):
    """A manifest that cannot be used: names where it came from and the field at fault."""

    def __init__(self, source: str, field_name: str, problem: str):
        self.source = source
        self.field = field_name
        self.problem = problem
        super().__init__(f"manifest {source}: field {field_name!r}: {problem}")

    def __reduce__(self):  # kept in a run's ManifestRead, which the IO manager pickles
        return ManifestError, (self.source, self.field, self.problem)


@dataclass(frozen=True)
class TableCount:
    rows: int
    method: str  # EXACT or ESTIMATE
    # the content's fingerprint in the same statement as the count (core/checks/fingerprint.py):
    # the columns it covers, those left out (column → why), those of extension types (column →
    # extension) and, when there are some, the fingerprint without them
    fingerprint: str | None = None
    fingerprint_columns: tuple[str, ...] = ()
    left_out: dict[str, str] = field(default_factory=dict)
    extension_columns: dict[str, str] = field(default_factory=dict)
    fingerprint_builtin: str | None = None

    @property
    def exact(self) -> bool:
        return self.method == EXACT

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.rows, "method": self.method}
        if self.fingerprint is not None:
            out["fingerprint"] = self.fingerprint
            out["fingerprint_columns"] = list(self.fingerprint_columns)
            out["left_out"] = dict(self.left_out)
            if self.extension_columns:
                out["extension_columns"] = dict(self.extension_columns)
                out["fingerprint_builtin"] = self.fingerprint_builtin
        return out


@dataclass
class Manifest:
    dump: str  # the dump's file/object name (basename)
    taken_at: str  # ISO 8601 UTC, when the snapshot was exported
    snapshot: str  # pg_export_snapshot()'s id, which pg_dump --snapshot used
    database: str
    server_version: str  # SHOW server_version
    server_version_num: int
    pg_dump_version: str  # "pg_dump (PostgreSQL) 18.6" → "18.6"
    pg_dump_bin: str  # which pg_dump wrote the dump (its bin dir)
    extensions: dict[str, str]  # name → installed version
    count_mode: str  # "exact" (all tables) or "listed" (exact for the listed, reltuples else)
    tables: dict[str, TableCount]  # "schema.table" → count
    size_bytes: int
    sha256: str  # hex, of the dump's bytes
    format_version: int = FORMAT_VERSION
    dump_format: str = "custom"
    notes: list[str] = field(default_factory=list)
    encoding: str | None = None  # the source's server_encoding (the bytes rows are hashed in)
    fingerprint_method: str | None = (
        None  # core/checks/fingerprint.py METHOD; None: no fingerprints
    )

    def exact_counts(self) -> dict[str, int]:
        return {t: c.rows for t, c in self.tables.items() if c.exact}

    def fingerprint_requests(self) -> dict[str, FingerprintRequest]:
        """What verify computes over each restored table: the manifest's fingerprinted columns,
        when its method is the one this verifier computes (else nothing: counts only)."""
        if self.fingerprint_method != fingerprint.METHOD:
            return {}
        return {
            table: FingerprintRequest(
                count.fingerprint_columns,
                dict(count.extension_columns),
                dict(self.extensions),
                self.encoding,
            )
            for table, count in self.tables.items()
            if count.exact and count.fingerprint is not None
        }

    def estimated_tables(self) -> list[str]:
        return sorted(t for t, c in self.tables.items() if not c.exact)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "dump": self.dump,
            "dump_format": self.dump_format,
            "taken_at": self.taken_at,
            "snapshot": self.snapshot,
            "database": self.database,
            "server_version": self.server_version,
            "server_version_num": self.server_version_num,
            "pg_dump_version": self.pg_dump_version,
            "pg_dump_bin": self.pg_dump_bin,
            "extensions": dict(sorted(self.extensions.items())),
            "count_mode": self.count_mode,
            "tables": {t: c.to_dict() for t, c in sorted(self.tables.items())},
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "notes": list(self.notes),
            **({"encoding": self.encoding} if self.encoding else {}),
            **({"fingerprint_method": self.fingerprint_method} if self.fingerprint_method else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<manifest>") -> Manifest:
        return _parse(data, source)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<manifest>") -> Manifest:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(source, "(document)", f"not JSON: {exc}") from None
        return _parse(data, source)


def manifest_key(dump_key: str) -> str:
    """The manifest's key (or path) beside a dump: `.dump` replaced by `.manifest.json`."""
    if dump_key.endswith(DUMP_SUFFIX):
        return dump_key[: -len(DUMP_SUFFIX)] + MANIFEST_SUFFIX
    return dump_key + MANIFEST_SUFFIX


def fetch_manifest(client, bucket: str, dump_key: str) -> Manifest | None:
    """The manifest beside `dump_key` in `bucket` (a boto3 S3 client), or None when there is none
    (NoSuchKey / 404: older dumps have none). A manifest that is malformed raises ManifestError
    naming the key and the field; any other S3 error propagates as boto3 raised it (the caller
    classifies endpoint errors as it does for the dump)."""
    key = manifest_key(dump_key)
    raw = fetch_small_object(client, bucket, key, MAX_MANIFEST_BYTES)
    return None if raw is None else Manifest.from_json(raw, f"s3://{bucket}/{key}")


def fetch_small_object(client, bucket: str, key: str, limit: int) -> bytes | None:
    """The bytes of a small object (a manifest, its signature), None when there is none (404);
    more than `limit` bytes raises ManifestError naming it."""
    from botocore.exceptions import ClientError

    source = f"s3://{bucket}/{key}"
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return None
        raise
    body = response["Body"]
    try:
        length = response.get("ContentLength")
        if length is not None and int(length) > limit:
            raise ManifestError(source, "(document)", f"{length} bytes, more than {limit}")
        raw = body.read(limit + 1)
    finally:
        body.close()
    if len(raw) > limit:
        raise ManifestError(source, "(document)", f"more than {limit} bytes")
    return raw


# -- validation ------------------------------------------------------------------------------


def _req(data: dict, name: str, kind: type | tuple[type, ...], source: str) -> Any:
    if name not in data:
        raise ManifestError(source, name, "missing")
    value = data[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ManifestError(source, name, f"expected {_names(kinds)}, got a boolean")
    if not isinstance(value, kinds):
        raise ManifestError(source, name, f"expected {_names(kinds)}, got {type(value).__name__}")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(
        {"str": "a string", "int": "an integer", "dict": "an object"}.get(k.__name__, k.__name__)
        for k in kinds
    )


def _parse(data: Any, source: str) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError(source, "(document)", "expected a JSON object")
    version = _req(data, "format_version", int, source)
    if version != FORMAT_VERSION:
        raise ManifestError(
            source, "format_version", f"{version} is not supported (this verifier reads 1)"
        )
    size = _req(data, "size_bytes", int, source)
    if size < 0:
        raise ManifestError(source, "size_bytes", f"{size} is negative")
    sha = _req(data, "sha256", str, source)
    if not _SHA256.match(sha):
        raise ManifestError(source, "sha256", "expected 64 lowercase hex digits")
    count_mode = _req(data, "count_mode", str, source)
    if count_mode not in COUNT_MODES:
        raise ManifestError(source, "count_mode", f"{count_mode!r} is not one of {COUNT_MODES}")
    tables = {
        name: _table_count(name, entry, source)
        for name, entry in _req(data, "tables", dict, source).items()
    }
    extensions = _req(data, "extensions", dict, source)
    for name, ext_version in extensions.items():
        if not isinstance(ext_version, str):
            raise ManifestError(source, f"extensions.{name}", "expected a version string")
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ManifestError(source, "notes", "expected a list of strings")
    return Manifest(
        encoding=_optional_str(data, "encoding", source),
        fingerprint_method=_optional_str(data, "fingerprint_method", source),
        format_version=version,
        dump=_req(data, "dump", str, source),
        dump_format=str(data.get("dump_format", "custom")),
        taken_at=_req(data, "taken_at", str, source),
        snapshot=_req(data, "snapshot", str, source),
        database=_req(data, "database", str, source),
        server_version=_req(data, "server_version", str, source),
        server_version_num=_req(data, "server_version_num", int, source),
        pg_dump_version=_req(data, "pg_dump_version", str, source),
        pg_dump_bin=_req(data, "pg_dump_bin", str, source),
        extensions=dict(extensions),
        count_mode=count_mode,
        tables=tables,
        size_bytes=size,
        sha256=sha,
        notes=list(notes),
    )


def _table_count(name: str, entry: Any, source: str) -> TableCount:
    """One entry of `tables`: schema.table → {rows, method}."""
    where = f"tables.{name}"
    if not _TABLE.match(name):
        raise ManifestError(source, where, "a table is named schema.table")
    if not isinstance(entry, dict):
        raise ManifestError(source, where, "expected an object with rows and method")
    rows = entry.get("rows")
    if rows is None:
        raise ManifestError(source, f"{where}.rows", "missing")
    if isinstance(rows, bool) or not isinstance(rows, int):
        raise ManifestError(source, f"{where}.rows", "expected an integer")
    method = entry.get("method")
    if method not in COUNT_METHODS:
        raise ManifestError(source, f"{where}.method", f"{method!r} is not one of {COUNT_METHODS}")
    if rows < 0 and method == EXACT:
        raise ManifestError(source, f"{where}.rows", f"{rows} is negative")
    return TableCount(rows, method, **_fingerprint_fields(entry, where, source))


def _optional_str(data: dict, name: str, source: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ManifestError(source, name, "expected a string")
    return value


def _str_map(entry: dict, name: str, where: str, source: str) -> dict[str, str]:
    value = entry.get(name, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestError(source, f"{where}.{name}", "expected an object of strings")
    return dict(value)


def _fingerprint_fields(entry: dict, where: str, source: str) -> dict[str, Any]:
    """A table entry's fingerprint, its columns, those left out and of extension types."""
    value = entry.get("fingerprint")
    if value is None:
        return {}
    if not isinstance(value, str) or not _FINGERPRINT.match(value):
        raise ManifestError(source, f"{where}.fingerprint", "expected 16 lowercase hex digits")
    columns = entry.get("fingerprint_columns")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ManifestError(source, f"{where}.fingerprint_columns", "expected a list of names")
    extension_columns = _str_map(entry, "extension_columns", where, source)
    builtin = entry.get("fingerprint_builtin")
    if extension_columns and not (isinstance(builtin, str) and _FINGERPRINT.match(builtin)):
        raise ManifestError(
            source, f"{where}.fingerprint_builtin", "expected 16 lowercase hex digits"
        )
    return {
        "fingerprint": value,
        "fingerprint_columns": tuple(columns),
        "left_out": _str_map(entry, "left_out", where, source),
        "extension_columns": extension_columns,
        "fingerprint_builtin": builtin if extension_columns else None,
    }


# -- after the restore: the restored counts against the source's -----------------------------


@dataclass
class CountComparison:
    """The restored tables against the manifest's: one row per table of either side."""

    rows: list[dict[str, Any]]
    findings: list[Finding]
    estimated: list[str]  # in the manifest by reltuples only: not compared exactly

    @property
    def compared(self) -> int:
        return sum(1 for r in self.rows if r["status"] in ("ok", "differs", "content differs"))

    @property
    def fingerprints_matched(self) -> int:
        return sum(1 for r in self.rows if r["fingerprint"] == "match")


def compare_counts(
    manifest: Manifest,
    restored: dict[str, int],
    source: str,
    fingerprints: Mapping[str, Fingerprint] | None = None,
) -> CountComparison:
    """Every exact count of the manifest against the restored one; tables on one side only are
    named too. Any difference is F2 DUMP_INCOMPLETE (the dump is missing data). Where the counts
    match and both sides have the table's fingerprint (`fingerprints`: verify's, computed in the
    same scan as its counts), a different fingerprint is F2 DUMP_CONTENT_DIFFERS."""
    fingerprints = fingerprints or {}
    rows = [
        _compared(table, manifest.tables.get(table), restored.get(table), fingerprints.get(table))
        for table in sorted(set(manifest.tables) | set(restored))
    ]
    findings = _incomplete(manifest, rows, source) + _content_differs(manifest, rows, source)
    return CountComparison(rows, findings, manifest.estimated_tables())


def _compared(
    table: str, count: TableCount | None, got: int | None, mine: Fingerprint | None
) -> dict[str, Any]:
    """One row of the comparison: the source's count, the restored one, and which is which;
    the source's fingerprint, the restored one, and whether they match."""
    if count is None:
        status = "not in manifest"
    elif got is None:
        status = "not restored"
    elif not count.exact:
        status = "estimate"
    elif got != count.rows:
        status = "differs"
    else:
        status = "ok"
    expected = _expected_fingerprint(count, mine)
    verdict = _fingerprint_verdict(expected, mine) if status == "ok" else None
    if verdict == "differs":
        status = "content differs"
    return {
        "table": table,
        "source": count.rows if count else None,
        "method": count.method if count else None,
        "restored": got,
        "delta": got - count.rows if count and count.exact and got is not None else None,
        "status": status,
        "fingerprint": verdict,
        "source_fingerprint": expected,
        "restored_fingerprint": mine.value if mine else None,
        "left_out": {
            **(count.left_out if count else {}),
            **(mine.left_out if mine else {}),
        },
        "fingerprint_note": (mine.problem or mine.not_compared) if mine else None,
    }


def _expected_fingerprint(count: TableCount | None, mine: Fingerprint | None) -> str | None:
    """The manifest's fingerprint that verify's is compared with: all columns, or without those
    of extension types when verify left them out."""
    if count is None or count.fingerprint is None:
        return None
    return count.fingerprint_builtin if mine and mine.variant == "builtin" else count.fingerprint


def _fingerprint_verdict(expected: str | None, mine: Fingerprint | None) -> str | None:
    if expected is None or mine is None:
        return None if expected is None else "not computed"
    if mine.not_compared:
        return "not compared"
    if mine.problem or mine.value != expected:
        return "differs"
    return "match"


def _content_differs(manifest: Manifest, rows: list[dict[str, Any]], source: str) -> list[Finding]:
    """DUMP_CONTENT_DIFFERS: tables whose counts match and whose fingerprints do not."""
    differs = [r for r in rows if r["status"] == "content differs"]
    if not differs:
        return []
    listed = "; ".join(_content_line(r) for r in differs)
    return [
        Finding(
            "DUMP_CONTENT_DIFFERS",
            f"{len(differs)} restored table(s) have the source's row count but not its content "
            f"(the fingerprint {manifest.fingerprint_method} taken in pg_dump's snapshot, "
            f"{manifest.taken_at}, {source}): {listed}",
            {
                "cause": "fingerprint_mismatch",
                "manifest": source,
                "fingerprint_method": manifest.fingerprint_method,
                "tables": [
                    {
                        "table": r["table"],
                        "rows": r["restored"],
                        "source_fingerprint": r["source_fingerprint"],
                        "restored_fingerprint": r["restored_fingerprint"],
                        "left_out": r["left_out"],
                        **({"problem": r["fingerprint_note"]} if r["fingerprint_note"] else {}),
                    }
                    for r in differs
                ],
            },
        )
    ]


def _content_line(row: dict[str, Any]) -> str:
    what = row["fingerprint_note"] or (
        f"source fingerprint {row['source_fingerprint']}, restored {row['restored_fingerprint']}"
    )
    left_out = (
        f"; left out: {', '.join(f'{c} ({why})' for c, why in row['left_out'].items())}"
        if row["left_out"]
        else ""
    )
    return f"{row['table']}: {what}, the counts match ({row['restored']:,} rows){left_out}"


def fingerprint_note(manifest: Manifest, comparison: CountComparison) -> str:
    """What the check says of the fingerprints: compared and matched, or why only counts."""
    if manifest.fingerprint_method is None:
        return "no fingerprints in this manifest: compared by counts only"
    if manifest.fingerprint_method != fingerprint.METHOD:
        return (
            f"the manifest's fingerprint method {manifest.fingerprint_method} is not the one this "
            f"verifier computes ({fingerprint.METHOD}): compared by counts only"
        )
    note = f"{comparison.fingerprints_matched} table(s)' fingerprints match the manifest's"
    left = [
        f"{r['table']}.{column} ({why})"
        for r in comparison.rows
        if r["fingerprint"] is not None
        for column, why in r["left_out"].items()
    ]
    if left:
        note += "; left out of the fingerprints: " + "; ".join(left)
    skipped = [f"{r['table']} ({r['fingerprint_note']})" for r in comparison.rows
               if r["fingerprint"] == "not compared"]  # fmt: skip
    if skipped:
        note += "; fingerprints not compared: " + "; ".join(skipped)
    return note


def _incomplete(manifest: Manifest, rows: list[dict[str, Any]], source: str) -> list[Finding]:
    """The DUMP_INCOMPLETE findings of the comparison: tables whose counts differ, tables of
    the manifest not restored, restored tables the manifest does not have."""
    differs = [(r["table"], r["source"], r["restored"]) for r in rows if r["status"] == "differs"]
    absent = [r["table"] for r in rows if r["status"] == "not restored"]
    extra = [r["table"] for r in rows if r["status"] == "not in manifest"]
    findings = []
    taken = f"the source's counts in pg_dump's snapshot ({manifest.taken_at}, {source})"
    if differs:
        listed = "; ".join(f"{t}: source {s:,} rows, restored {r:,}" for t, s, r in differs)
        findings.append(
            Finding(
                "DUMP_INCOMPLETE",
                f"{len(differs)} restored table(s) differ from {taken}: {listed}",
                {
                    "cause": "row_count_mismatch",
                    "manifest": source,
                    "tables": [{"table": t, "source": s, "restored": r} for t, s, r in differs],
                },
            )
        )
    if absent:
        findings.append(
            Finding(
                "DUMP_INCOMPLETE",
                f"{len(absent)} table(s) of the manifest were not restored: {', '.join(absent)} "
                f"({taken} has them)",
                {"cause": "table_not_restored", "manifest": source, "tables": absent},
            )
        )
    if extra:
        findings.append(
            Finding(
                "DUMP_INCOMPLETE",
                f"{len(extra)} restored table(s) are not in the manifest: {', '.join(extra)} "
                f"(the dump and {source} do not describe the same snapshot)",
                {"cause": "table_not_in_manifest", "manifest": source, "tables": extra},
            )
        )
    return findings


@dataclass(frozen=True)
class ManifestRead:
    """The producer's manifest beside a dump, read once per run as the dump is located: the
    download, the count check and F1's triage all use this one read. Exactly one of `manifest`,
    `invalid` and `endpoint_fault` is set, or none when there is no manifest (older dumps).

    `sha256` is that of the manifest's bytes as read (None: none read); `signature` what its
    detached signature says (core/store/signature.py: verified, not_signed, not_checked when no
    public key is configured, no_manifest; or malformed / mismatch, with `signature_problem`)."""

    where: str  # s3://bucket/key (which endpoint)
    manifest: Manifest | None = None
    invalid: ManifestError | None = None  # there, but malformed: names the field
    endpoint_fault: Finding | None = None  # the endpoint failed while reading it
    sha256: str | None = None
    signature: str = sig.NO_MANIFEST
    signature_problem: str | None = None
    signature_key_id: str | None = None  # the public key that verified it

    def usable(self) -> Manifest | None:
        """The manifest when it was read and is well formed, else None."""
        return self.manifest

    def problem(self) -> str | None:
        """Why there is no usable manifest although one may exist; None when read or absent."""
        fault = self.invalid or self.endpoint_fault
        return str(fault if self.invalid else fault.summary) if fault else None


def read_manifest_beside(
    client, bucket: str, dump_key: str, endpoint: str, keys: list | None = None
) -> ManifestRead:
    """The manifest beside `dump_key`, from the endpoint that listed the dump, as a ManifestRead:
    a malformed manifest or a fault of the endpoint is kept for the check to report. With
    `keys` (the configured public keys), its signature beside it is read and checked."""
    key = manifest_key(dump_key)
    where = f"s3://{bucket}/{key} ({endpoint} endpoint)"
    try:
        raw = fetch_small_object(client, bucket, key, MAX_MANIFEST_BYTES)
        if raw is None:
            return ManifestRead(where)
        signed = _signature_of(client, bucket, key, raw, keys)
        try:
            return replace(
                signed, where=where, manifest=Manifest.from_json(raw, f"s3://{bucket}/{key}")
            )
        except ManifestError as exc:
            return replace(signed, where=where, invalid=exc)
    except ManifestError as exc:
        return ManifestRead(where, invalid=exc)
    except Exception as exc:
        finding = store_error_finding(exc, endpoint, bucket)
        if finding is None:
            raise
        return ManifestRead(where, endpoint_fault=finding)


def _signature_of(client, bucket: str, key: str, raw: bytes, keys: list | None) -> ManifestRead:
    """The manifest's digest and its signature's verdict (a ManifestRead to complete)."""
    digest = hashlib.sha256(raw).hexdigest()
    if keys is None:
        return ManifestRead("", sha256=digest, signature=sig.NOT_CHECKED)
    try:
        text = fetch_small_object(client, bucket, sig.signature_key(key), sig.MAX_SIGNATURE_FILE)
        check = sig.check_signature(raw, text, keys)
    except ManifestError:
        check = sig.SignatureCheck(
            "malformed",
            problem=f"the signature is malformed: more than {sig.MAX_SIGNATURE_FILE} bytes",
        )
    return ManifestRead(
        "",
        sha256=digest,
        signature=check.status,
        signature_problem=check.problem,
        signature_key_id=check.key_id,
    )
