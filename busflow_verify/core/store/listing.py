"""Finding and sizing dumps in an S3-compatible bucket (boto3 client passed in).

Sizes come from listings and HEAD only: the size guard never downloads. The one download is
core/store/download.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass, field, fields
from typing import Any

from busflow_verify.core.failures import Finding, FindingError
from busflow_verify.core.store.dumpkeys import DumpName, day_prefix, parse_dump_key
from busflow_verify.core.store.endpoints import Endpoint, dump_inaccessible, store_error_finding
from busflow_verify.core.store.manifest import ManifestRead


@dataclass
class DumpObject:
    bucket: str
    key: str
    size_bytes: int
    last_modified: str  # ISO 8601
    endpoint: str  # "primary" or "fallback"
    endpoint_url: str
    taken_at: str  # ISO 8601, from the name
    # the means the store gives to check the bytes (core/store/download.py): the ETag when it is the
    # MD5 of a single-part, unencrypted object; full-object x-amz-checksum-* values, as hex
    etag_md5: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    # the producer's manifest beside it, read once when the dump is located; not part of the
    # dump's own description (to_dict), which the verdict and the UI show
    manifest: ManifestRead | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "manifest"}


def _plain(value):
    return dict(value) if isinstance(value, dict) else value


@dataclass
class ListedDump:
    name: DumpName
    size_bytes: int
    last_modified: dt.datetime


def list_day(client, bucket: str, prefix: str, date: dt.date) -> list[ListedDump]:
    """Every nightly dump of one date (by name), oldest first."""
    found = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=day_prefix(prefix, date)):
        for obj in page.get("Contents", []):
            name = parse_dump_key(obj["Key"], prefix)
            if name is not None and name.date == date:
                found.append(ListedDump(name, int(obj["Size"]), obj["LastModified"]))
    return sorted(found, key=lambda d: d.name)


def newest_of_day(client, bucket: str, prefix: str, date: dt.date) -> ListedDump | None:
    dumps = list_day(client, bucket, prefix, date)
    return dumps[-1] if dumps else None


def locate_dump(
    client, bucket: str, prefix: str, date: dt.date, endpoint: str, endpoint_url: str
) -> DumpObject:
    """The newest dump of `date`, confirmed by HEAD. DUMP_MISSING when there is none."""
    newest = newest_of_day(client, bucket, prefix, date)
    if newest is None:
        raise FindingError(
            Finding(
                "DUMP_MISSING",
                f"no pg_dump_{date:%Y%m%d}_HHMM.dump for {date} in bucket {bucket!r} under prefix "
                f"{prefix!r} at the {endpoint} endpoint",
                {
                    "bucket": bucket,
                    "prefix": prefix,
                    "date": date.isoformat(),
                    "endpoint": endpoint,
                },
            )
        )
    return head_dump(
        client, bucket, newest.name.key, endpoint, endpoint_url, newest.name.taken_at.isoformat()
    )


def head_dump(
    client, bucket: str, key: str, endpoint: str, endpoint_url: str, taken_at: str
) -> DumpObject:
    """The dump object at `key` as this endpoint's HEAD describes it (size, integrity means)."""
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    return DumpObject(
        bucket=bucket,
        key=key,
        size_bytes=int(head["ContentLength"]),
        last_modified=head["LastModified"].isoformat(),
        endpoint=endpoint,
        endpoint_url=endpoint_url,
        taken_at=taken_at,
        etag_md5=etag_md5(head),
        checksums=full_object_checksums(head),
    )


_MD5 = re.compile(r"^[0-9a-f]{32}$")
CHECKSUM_ALGORITHMS = ("sha256", "sha1", "crc32")


def etag_md5(head: dict[str, Any]) -> str | None:
    """The ETag as the object's MD5, when it is one: a single-part upload (a multipart ETag
    ends in "-<parts>") not encrypted with KMS or a customer key (their ETags are not MD5s)."""
    etag = (head.get("ETag") or "").strip().strip('"').lower()
    sse = head.get("ServerSideEncryption")
    if not _MD5.match(etag) or (sse and sse != "AES256") or head.get("SSECustomerAlgorithm"):
        return None
    return etag


def full_object_checksums(head: dict[str, Any]) -> dict[str, str]:
    """HEAD's `x-amz-checksum-*` (asked for with ChecksumMode) of the whole object, as hex; a
    composite checksum of a multipart upload ("...-N") is not the object's and is left out."""
    if head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return {}
    found = {}
    for algorithm in CHECKSUM_ALGORITHMS:
        value = head.get(f"Checksum{algorithm.upper()}")
        if value and "-" not in value:
            try:
                found[algorithm] = base64.b64decode(value, validate=True).hex()
            except ValueError:
                continue
    return found


def trailing_history(
    client, bucket: str, prefix: str, date: dt.date, days: int
) -> dict[str, dict[str, Any]]:
    """The newest dump of each of the `days` days before `date` that has one: {date: {key, size}}."""
    history = {}
    for back in range(days, 0, -1):
        day = date - dt.timedelta(days=back)
        newest = newest_of_day(client, bucket, prefix, day)
        if newest is not None:
            history[day.isoformat()] = {"key": newest.name.key, "size_bytes": newest.size_bytes}
    return history


def locate_with_fallback(
    endpoints: list[Endpoint], bucket: str, prefix: str, date: dt.date
) -> tuple[DumpObject, list[Finding]]:
    """F5: the newest dump of `date` from the primary, or from the fallback when the primary
    cannot be reached. Returns the dump and the outages met on the way (informational when the
    fallback served it). Both unreachable: F5, P1, "dump inaccessible". A credential problem or a
    missing dump on the primary is not an outage: it is reported as it is, with no fallback.
    """
    outages: list[Finding] = []
    for endpoint in endpoints:
        try:
            dump = locate_dump(endpoint.client, bucket, prefix, date, endpoint.name, endpoint.url)
            return dump, outages
        except FindingError:
            raise
        except Exception as exc:
            finding = store_error_finding(exc, endpoint.name, bucket)
            if finding is None:
                raise
            if finding.name != "OFFSITE_ENDPOINT_DOWN":
                raise FindingError(finding) from None
            outages.append(finding)
    raise FindingError(dump_inaccessible([e.name for e in endpoints], outages, bucket, date))
