"""A loopback TCP port forwarded to a disposable cluster's Unix socket.

What Docker's port publishing does for a container (docker-proxy): the disposable clusters listen
on a socket only, so a test that needs PostgreSQL over TCP (a published container port, Dagster's
storage URL) puts this in front. Until `backend` is set, connections are closed at once, as a
published port does while the server in the container is still starting.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class LoopbackListener:
    """A loopback TCP port whose every connection goes to `handle`, in a thread of its own."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(client,), daemon=True).start()

    def handle(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()


class SocketProxy(LoopbackListener):
    def __init__(self, backend: str | None = None):
        self.backend = backend  # path of the server's socket, .s.PGSQL.<port>
        super().__init__()

    @staticmethod
    def socket_of(pg) -> str:
        """The Unix socket of a DisposablePostgres."""
        return f"{pg.root}/.s.PGSQL.{pg.port}"

    def handle(self, client: socket.socket) -> None:
        if self.backend is None:
            client.close()
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.backend)
        except OSError:
            client.close()
            return
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
