"""What the fake JSON websocket venues share: a real server on 127.0.0.1 with scripted faults.

A venue fake subclasses :class:`FakeVenueServer` and implements :meth:`~FakeVenueServer.on_open`
(the greeting), :meth:`~FakeVenueServer.on_message` (the control protocol) and, if the venue
pushes something periodically, :meth:`~FakeVenueServer.background`. The base class owns the
listening socket, the connections, the faults (drop, close with a code, stall, HTTP rejections)
and the observation helpers tests wait on. Like ``FakeBinance`` it accepts TCP itself and hands
each stream to ``trio_websocket.wrap_server_stream``, so that :meth:`drop_all` can cut a
connection without a close frame. All timing uses Trio's clock, so ``autojump_clock`` drives it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import orjson
import trio
import trio_websocket
from trio_websocket import WebSocketConnection, WebSocketRequest

from .._errors import UsageError

__all__ = ["FakeConnection", "FakeVenueServer"]

_HANDSHAKE_TIMEOUT = 10.0


@attrs.define(eq=False)
class FakeConnection:
    """One accepted client connection of a fake venue."""

    ws: WebSocketConnection
    stream: trio.abc.Stream
    path: str
    nursery: trio.Nursery
    state: dict[str, Any] = attrs.field(factory=dict)
    """Protocol state the venue fake keeps for this connection (subscriptions, counters)."""
    closing: bool = False
    closed: trio.Event = attrs.field(factory=trio.Event)
    done: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class FakeVenueServer:
    """Base of the fake websocket venues; see the module docstring.

    Attributes:
        requests: Every client text message that parsed as JSON, in arrival order.
        raw_requests: Every client text message as received.
        handshakes: The path of every websocket handshake, accepted or not.
        connections_total: Connections accepted so far.
        dropped_frames: Frames not sent because the server was stalled.
        close_timeout: Seconds to wait for a client's close frame before cutting TCP.
    """

    name: ClassVar[str] = "FakeVenue"

    close_timeout: float = 5.0
    requests: list[Any] = attrs.field(factory=list, init=False)
    raw_requests: list[str] = attrs.field(factory=list, init=False)
    handshakes: list[str] = attrs.field(factory=list, init=False)
    connections_total: int = attrs.field(default=0, init=False)
    dropped_frames: int = attrs.field(default=0, init=False)
    _url: str | None = attrs.field(default=None, init=False)
    _serving: bool = attrs.field(default=False, init=False)
    _stalled: bool = attrs.field(default=False, init=False)
    _rejections: collections.deque[int] = attrs.field(factory=collections.deque, init=False)
    _conns: dict[FakeConnection, None] = attrs.field(factory=dict, init=False, repr=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)

    # Hooks for the venue fakes.

    def check_path(self, path: str) -> str | None:
        """Return why ``path`` is refused (HTTP 404), or None to accept it."""
        return None

    async def on_open(self, conn: FakeConnection) -> None:
        """Greet a new connection (the venue's first message, if any)."""
        await trio.lowlevel.checkpoint()

    async def on_message(self, conn: FakeConnection, message: Any) -> None:
        """Answer one parsed client message."""
        await trio.lowlevel.checkpoint()

    async def on_invalid(self, conn: FakeConnection, text: str) -> None:
        """Answer a client message that is not JSON."""
        await trio.lowlevel.checkpoint()

    async def background(self, conn: FakeConnection) -> None:
        """Run alongside one connection until it closes (heartbeats, timers)."""
        await trio.lowlevel.checkpoint()

    # Serving.

    @property
    def url(self) -> str:
        """The base URL, e.g. ``ws://127.0.0.1:40123``.

        Raises:
            UsageError: the server has not been started.
        """
        if self._url is None:
            raise UsageError(
                f"{self.name}.url is not known yet: start the server first with"
                " `url = await nursery.start(fake.serve)`"
            )
        return self._url

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host``:``port`` (0 picks a free port) and serve until cancelled.

        Reports the base URL through ``task_status`` once it is listening.

        Raises:
            UsageError: this instance is already serving.
        """
        if self._serving:
            raise UsageError(f"this {self.name} is already serving at {self._url}")
        self._serving = True
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
            address, bound = listeners[0].socket.getsockname()[:2]
            shown = f"[{address}]" if ":" in address else address
            self._url = f"ws://{shown}:{bound}"
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle_tcp, listeners)
                task_status.started(self._url)
        finally:
            self._serving = False

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                request: WebSocketRequest | None = None
                with trio.move_on_after(_HANDSHAKE_TIMEOUT):
                    request = await trio_websocket.wrap_server_stream(nursery, stream)
                if request is not None:
                    await self._handle_request(request, stream)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _handle_request(self, request: WebSocketRequest, stream: trio.abc.Stream) -> None:
        self.handshakes.append(request.path)
        if self._rejections:
            status = self._rejections.popleft()
            body = f"rejected by {self.name}.reject_connections (HTTP {status})"
            await request.reject(status, body=body.encode())
            return
        refusal = self.check_path(request.path)
        if refusal is not None:
            await request.reject(404, body=refusal.encode())
            return
        ws = await request.accept()
        try:
            async with trio.open_nursery() as nursery:
                conn = FakeConnection(ws=ws, stream=stream, path=request.path, nursery=nursery)
                self._conns[conn] = None
                self.connections_total += 1
                self.notify()
                try:
                    nursery.start_soon(self.background, conn)
                    await self.on_open(conn)
                    await self._read(conn)
                    if conn.closing:  # let a close the fake started finish its handshake
                        await conn.closed.wait()
                finally:
                    del self._conns[conn]
                    self.notify()
                    conn.done.set()
                    nursery.cancel_scope.cancel()
        except trio_websocket.ConnectionClosed:
            pass  # the client went away while the fake was talking

    async def _read(self, conn: FakeConnection) -> None:
        while True:
            try:
                message = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            self.raw_requests.append(text)
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                await self.on_invalid(conn, text)
                continue
            self.requests.append(parsed)
            self.notify()
            await self.on_message(conn, parsed)

    # Sending.

    async def send(self, conn: FakeConnection, text: str | bytes, *, force: bool = False) -> bool:
        """Send one text frame (``bytes`` are sent as UTF-8 text); False if not sent."""
        if self._stalled and not force:
            self.dropped_frames += 1
            await trio.lowlevel.checkpoint()
            return False
        message = text.decode() if isinstance(text, bytes) else text
        try:
            await conn.ws.send_message(message)
        except (
            trio_websocket.ConnectionClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            return False
        return True

    async def send_raw(self, text: str | bytes) -> int:
        """Send ``text`` exactly as given to every connection; how many it went to."""
        sent = 0
        for conn in list(self._conns):
            sent += await self.send(conn, text)
        await trio.lowlevel.checkpoint()
        return sent

    async def close(self, conn: FakeConnection, code: int, reason: str = "") -> None:
        """Close ``conn`` with a close frame; cut TCP if the client does not answer in time."""
        if conn.closing:
            await conn.closed.wait()
            return
        conn.closing = True
        try:
            with trio.move_on_after(self.close_timeout):
                await conn.ws.aclose(code, reason)
        finally:
            conn.closed.set()
            with trio.CancelScope(shield=True):
                await conn.stream.aclose()

    # Faults.

    async def drop_all(self) -> int:
        """Cut every connection's TCP stream without a close frame (clients see 1006).

        Returns once the connections are gone; how many there were.
        """
        conns = list(self._conns)
        for conn in conns:
            await conn.stream.aclose()
        for conn in conns:
            await conn.done.wait()
        await trio.lowlevel.checkpoint()
        return len(conns)

    async def close_all(self, code: int = 1000, reason: str = "") -> int:
        """Close every connection with ``code`` and ``reason``; returns once they are gone."""
        conns = list(self._conns)

        async def close_and_forget(conn: FakeConnection) -> None:
            await self.close(conn, code, reason)
            await conn.done.wait()

        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(close_and_forget, conn)
        return len(conns)

    def stall(self) -> None:
        """Stop sending: every frame (data, replies, heartbeats) is dropped until unstalled."""
        self._stalled = True

    def unstall(self) -> None:
        """Resume sending after :meth:`stall`. Dropped frames stay dropped."""
        self._stalled = False

    @property
    def stalled(self) -> bool:
        """Whether the server is stalled."""
        return self._stalled

    def reject_connections(self, n: int, status: int = 503) -> None:
        """Refuse the next ``n`` websocket handshakes with HTTP ``status``.

        Raises:
            UsageError: ``n`` is negative or ``status`` is not an HTTP error status.
        """
        if n < 0:
            raise UsageError(f"reject_connections needs n >= 0 (got {n})")
        if not 300 <= status <= 599:
            raise UsageError(f"reject_connections needs a status in 300..599 (got {status})")
        self._rejections.extend([status] * n)

    # Observing.

    @property
    def connections(self) -> list[FakeConnection]:
        """The open connections, oldest first."""
        return list(self._conns)

    @property
    def connection_count(self) -> int:
        """How many connections are open now."""
        return len(self._conns)

    def notify(self) -> None:
        """Wake everything waiting in :meth:`wait_until` (call after a state change)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds (checked whenever the fake's state changes)."""
        await trio.lowlevel.checkpoint()
        while not condition():
            await self._changed.wait()

    async def wait_connections(self, n: int) -> None:
        """Wait until at least ``n`` connections are open."""
        await self.wait_until(lambda: len(self._conns) >= n)

    async def wait_idle(self) -> None:
        """Wait until no connection is open."""
        await self.wait_until(lambda: not self._conns)

    async def wait_requests(self, n: int) -> None:
        """Wait until at least ``n`` JSON client messages arrived (all connections)."""
        await self.wait_until(lambda: len(self.requests) >= n)
