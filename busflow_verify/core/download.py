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
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from botocore.exceptions import (
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from busflow_verify.core.progress import Progress, Report
from busflow_verify.core.store import DumpObject

PART = 64 * 1024 * 1024
CONCURRENCY = 4
BUFFER = 1024 * 1024
ATTEMPTS = 5
_CUT = (IncompleteReadError, ReadTimeoutError, ResponseStreamingError, ConnectionError)


class DownloadError(RuntimeError):
    pass


class _Parts:
    """The parts of one object, fetched by the pool's threads into one open file."""

    def __init__(self, client, bucket: str, key: str, size: int, fd: int, progress: Progress):
        self.client, self.bucket, self.key, self.size, self.fd = client, bucket, key, size, fd
        self.progress = progress
        self.cancel = threading.Event()

    def fetch(self, start: int, end: int) -> None:
        position = [start]  # the next byte to fetch, kept when a cut-off GET is resumed
        buffer = memoryview(bytearray(BUFFER))
        for _attempt in range(ATTEMPTS):
            try:
                self._read(position, end, buffer)
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


def download(client, dump: DumpObject, dest: Path, report: Report | None = None) -> Path:
    """The dump, all `size_bytes` of it (HEAD's size), to `dest`. With `report`, progress lines
    (bytes of the total, rate) every quarter of the dump and every 10 s, from this thread."""
    bucket, key, size = dump.bucket, dump.key, dump.size_bytes
    progress = Progress(f"downloading {key}", size, report or (lambda line: None), step=0.25)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)  # the threads fill in a file of its final size
        parts = _Parts(client, bucket, key, size, fd, progress)
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
    finally:
        os.close(fd)
    if progress.done != size:
        raise DownloadError(
            f"downloaded {progress.done} bytes of s3://{bucket}/{key} but HEAD "
            f"said {size}: the object changed or the transfer was cut; re-run "
            "the date"
        )
    return dest
