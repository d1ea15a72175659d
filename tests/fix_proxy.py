"""A TCP proxy between irisflow and PostgreSQL that a test can cut and restore.

``await proxy.cut()`` resets every open connection and makes new ones fail (they are accepted
and reset at once, which libpq reports like a server that went away); ``proxy.restore()``
lets connections through again. ``proxy.dsn(dsn)`` rewrites a DSN to go through the proxy.

Fixture:
    pg_proxy: a started :class:`TcpProxy` in front of the test database server.
"""

from __future__ import annotations

import contextlib
import socket
import struct

import pytest
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def _reset(stream: trio.SocketStream) -> None:
    """Close ``stream`` with a TCP RST (SO_LINGER 0), like a dead peer or a firewall."""
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``target_host:target_port`` until cut."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.up = True
        self.accepted = 0
        self.refused = 0
        self._open: set[trio.CancelScope] = set()
        self._idle = trio.Event()
        self._idle.set()

    def dsn(self, dsn: str) -> str:
        """``dsn`` with host and port pointing at the proxy."""
        params = conninfo_to_dict(dsn)
        params.pop("hostaddr", None)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**params)

    @property
    def connections(self) -> int:
        """Connections currently forwarded."""
        return len(self._open)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def cut(self) -> None:
        """Reset every open connection and refuse new ones; returns once all are gone."""
        self.up = False
        for scope in list(self._open):
            scope.cancel()
        await self._idle.wait()

    def restore(self) -> None:
        """Forward new connections again."""
        self.up = True

    async def _handle(self, client: trio.SocketStream) -> None:
        if not self.up:
            self.refused += 1
            _reset(client)
            return
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            _reset(client)
            return
        self.accepted += 1
        with trio.CancelScope() as scope:
            self._open.add(scope)
            self._idle = trio.Event()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, server, scope)
                    nursery.start_soon(self._pump, server, client, scope)
            finally:
                _reset(client)
                _reset(server)
                self._open.discard(scope)
                if not self._open:
                    self._idle.set()

    @staticmethod
    async def _pump(
        src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side is gone: tear down both


@pytest.fixture
async def pg_proxy(nursery: trio.Nursery, db_dsn: str) -> TcpProxy:
    params = conninfo_to_dict(db_dsn)
    host = str(params.get("hostaddr") or params.get("host") or "127.0.0.1")
    if host.startswith("/"):
        pytest.skip("the TCP proxy needs PostgreSQL on TCP, not a Unix socket")
    proxy = TcpProxy(host, int(params.get("port") or 5432))
    await nursery.start(proxy.run)
    return proxy
