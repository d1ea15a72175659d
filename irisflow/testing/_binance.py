"""A fake Binance Spot market-stream server: a real websocket server on 127.0.0.1 for tests.

It speaks the protocol of ``venues.md`` section 1: the ``/ws`` and ``/stream`` URL forms, the
five control methods with Binance's replies and error codes, the ``combined`` property, the
limits (5 incoming messages per second, 1024 streams per connection), ping frames with a
pong deadline, and the ``serverShutdown`` event. Tests publish events, inject faults and look
at what clients did::

    fake = FakeBinance()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)
        ...  # connect a client to url + "/stream"
        await fake.wait_subscribed("btcusdt@trade")
        await fake.publish("btcusdt@trade", trade("BTCUSDT", ...))
        await fake.drop_all()
        nursery.cancel_scope.cancel()

It runs on trio-websocket, but accepts TCP itself (``trio.serve_listeners``) and hands each
stream to ``trio_websocket.wrap_server_stream`` through a thin wrapper, rather than using
``serve_websocket``, because it needs the raw stream: to see client pings and pongs (which
count toward the rate limit but never surface through trio-websocket's API), to cut a TCP
connection without a close frame, and to send several frames in one TCP write.

All timing uses Trio's clock, so ``autojump_clock`` and ``MockClock`` drive it.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import trio
import trio_websocket
from trio_websocket import WebSocketConnection, WebSocketRequest

from .._errors import UsageError
from ._binance_frames import server_shutdown
from ._binance_protocol import (
    Accepted,
    FrameScanner,
    RateLimiter,
    Subscriptions,
    handle_control,
    parse_target,
)

__all__ = ["FakeBinance"]

_HANDSHAKE_TIMEOUT = 10.0
"""Seconds a client gets to send its HTTP upgrade request."""

_SHUTDOWN_STREAM = "!serverShutdown"


class _TapStream(trio.abc.Stream):
    """The TCP stream under one websocket, watched by the fake.

    Reads feed a :class:`FrameScanner` that reports each client frame to ``on_frame``.
    Writes can be corked, so that several websocket frames leave in one TCP write.
    """

    def __init__(self, transport: trio.SocketStream) -> None:
        self.transport = transport
        self._on_frame: Callable[[int, bytes], None] | None = None
        self._early: list[tuple[int, bytes]] = []
        self._scanner = FrameScanner()
        self._send_lock = trio.StrictFIFOLock()
        self._cork: bytearray | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._cork is not None:
            self._cork += data
            await trio.lowlevel.checkpoint()
            return
        async with self._send_lock:
            await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.transport.receive_some(max_bytes)
        for opcode, payload in self._scanner.feed(data):
            if self._on_frame is None:
                self._early.append((opcode, payload))
            else:
                self._on_frame(opcode, payload)
        return data

    def watch(self, on_frame: Callable[[int, bytes], None]) -> None:
        """Call ``on_frame(opcode, payload)`` for each client frame, including earlier ones."""
        self._on_frame = on_frame
        early, self._early = self._early, []
        for opcode, payload in early:
            on_frame(opcode, payload)

    async def aclose(self) -> None:
        await self.transport.aclose()

    @asynccontextmanager
    async def corked(self) -> AsyncIterator[None]:
        """Hold every write made inside the block, then send them as one TCP write."""
        self._cork = bytearray()
        try:
            yield
        finally:
            data, self._cork = bytes(self._cork), None
            if data:
                async with self._send_lock:
                    await self.transport.send_all(data)


@attrs.define(eq=False)
class _Connection:
    """One accepted client connection."""

    ws: WebSocketConnection
    tap: _TapStream
    state: Subscriptions
    limiter: RateLimiter
    over_limit: trio.Event = attrs.field(factory=trio.Event)
    """Set once the client went over the message rate limit."""
    closing: bool = False
    """True once the fake started closing it (then ``closed`` will be set)."""
    closed: trio.Event = attrs.field(factory=trio.Event)
    """Set when a close the fake started has finished."""
    done: trio.Event = attrs.field(factory=trio.Event)
    """Set when the connection is gone and forgotten."""


def _encode(payload: object) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload).decode()
    return orjson.dumps(payload).decode()


def _check_close(code: int, reason: str) -> None:
    # RFC 6455 section 7.4: 1004-1006 and 1015 never go on the wire; below 1000 is unused.
    sendable = code in range(1000, 1004) or code in range(1007, 1015) or code in range(3000, 5000)
    if not sendable:
        raise UsageError(
            f"close code {code} cannot be sent in a close frame: use 1000-1003, 1007-1014 or"
            " 3000-4999 (drop_all() gives clients a 1006)"
        )
    if len(reason.encode()) > 123:
        raise UsageError(f"close reason is {len(reason.encode())} bytes; at most 123 fit")


def _wrap(stream: str, text: str) -> str:
    # Wrapping the text, not the object, keeps a raw payload exactly as given.
    return '{"stream":' + orjson.dumps(stream).decode() + ',"data":' + text + "}"


@attrs.define(eq=False)
class FakeBinance:
    """A fake Binance Spot market-stream server for tests.

    Start it with ``url = await nursery.start(fake.serve)``; clients connect to
    ``url + "/stream"``, ``url + "/ws"``, ``url + "/stream?streams=a/b"`` or
    ``url + "/ws/<stream>"``.

    Choices where Binance documents nothing:

    - A bad path gets HTTP 404; a bad stream name, too many streams or a bad ``timeUnit`` in
      the URL gets HTTP 400. ``timeUnit`` is accepted but not applied: payloads go out as
      given.
    - A bad stream name in SUBSCRIBE/UNSUBSCRIBE gets error code 2 naming the stream, as does
      going over ``max_streams``; the whole request is then refused.
    - Going over the rate limit closes the connection with code 1008, reason
      ``"too many messages"``; messages past the limit are not answered.
    - A client that does not pong within ``pong_timeout`` has its TCP connection cut without
      a close frame (the client sees 1006). Ping payloads are ``b"1"``, ``b"2"``, ...
    - While stalled (:meth:`stall`) nothing the fake sends of its own accord goes out:
      published frames and control replies are **dropped** (counted in ``dropped_frames``)
      and no pings are sent. trio-websocket still answers client pings. The faults
      (:meth:`drop_all`, :meth:`close_all`, :meth:`send_server_shutdown`) act regardless.
    - After ``serverShutdown`` the connection is closed with code 1001.

    Attributes:
        ping_interval: Seconds between the server's ping frames (Binance: 20).
        pong_timeout: Seconds a client has to answer a ping (Binance: 60).
        max_messages_per_second: Incoming messages (text, binary, ping and pong frames)
            allowed per connection in any one-second window (Binance: 5).
        max_streams: Most streams per connection (Binance: 1024).
        close_timeout: Seconds to wait for a client's close frame before cutting TCP.
        requests: Every control message that parsed as JSON, in arrival order.
        handshakes: The path (with query) of every handshake, accepted or not, in order.
        pongs: Payloads of every pong frame received, solicited or not, in order.
        connections_total: Connections accepted so far.
        rate_limit_closes: Connections closed for going over the message rate limit.
        pong_timeouts: Connections dropped for not answering a ping in time.
        dropped_frames: Frames not sent because the server was stalled.
    """

    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    max_messages_per_second: int = 5
    max_streams: int = 1024
    close_timeout: float = 5.0
    requests: list[Any] = attrs.field(factory=list, init=False)
    handshakes: list[str] = attrs.field(factory=list, init=False)
    pongs: list[bytes] = attrs.field(factory=list, init=False)
    connections_total: int = attrs.field(default=0, init=False)
    rate_limit_closes: int = attrs.field(default=0, init=False)
    pong_timeouts: int = attrs.field(default=0, init=False)
    dropped_frames: int = attrs.field(default=0, init=False)
    _url: str | None = attrs.field(default=None, init=False)
    _serving: bool = attrs.field(default=False, init=False)
    _stalled: bool = attrs.field(default=False, init=False)
    _rejections: collections.deque[int] = attrs.field(factory=collections.deque, init=False)
    _conns: dict[_Connection, None] = attrs.field(factory=dict, init=False, repr=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)

    # Serving.

    @property
    def url(self) -> str:
        """The base URL, e.g. ``ws://127.0.0.1:40123``; append ``/ws`` or ``/stream``.

        Raises:
            UsageError: the server has not been started.
        """
        if self._url is None:
            raise UsageError(
                "FakeBinance.url is not known yet: start the server first with"
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
            raise UsageError(
                f"this FakeBinance is already serving at {self._url}; create another one"
            )
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
        tap = _TapStream(stream)
        try:
            async with trio.open_nursery() as nursery:
                request: WebSocketRequest | None = None
                with trio.move_on_after(_HANDSHAKE_TIMEOUT):
                    request = await trio_websocket.wrap_server_stream(nursery, tap)
                if request is not None:
                    await self._handle_request(request, tap)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await tap.aclose()

    async def _handle_request(self, request: WebSocketRequest, tap: _TapStream) -> None:
        self.handshakes.append(request.path)
        target = parse_target(request.path, max_streams=self.max_streams)
        try:
            if self._rejections:
                status = self._rejections.popleft()
                body = f"rejected by FakeBinance.reject_connections (HTTP {status})"
                await request.reject(status, body=body.encode())
                return
            if not isinstance(target, Accepted):
                await request.reject(target.status, body=target.body.encode())
                return
            ws = await request.accept()
        except trio_websocket.ConnectionClosed:  # the client left mid-handshake
            return
        conn = _Connection(
            ws=ws,
            tap=tap,
            state=Subscriptions(
                combined=target.combined,
                streams=dict.fromkeys(target.streams),
                max_streams=self.max_streams,
            ),
            limiter=RateLimiter(self.max_messages_per_second),
        )
        tap.watch(lambda opcode, payload: self._on_frame(conn, opcode, payload))
        self._conns[conn] = None
        self.connections_total += 1
        self._notify()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keepalive, conn, nursery)
                nursery.start_soon(self._enforce_rate_limit, conn)
                await self._read_requests(conn)
                if conn.closing:  # let a close the fake started finish its handshake
                    await conn.closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            del self._conns[conn]
            self._notify()
            conn.done.set()

    def _on_frame(self, conn: _Connection, opcode: int, payload: bytes) -> None:
        if opcode == 8:  # close frames do not count
            return
        if opcode == 10:
            self.pongs.append(payload)
        if conn.limiter.hit(trio.current_time()):
            conn.over_limit.set()

    async def _read_requests(self, conn: _Connection) -> None:
        while True:
            try:
                message = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            if conn.over_limit.is_set():
                continue
            outcome = handle_control(conn.state, message)
            if outcome.parsed:
                self.requests.append(outcome.request)
            if outcome.changed:
                self._notify()
            await self._send(conn, orjson.dumps(outcome.reply).decode())

    async def _keepalive(self, conn: _Connection, nursery: trio.Nursery) -> None:
        count = 0
        while True:
            await trio.sleep(self.ping_interval)
            if not self._stalled:
                count += 1
                nursery.start_soon(self._ping, conn, str(count).encode())

    async def _ping(self, conn: _Connection, payload: bytes) -> None:
        with trio.move_on_after(self.pong_timeout):
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await conn.ws.ping(payload)
            return
        self.pong_timeouts += 1
        await conn.tap.aclose()

    async def _enforce_rate_limit(self, conn: _Connection) -> None:
        await conn.over_limit.wait()
        self.rate_limit_closes += 1
        await self._close(conn, 1008, "too many messages")

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        if conn.closing:
            await conn.closed.wait()
            return
        conn.closing = True
        try:
            with trio.move_on_after(self.close_timeout):
                await conn.ws.aclose(code, reason)
        finally:
            conn.closed.set()
            with trio.CancelScope(shield=True):  # cut TCP if the client never answered
                await conn.tap.aclose()

    async def _send(self, conn: _Connection, message: str | bytes, *, force: bool = False) -> bool:
        if self._stalled and not force:
            self.dropped_frames += 1
            await trio.lowlevel.checkpoint()
            return False
        try:
            await conn.ws.send_message(message)
        except trio_websocket.ConnectionClosed:
            return False
        return True

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # Publishing.

    async def publish(self, stream: str, payload: object) -> int:
        """Send one event to every connection subscribed to ``stream``.

        Args:
            stream: The stream name, e.g. ``"btcusdt@trade"``.
            payload: The event: a JSON-serialisable object (sent as compact JSON), or text
                (``str``, or UTF-8 ``bytes``) sent exactly as given. Connections with
                ``combined`` on get it wrapped as ``{"stream":..,"data":..}``.

        Returns:
            How many connections it was sent to (0 while stalled).
        """
        text = _encode(payload)
        targets = [conn for conn in self._conns if stream in conn.state.streams]
        sent = 0
        for conn in targets:
            message = _wrap(stream, text) if conn.state.combined else text
            sent += await self._send(conn, message)
        if not targets:
            await trio.lowlevel.checkpoint()
        return sent

    async def publish_many(self, events: Iterable[tuple[str, object]]) -> int:
        """Send several events; each connection gets all of its own in one TCP write.

        Args:
            events: ``(stream, payload)`` pairs, as for :meth:`publish`, in sending order.

        Returns:
            How many (event, connection) deliveries were made.
        """
        encoded = [(stream, _encode(payload)) for stream, payload in events]
        sent = 0
        for conn in list(self._conns):
            messages = [
                _wrap(stream, text) if conn.state.combined else text
                for stream, text in encoded
                if stream in conn.state.streams
            ]
            if not messages:
                continue
            if self._stalled:
                self.dropped_frames += len(messages)
                continue
            delivered = 0
            try:
                async with conn.tap.corked():
                    for message in messages:
                        delivered += await self._send(conn, message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                delivered = 0
            sent += delivered
        await trio.lowlevel.checkpoint()
        return sent

    async def send_raw(self, message: str | bytes) -> int:
        """Send ``message`` to every connection, whatever it subscribed to, unwrapped.

        A ``str`` goes as a text frame, ``bytes`` as a binary frame. For malformed or unknown
        frames.

        Returns:
            How many connections it was sent to (0 while stalled).
        """
        sent = 0
        for conn in list(self._conns):
            sent += await self._send(conn, message)
        await trio.lowlevel.checkpoint()
        return sent

    # Faults.

    async def drop_all(self) -> int:
        """Cut every connection's TCP stream without a close frame (clients see 1006).

        Returns once the connections are gone; how many there were.
        """
        conns = list(self._conns)
        for conn in conns:
            await conn.tap.aclose()
        for conn in conns:
            await conn.done.wait()
        await trio.lowlevel.checkpoint()
        return len(conns)

    async def close_all(self, code: int = 1000, reason: str = "") -> int:
        """Close every connection with a close frame carrying ``code`` and ``reason``.

        Returns once the connections are gone; how many there were.

        Raises:
            UsageError: ``code`` may not be sent in a close frame, or ``reason`` is too long.
        """
        _check_close(code, reason)
        conns = list(self._conns)
        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(self._close_and_forget, conn, code, reason)
        return len(conns)

    async def send_server_shutdown(
        self, *, time_ms: int | None = None, code: int = 1001, reason: str = "server shutdown"
    ) -> int:
        """Send the ``serverShutdown`` event to every connection, then close them.

        Raw connections get ``{"e":"serverShutdown","E":..}``; combined ones get it wrapped
        with ``"stream":"!serverShutdown"``. Sent even while stalled.

        Args:
            time_ms: The event time ``E``; defaults to the wall clock.
            code: Close code sent after the event.
            reason: Close reason sent after the event.

        Returns:
            How many connections were told.

        Raises:
            UsageError: ``code`` may not be sent in a close frame, or ``reason`` is too long.
        """
        _check_close(code, reason)
        text = orjson.dumps(
            server_shutdown(time.time_ns() // 1_000_000 if time_ms is None else time_ms)
        ).decode()
        conns = list(self._conns)

        async def tell(conn: _Connection) -> None:
            message = _wrap(_SHUTDOWN_STREAM, text) if conn.state.combined else text
            await self._send(conn, message, force=True)
            await self._close_and_forget(conn, code, reason)

        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(tell, conn)
        return len(conns)

    async def _close_and_forget(self, conn: _Connection, code: int, reason: str) -> None:
        await self._close(conn, code, reason)
        await conn.done.wait()

    def stall(self) -> None:
        """Stop sending: frames and replies are dropped and no pings go out until unstalled."""
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
    def connection_count(self) -> int:
        """How many connections are open now."""
        return len(self._conns)

    def subscriptions(self) -> set[str]:
        """Every stream some open connection is subscribed to."""
        return {stream for conn in self._conns for stream in conn.state.streams}

    def subscribers(self, stream: str) -> int:
        """How many open connections are subscribed to ``stream``."""
        return sum(stream in conn.state.streams for conn in self._conns)

    async def wait_subscribed(self, stream: str, connections: int = 1) -> None:
        """Wait until at least ``connections`` open connections are subscribed to ``stream``."""
        await trio.lowlevel.checkpoint()
        while self.subscribers(stream) < connections:
            await self._changed.wait()

    async def wait_connections(self, n: int) -> None:
        """Wait until at least ``n`` connections are open."""
        await trio.lowlevel.checkpoint()
        while self.connection_count < n:
            await self._changed.wait()

    async def wait_idle(self) -> None:
        """Wait until no connection is open (the fake has finished with every one)."""
        await trio.lowlevel.checkpoint()
        while self._conns:
            await self._changed.wait()
