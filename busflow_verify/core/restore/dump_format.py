"""F2 step 1: what is this object? Sniffed from its first bytes before anything is restored.

Accepted: pg_dump custom format (`PGDMP`), plain-text SQL, gzip-compressed plain SQL, pg_dump tar
format, and a directory-format dump packed as a tar. Everything else is an F2 naming what the
object looks like: an HTML/XML error page (the S3/MinIO answer after a credential rotation) or
not a dump at all.
"""

from __future__ import annotations

import gzip
import re
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from busflow_verify.core.failures import Finding, FindingError

CUSTOM_MAGIC = b"PGDMP"
GZIP_MAGIC = b"\x1f\x8b"
SNIFF_BYTES = 8192

# The newest archive version each pg_dump major writes (pg_backup_archiver.h), to name the
# writer of an archive our pg_restore cannot read.
ARCHIVE_VERSION_WRITERS = {
    (1, 14): "PostgreSQL 12-15",
    (1, 15): "PostgreSQL 16",
    (1, 16): "PostgreSQL 17 or 18",
}


@dataclass
class DumpFormat:
    kind: str  # custom | plain | plain_gzip | tar | directory_tar
    archive_version: str | None = None  # custom format: "1.14"
    dumped_by: str | None = None  # "15.18 (Debian ...)": the custom header or the plain header


def sniff(path: Path, key: str) -> DumpFormat:
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if head.startswith(CUSTOM_MAGIC):
        version, dumped_by = read_custom_header(head)
        return DumpFormat("custom", version, dumped_by)
    if head.startswith(GZIP_MAGIC):
        return _sniff_gzip(path, key)
    if len(head) > 262 and head[257:262] == b"ustar":
        return _sniff_tar(path, key)
    if _looks_like_html(head):
        raise FindingError(
            Finding(
                "RESTORE_FAILED",
                f"{key} is an HTML/XML document, not a Postgres dump: the S3/MinIO endpoint stored or "
                "served an error page (an auth failure, common after a credential rotation); check "
                "the backup credentials and the object (F2 step 1)",
                {
                    "cause": "html_error_page",
                    "key": key,
                    "first_bytes": head[:160].decode("utf-8", "replace"),
                },
                next_step="Check the S3/MinIO credentials (rotated?) and the object in the bucket; "
                "re-run pg_dump's upload if the object itself is the error page.",
            )
        )
    if looks_like_plain_sql(head):
        return DumpFormat("plain", dumped_by=plain_dumped_by(head))
    raise not_a_dump(key, head)


def plain_dumped_by(head: bytes) -> str | None:
    """The pg_dump version a plain dump names in its header ("-- Dumped by pg_dump version
    18.6")."""
    match = re.search(rb"^-- Dumped by pg_dump version (\S+)", head, re.M)
    return match[1].decode("ascii", "replace") if match else None


def not_a_dump(key: str, head: bytes, what: str = "") -> FindingError:
    shown = "empty object" if not head else f"first bytes {head[:16].hex()}"
    return FindingError(
        Finding(
            "RESTORE_FAILED",
            f"{key} is not a Postgres dump{what}: no PGDMP custom-format header, no plain-text SQL "
            f"({shown}); check the object in the bucket (F2 step 1)",
            {
                "cause": "not_a_dump",
                "key": key,
                "size_sniffed": len(head),
                "first_bytes_hex": head[:16].hex(),
            },
            next_step="Check the object in the bucket and the pg_dump job that uploaded it.",
        )
    )


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip()[:512].lower()
    return text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<error")) or b"<html" in text


def looks_like_plain_sql(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head[:-4].decode("utf-8", "replace")  # a multi-byte char cut at the edge
        if "\ufffd" in text:
            return False
    return "PostgreSQL database dump" in text or bool(
        re.match(r"\s*(--|SET\s|CREATE\s|\\restrict\s|\\connect\s|SELECT\s|BEGIN;)", text)
    )


def _sniff_gzip(path: Path, key: str) -> DumpFormat:
    try:
        with gzip.open(path, "rb") as fh:
            inner = fh.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        raise not_a_dump(key, b"", " (a gzip stream that does not decompress)") from None
    if looks_like_plain_sql(inner):
        return DumpFormat("plain_gzip", dumped_by=plain_dumped_by(inner))
    raise not_a_dump(key, inner, " (gzip-compressed, but not plain SQL inside)")


def _sniff_tar(path: Path, key: str) -> DumpFormat:
    try:
        with tarfile.open(path) as tar:
            names = tar.getnames()
    except (tarfile.TarError, EOFError) as exc:
        raise FindingError(
            Finding(
                "RESTORE_FAILED",
                f"{key} is a tar archive that cannot be read ({exc}): truncated?",
                {"cause": "truncated", "key": key, "format": "tar"},
                severity="P1",
            )
        ) from None
    if "toc.dat" in names and "restore.sql" in names:
        return DumpFormat("tar")
    if any(n == "toc.dat" or n.endswith("/toc.dat") for n in names):
        return DumpFormat("directory_tar")
    raise not_a_dump(key, b"", f" (a tar archive without a pg_dump toc.dat: {names[:5]})")


def read_custom_header(head: bytes) -> tuple[str | None, str | None]:
    """(archive version, pg_dump version) from a custom-format header, as far as it parses.

    Layout (pg_backup_archiver.c WriteHead): magic, vmaj, vmin, vrev, intSize, offSize, format,
    compression (an int before 1.15, a byte since), 7 ints of creation time, then the strings
    dbname, server version and pg_dump version.
    """
    if len(head) < 11:
        return None, None
    vmaj, vmin, vrev, int_size = head[5], head[6], head[7], head[8]
    version = f"{vmaj}.{vmin}" + (f"-{vrev}" if vrev else "")
    try:
        pos = 11
        pos += 1 if (vmaj, vmin) >= (1, 15) else 1 + int_size
        pos += 7 * (1 + int_size)
        strings = []
        for _ in range(3):
            sign, raw = head[pos], head[pos + 1 : pos + 1 + int_size]
            length = int.from_bytes(raw, "little") * (-1 if sign else 1)
            pos += 1 + int_size
            if length < 0 or length > 512:
                return version, None
            strings.append(head[pos : pos + length].decode("utf-8"))
            pos += length
        return version, strings[2]
    except (IndexError, UnicodeDecodeError, struct.error):
        return version, None


def writer_of(archive_version: str | None) -> str:
    if not archive_version:
        return "an unknown pg_dump"
    try:
        major, minor = (int(x) for x in archive_version.split("-")[0].split("."))
    except ValueError:
        return "an unknown pg_dump"
    if (major, minor) in ARCHIVE_VERSION_WRITERS:
        return ARCHIVE_VERSION_WRITERS[(major, minor)]
    newest = max(ARCHIVE_VERSION_WRITERS)
    return "a pg_dump newer than PostgreSQL 18" if (major, minor) > newest else "an old pg_dump"
