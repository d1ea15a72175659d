"""What the fake JSON websocket venues share: a real server on 127.0.0.1 with scripted faults.

A venue fake subclasses :class:`FakeVenueServer` and implements :meth:`~FakeVenueServer.on_open`
(the greeting), :meth:`~FakeVenueServer.on_message` (the control protocol) and, if the venue
pushes something periodically, :meth:`~FakeVenueServer.background`. A fake that needs more
overrides :meth:`~FakeVenueServer.check_path` (refuse handshakes, with any HTTP status),
:meth:`~FakeVenueServer.check_accepted` (close a websocket as soon as it is accepted),
:meth:`~FakeVenueServer.init_connection` (per-connection state, before anything else happens),
:meth:`~FakeVenueServer.on_frame` (every frame the client sends, pings and pongs included) or
:meth:`~FakeVenueServer.on_receive` (whole messages, before any JSON parsing). The base class
owns the listening socket, the connections, the faults (drop, close with a code, stall, HTTP
rejections) and the observation helpers tests wait on.

It runs on trio-websocket, but accepts TCP itself (``trio.serve_listeners``) and hands each
stream to ``trio_websocket.wrap_server_stream`` through a thin wrapper, rather than using
``serve_websocket``, because it needs the raw stream: to see client pings and pongs (which
trio-websocket answers or swallows itself), to cut a TCP connection without a close frame
(:meth:`~FakeVenueServer.drop_all`), and to send several frames in one TCP write
(:meth:`~FakeVenueServer.send_many`). All timing uses Trio's clock, so ``autojump_clock``
drives it.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import attrs
import orjson
import trio
import trio_websocket
from trio_websocket import WebSocketConnection, WebSocketRequest

from .._errors import UsageError

__all__ = ["FakeConnection", "FakeVenueServer", "FrameScanner", "check_close"]

_HANDSHAKE_TIMEOUT = 10.0
"""Seconds a client gets to send its HTTP upgrade request."""


def check_close(code: int, reason: str) -> None:
    """Refuse a close code or reason that cannot go in a close frame.

    Raises:
        UsageError: ``code`` is not sendable (RFC 6455 section 7.4), or ``reason`` is over
            123 bytes.
    """
    # 1004-1006 and 1015 never go on the wire; below 1000 is unused.
    sendable = code in range(1000, 1004) or code in range(1007, 1015) or code in range(3000, 5000)
    if not sendable:
        raise UsageError(
            f"close code {code} cannot be sent in a close frame: use 1000-1003, 1007-1014 or"
            " 3000-4999 (drop_all() gives clients a 1006)"
        )
    if len(reason.encode()) > 123:
        raise UsageError(f"close reason is {len(reason.encode())} bytes; at most 123 fit")


class FrameScanner:
    """Finds the websocket frames in the bytes a client sends, without decoding messages.

    Feed it everything read from the socket, HTTP handshake included. It reports the first
    frame of each message (opcodes 1 and 2) and every control frame (8 close, 9 ping,
    10 pong), the latter with its unmasked payload. trio-websocket answers pings and
    swallows pongs itself; this is how a fake still sees them. Sans-IO: it only parses bytes.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_handshake = True
        self._skip = 0
        self._broken = False

    def feed(self, data: bytes | bytearray) -> list[tuple[int, bytes]]:
        """Add received bytes; returns ``(opcode, payload)`` for each frame they complete.

        Data frames are reported as soon as their header is complete, with an empty payload.
        """
        frames: list[tuple[int, bytes]] = []
        if self._broken:
            return frames
        buf = self._buf
        buf += data
        if self._in_handshake:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return frames
            del buf[: end + 4]
            self._in_handshake = False
        while True:
            if self._skip:
                n = min(self._skip, len(buf))
                del buf[:n]
                self._skip -= n
                if self._skip:
                    return frames
            header = self._header(buf)
            if header is None:
                return frames
            opcode, start, length, mask = header
            if opcode >= 8:
                if len(buf) < start + length:
                    return frames
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[start : start + length]))
                del buf[: start + length]
                frames.append((opcode, payload))
            else:
                del buf[:start]
                self._skip = length
                if opcode in (1, 2):
                    frames.append((opcode, b""))
                elif opcode != 0:  # reserved opcode: the peer is confused; stop scanning
                    self._broken = True
                    return frames

    @staticmethod
    def _header(buf: bytearray) -> tuple[int, int, int, bytes] | None:
        """Parse a frame header: (opcode, payload start, payload length, mask key)."""
        if len(buf) < 2:
            return None
        opcode, masked, length, pos = buf[0] & 0x0F, buf[1] & 0x80, buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = int.from_bytes(buf[2:10], "big"), 10
        mask = b"\x00\x00\x00\x00"
        if masked:
            if len(buf) < pos + 4:
                return None
            mask, pos = bytes(buf[pos : pos + 4]), pos + 4
        return opcode, pos, length, mask


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
class FakeConnection:
    """One accepted client connection of a fake venue."""

    ws: WebSocketConnection
    stream: _TapStream
    """The TCP stream under ``ws``; closing it cuts the connection without a close frame."""
    path: str
    nursery: trio.Nursery
    """Runs :meth:`FakeVenueServer.background` and any task the fake starts for this connection."""
    state: dict[str, Any] = attrs.field(factory=dict)
    """Protocol state the venue fake keeps for this connection (subscriptions, counters)."""
    closing: bool = False
    """True once the fake started closing it (then ``closed`` will be set)."""
    closed: trio.Event = attrs.field(factory=trio.Event)
    """Set when a close the fake started has finished."""
    done: trio.Event = attrs.field(factory=trio.Event)
    """Set when the connection is gone and forgotten."""


def _as_text(message: str | bytes) -> str:
    return message if isinstance(message, str) else message.decode("utf-8", "replace")


@attrs.define(eq=False)
class FakeVenueServer:
    """Base of the fake websocket venues; see the module docstring.

    Attributes:
        requests: Every client text message that parsed as JSON, in arrival order.
        raw_requests: Every client message as received (binary ones decoded as UTF-8).
        handshakes: The path of every websocket handshake, accepted or not.
        connections_total: Connections accepted so far.
        dropped_frames: Frames not sent because the server was stalled.
        close_timeout: Seconds to wait for a client's close frame before cutting TCP.
    """

    name: ClassVar[str] = "FakeVenue"
    bytes_as_text: ClassVar[bool] = True
    """Whether :meth:`send` turns ``bytes`` into a UTF-8 text frame (else a binary frame)."""
    url_path: ClassVar[str] = ""
    """Appended to ``ws://host:port`` in :attr:`url` (e.g. ``"/v2"``)."""

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

    def check_path(self, path: str) -> str | tuple[int, str] | None:
        """Return why ``path`` (with its query) is refused, or None to accept it.

        A ``str`` is the body of an HTTP 404; ``(status, body)`` answers with another status.
        """
        return None

    def check_accepted(self, path: str) -> tuple[int, str] | None:
        """Return ``(code, reason)`` to close a just-accepted websocket at once, or None.

        For a venue that accepts the handshake and then refuses (a connection limit). A
        websocket closed here is not a connection: it is not counted and no other hook sees it.
        """
        return None

    def init_connection(self, conn: FakeConnection) -> None:
        """Set up ``conn.state`` for a new connection, before anything else happens on it.

        Runs before :meth:`on_frame` sees any of its frames and before :meth:`background` and
        :meth:`on_open` start.
        """

    def on_frame(self, conn: FakeConnection, opcode: int, payload: bytes) -> None:
        """Observe one frame the client sent, as soon as its bytes arrive.

        ``opcode`` is 1 or 2 for the first frame of a text or binary message (``payload`` is
        then empty), 8 for close, 9 for ping and 10 for pong (with their payloads).
        trio-websocket answers pings and swallows pongs itself: this is where a fake sees them.
        """

    async def on_open(self, conn: FakeConnection) -> None:
        """Greet a new connection (the venue's first message, if any)."""
        await trio.lowlevel.checkpoint()

    async def on_receive(self, conn: FakeConnection, message: str | bytes) -> None:
        """Handle one client message as received (``bytes`` for a binary message).

        The default parses it as JSON, records it in ``requests`` and hands it to
        :meth:`on_message`, or hands the text to :meth:`on_invalid` if it is not JSON.
        """
        text = _as_text(message)
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.on_invalid(conn, text)
            return
        self.requests.append(parsed)
        self.notify()
        await self.on_message(conn, parsed)

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
        """The base URL, e.g. ``ws://127.0.0.1:40123`` (then :attr:`url_path`).

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
            raise UsageError(
                f"this {self.name} is already serving at {self._url}; create another one"
            )
        self._serving = True
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
            address, bound = listeners[0].socket.getsockname()[:2]
            shown = f"[{address}]" if ":" in address else address
            self._url = f"ws://{shown}:{bound}{self.url_path}"
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
        try:
            if self._rejections:
                status = self._rejections.popleft()
                body = f"rejected by {self.name}.reject_connections (HTTP {status})"
                await request.reject(status, body=body.encode())
                return
            refusal = self.check_path(request.path)
            if refusal is not None:
                status, text = (404, refusal) if isinstance(refusal, str) else refusal
                await request.reject(status, body=text.encode())
                return
            ws = await request.accept()
        except trio_websocket.ConnectionClosed:  # the client left mid-handshake
            return
        refusal = self.check_accepted(request.path)
        if refusal is not None:
            with (
                trio.move_on_after(self.close_timeout),
                contextlib.suppress(trio_websocket.ConnectionClosed),
            ):
                await ws.aclose(*refusal)
            return
        try:
            async with trio.open_nursery() as nursery:
                conn = FakeConnection(ws=ws, stream=tap, path=request.path, nursery=nursery)
                self.init_connection(conn)
                tap.watch(lambda opcode, payload: self.on_frame(conn, opcode, payload))
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
            self.raw_requests.append(_as_text(message))
            await self.on_receive(conn, message)

    # Sending.

    async def send(
        self, conn: FakeConnection, message: str | bytes, *, force: bool = False
    ) -> bool:
        """Send one frame to ``conn``; False if it was not sent (stalled, or connection gone).

        A ``str`` goes as a text frame; ``bytes`` as UTF-8 text, or as a binary frame where
        :attr:`bytes_as_text` is False. ``force`` sends even while stalled.
        """
        if self._stalled and not force:
            self.dropped_frames += 1
            await trio.lowlevel.checkpoint()
            return False
        if isinstance(message, bytes) and self.bytes_as_text:
            message = message.decode()
        try:
            await conn.ws.send_message(message)
        except (
            trio_websocket.ConnectionClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            return False
        return True

    async def send_many(self, conn: FakeConnection, messages: Sequence[str | bytes]) -> int:
        """Send several frames to ``conn``, in order and in one TCP write; how many were sent.

        While stalled none is sent (each counts in ``dropped_frames``); if the write fails,
        none counts as sent.
        """
        if self._stalled:
            self.dropped_frames += len(messages)
            await trio.lowlevel.checkpoint()
            return 0
        sent = 0
        try:
            async with conn.stream.corked():
                for message in messages:
                    sent += await self.send(conn, message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return 0
        return sent

    async def send_raw(self, message: str | bytes) -> int:
        """Send ``message`` exactly as given to every connection (for malformed or unexpected
        frames); ``bytes`` go as :meth:`send` says.

        Returns:
            How many connections it was sent to (0 while stalled).
        """
        sent = 0
        for conn in list(self._conns):
            sent += await self.send(conn, message)
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

    async def close_all(
        self,
        code: int = 1000,
        reason: str = "",
        *,
        farewell: Callable[[FakeConnection], str | bytes] | None = None,
    ) -> int:
        """Close every connection with a close frame carrying ``code`` and ``reason``.

        Returns once the connections are gone; how many there were.

        Args:
            code: The close code.
            reason: The close reason.
            farewell: Gives the last message to send each connection before its close frame
                (a venue's shutdown notice); sent even while stalled.

        Raises:
            UsageError: ``code`` may not be sent in a close frame, or ``reason`` is too long.
        """
        check_close(code, reason)
        conns = list(self._conns)

        async def close_and_forget(conn: FakeConnection) -> None:
            if farewell is not None:
                await self.send(conn, farewell(conn), force=True)
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
