"""A loopback TCP proxy in front of an S3 server that damages the dump's transfers.

Only the responses to ranged GETs (the download's parts) are touched: listing and HEAD pass, as
they would through a flaky link that fails long transfers. `cut` closes the connection once a
ranged response has sent `after` bytes; `flip` inverts its byte at `after` (a damaged transfer
the size cannot catch). `times` limits how many responses are damaged (None: every one).
"""

from __future__ import annotations

import contextlib
import socket
import threading

from busflow_verify_tests.pgproxy import LoopbackListener


class FaultyProxy(LoopbackListener):
    def __init__(self, backend_port: int, mode: str, after: int = 2000, times: int | None = None):
        assert mode in ("cut", "flip")
        self.backend_port, self.mode, self.after, self.times = backend_port, mode, after, times
        self.damaged = 0
        self._guard = threading.Lock()
        super().__init__()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.backend_port))
        except OSError:
            client.close()
            return
        state = {"ranged": None}  # bytes of the current ranged response sent so far, or None
        threading.Thread(target=self._requests, args=(client, upstream, state), daemon=True).start()
        self._responses(upstream, client, state)

    def _requests(self, client, upstream, state) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                if b"\r\nrange: bytes=" in chunk.lower() and self._take():
                    state["ranged"] = 0  # set before the request goes on: its response follows
                else:
                    state["ranged"] = None
                upstream.sendall(chunk)
        _close(client, upstream)

    def _take(self) -> bool:
        with self._guard:
            if self.times is not None and self.damaged >= self.times:
                return False
            self.damaged += 1
            return True

    def _responses(self, upstream, client, state) -> None:
        with contextlib.suppress(OSError):
            while chunk := upstream.recv(65536):
                sent = state["ranged"]
                if sent is not None and sent + len(chunk) > self.after:
                    cut_at = self.after - sent
                    if self.mode == "cut":
                        client.sendall(chunk[:cut_at])
                        break
                    chunk = chunk[:cut_at] + bytes([chunk[cut_at] ^ 0xFF]) + chunk[cut_at + 1 :]
                    state["ranged"] = None  # one byte per response
                elif sent is not None:
                    state["ranged"] = sent + len(chunk)
                client.sendall(chunk)
        _close(client, upstream)


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()
