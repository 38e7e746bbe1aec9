"""The one download of the dump: ranged GETs in parallel, each written straight to its place in
the local file.

A parallel restore needs a seekable file, and reading the stream three times for the section
split would triple the cost, so the dump is downloaded once. Each of `CONCURRENCY` threads GETs
one `PART` of the object at a time, reads it into its own `BUFFER` (`readinto`) and `pwrite`s it
at its offset: memory is CONCURRENCY * BUFFER whatever the dump's size, and no thread hands data
to another. Measured on a 577 MB object over loopback, best of 5 (docs/performance.md): 0.64 s
and 8 MB more RSS, where boto3's s3transfer as configured before (16 MB ranges, one writer thread
behind a queue) took 1.4 s and 130 MB; `rclone copyto` took 0.50 s. A part cut short mid-body is
resumed where it stopped, up to `ATTEMPTS` times; errors of the request itself are botocore's
(retried by the client, classified by store.store_error_finding).

Integrity: the size always (HEAD's); and every digest the store (or the producer's manifest)
gives the means to check: the ETag's MD5 of a single-part object, `x-amz-checksum-*` of a full
object, the manifest's SHA-256. They are computed while downloading, by a thread that follows
the parts as they land and hashes the written prefix back from the page cache (the parts arrive
out of order; the digests need them in order). A mismatch is `IntegrityError`: a transfer fault,
never a fault of the backup (defs/restore.py retries it once, then the fallback mirror).
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import (
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from busflow_verify.core.progress import Progress, Report
from busflow_verify.core.store.listing import DumpObject

PART = 64 * 1024 * 1024
CONCURRENCY = 4
BUFFER = 1024 * 1024
ATTEMPTS = 5
_CUT = (IncompleteReadError, ReadTimeoutError, ResponseStreamingError, ConnectionError)


class DownloadError(RuntimeError):
    pass


class IntegrityError(DownloadError):
    """The bytes downloaded are not the object's: a digest the store or the manifest gave differs.
    `expected` is the digest that differed, `computed` every digest of the bytes received."""

    def __init__(self, message: str, expected: Expected, computed: dict[str, str]):
        super().__init__(message)
        self.expected, self.computed = expected, computed


@dataclass(frozen=True)
class Expected:
    """A digest to check: `algorithm` (md5, sha1, sha256, crc32), its hex value, and where it
    comes from (said in the error: "the ETag", "x-amz-checksum-sha256", "the manifest")."""

    algorithm: str
    hex: str
    source: str

    @property
    def from_manifest(self) -> bool:
        return self.source == MANIFEST_SOURCE


MANIFEST_SOURCE = "the manifest"


def expected_digests(dump: DumpObject, sha256: str | None = None) -> list[Expected]:
    """What the store (and the producer's manifest: `sha256`) lets this download be checked by."""
    expected = [Expected(a, v, f"x-amz-checksum-{a}") for a, v in dump.checksums.items()]
    if dump.etag_md5:
        expected.append(Expected("md5", dump.etag_md5, "the ETag"))
    if sha256 and dump.checksums.get("sha256") != sha256.lower():
        expected.append(Expected("sha256", sha256.lower(), MANIFEST_SOURCE))
    return expected


class _Crc32:
    def __init__(self):
        self.value = 0

    def update(self, data) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return self.value.to_bytes(4, "big").hex()


def _hasher(algorithm: str):
    return _Crc32() if algorithm == "crc32" else hashlib.new(algorithm)


class _Digests:
    """Hashes the file's written prefix as parts complete, in a thread of its own."""

    def __init__(self, fd: int, size: int, algorithms: set[str]):
        self.fd, self.size = fd, size
        self.hashers = {a: _hasher(a) for a in sorted(algorithms)}
        self.ends: dict[int, int] = {}  # part start -> part end (exclusive), once written
        self.hashed = 0
        self.cond = threading.Condition()
        self.stopped = self.abandoned = False
        self.thread = threading.Thread(target=self._run, name="download-digests", daemon=True)
        if self.hashers:
            self.thread.start()

    def part_done(self, start: int, end: int) -> None:
        with self.cond:
            self.ends[start] = end + 1
            self.cond.notify()

    def stop(self, abandon: bool = False) -> None:
        """No more parts are coming: hash what is contiguous (or, abandoning, nothing more)."""
        with self.cond:
            self.stopped = True
            self.abandoned = self.abandoned or abandon
            self.cond.notify()
        if self.thread.is_alive():
            self.thread.join()

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.hashed not in self.ends and not self.stopped:
                    self.cond.wait()
                if self.abandoned or self.hashed not in self.ends:
                    return
                end = self.ends.pop(self.hashed)
            self._hash(self.hashed, end)
            self.hashed = end

    def _hash(self, start: int, end: int) -> None:
        while start < end and not self.abandoned:
            chunk = os.pread(self.fd, min(BUFFER * 8, end - start), start)
            if not chunk:
                return
            for h in self.hashers.values():
                h.update(chunk)
            start += len(chunk)

    def result(self) -> dict[str, str]:
        self.stop()
        if self.hashed != self.size:
            return {}
        return {a: h.hexdigest() for a, h in self.hashers.items()}


class _Parts:
    """The parts of one object, fetched by the pool's threads into one open file."""

    def __init__(
        self, client, bucket: str, key: str, size: int, fd: int, progress: Progress, on_part
    ):
        self.client, self.bucket, self.key, self.size, self.fd = client, bucket, key, size, fd
        self.progress, self.on_part = progress, on_part
        self.cancel = threading.Event()

    def fetch(self, start: int, end: int) -> None:
        position = [start]  # the next byte to fetch, kept when a cut-off GET is resumed
        buffer = memoryview(bytearray(BUFFER))
        for _attempt in range(ATTEMPTS):
            try:
                self._read(position, end, buffer)
                self.on_part(start, end)
                return
            except _CUT:
                continue
        raise DownloadError(
            f"s3://{self.bucket}/{self.key}: bytes {position[0]}-{end} were cut "
            f"off {ATTEMPTS} times; re-run the date"
        )

    def _read(self, position: list[int], end: int, buffer: memoryview) -> None:
        try:
            body = self.client.get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={position[0]}-{end}"
            )["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            raise DownloadError(
                f"s3://{self.bucket}/{self.key} ends before byte {position[0]}, "
                f"short of the {self.size} bytes HEAD said: the object changed "
                "during the download; re-run the date"
            ) from None
        with body:
            while position[0] <= end and not self.cancel.is_set():
                n = body.readinto(buffer[: end - position[0] + 1])
                if n == 0:
                    raise IncompleteReadError(actual_bytes=position[0], expected_bytes=end + 1)
                os.pwrite(self.fd, buffer[:n], position[0])
                position[0] += n
                self.progress.add(n)


def download(
    client,
    dump: DumpObject,
    dest: Path,
    report: Report | None = None,
    expected: list[Expected] = (),
) -> dict[str, str]:
    """The dump, all `size_bytes` of it (HEAD's size), to `dest`, checked against `expected`;
    returns the digests computed ({algorithm: hex}: the expected ones and always the SHA-256). With `report`, progress lines (bytes of the
    total, rate) every quarter of the dump and every 10 s, from this thread."""
    bucket, key, size = dump.bucket, dump.key, dump.size_bytes
    progress = Progress(f"downloading {key}", size, report or (lambda line: None), step=0.25)
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    # the SHA-256 always: the run's evidence names the bytes it restored by it
    digests = _Digests(fd, size, {e.algorithm for e in expected} | {"sha256"})
    try:
        os.ftruncate(fd, size)  # the threads fill in a file of its final size
        parts = _Parts(client, bucket, key, size, fd, progress, digests.part_done)
        with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="download") as pool:
            futures = [
                pool.submit(parts.fetch, start, min(start + PART, size) - 1)
                for start in range(0, size, PART)
            ]
            try:
                progress.watch(futures)  # raises the first error, as the client raised it
            except BaseException:
                parts.cancel.set()
                raise
        computed = digests.result()
    finally:
        digests.stop(abandon=True)  # joined before the file is closed under it
        os.close(fd)
    if progress.done != size:
        raise DownloadError(
            f"downloaded {progress.done} bytes of s3://{bucket}/{key} but HEAD "
            f"said {size}: the object changed or the transfer was cut; re-run "
            "the date"
        )
    for want in expected:
        got = computed.get(want.algorithm)
        if got != want.hex.lower():
            raise IntegrityError(
                f"s3://{bucket}/{key} from the {dump.endpoint} endpoint: its {want.algorithm} "
                f"is {got}, {want.source} says {want.hex}: the bytes were damaged in transfer",
                want,
                computed,
            )
    return computed
