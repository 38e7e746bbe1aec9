"""Progress lines for the long steps (download, row counts), throttled.

Each line becomes a Dagster log event (a database write), so a step reports when another
`step` share of the work is done or `seconds` have passed since its last line, never per chunk
or per table. `report` is any callable taking one line (the Dagster layer passes
`context.log.info`); core stays free of Dagster. Work done by threads is counted from them and
reported from the thread that waits for them (`watch`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

Report = Callable[[str], None]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class Progress:
    """Counts done units of a known total (thread-safe) and says when a line is due."""

    def __init__(
        self,
        what: str,
        total: int,
        report: Report,
        *,
        unit: str = "bytes",
        step: float = 0.10,
        seconds: float = 10.0,
        clock=time.monotonic,
    ):
        self.what, self.total, self.report, self.unit = what, max(total, 0), report, unit
        self.step, self.seconds, self.clock = step, seconds, clock
        self.done = 0
        self.started = self.clock()
        self._reported_at, self._reported_done = self.started, 0
        self._lock = threading.Lock()
        self.wake = threading.Event()  # set when a line is due or a watched future ended

    def add(self, n: int) -> None:
        """Count `n` more units (from any thread)."""
        with self._lock:
            before = self.done
            self.done += n
            if self._steps(self.done) > self._steps(before):
                self.wake.set()

    def watch(self, futures: list[Future]) -> None:
        """Report from this thread while worker threads do the work, until every future is
        done; then raise the first one's error, if any. Lines come from the caller's thread
        only, however many workers count."""
        for future in futures:
            future.add_done_callback(lambda _: self.wake.set())
        while not all(f.done() for f in futures):
            self.maybe_report()
            self.wake.wait(self.seconds)
            self.wake.clear()
        for future in futures:
            future.result()
        self.maybe_report()

    def _steps(self, done: int) -> int:
        return int(done / self.total / self.step) if self.total else 0

    def due(self) -> bool:
        """Another step done, the end reached, or `seconds` without a line (a stall shows)."""
        with self._lock:
            if self._reported_done >= self.total:
                return False  # the last line was said
            finished = self.done >= self.total
            crossed = self._steps(self.done) > self._steps(self._reported_done)
            return finished or crossed or self.clock() - self._reported_at >= self.seconds

    def maybe_report(self) -> None:
        if not self.due():
            return
        with self._lock:
            done, now = self.done, self.clock()
            self._reported_at, self._reported_done = now, done
        self.report(self.line(done, now))

    def line(self, done: int, now: float) -> str:
        share = f"{done / self.total:.0%}" if self.total else "100%"
        if self.unit != "bytes":
            return f"{self.what}: {done:,} of {self.total:,} {self.unit} ({share})"
        rate = done / max(now - self.started, 1e-9)
        return (
            f"{self.what}: {human_bytes(done)} of {human_bytes(self.total)} ({share}), "
            f"{human_bytes(rate)}/s"
        )
