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

It is a :class:`~irisflow.testing._wsfake.FakeVenueServer`: the base class owns the socket,
the connections and the faults, and taps the raw stream under each websocket, so this fake
sees client pings and pongs (which count toward the rate limit but never surface through
trio-websocket's API) and sends several frames in one TCP write (:meth:`publish_many`).

All timing uses Trio's clock, so ``autojump_clock`` and ``MockClock`` drive it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import cast

import attrs
import orjson
import trio
import trio_websocket

from ._binance_frames import server_shutdown
from ._binance_protocol import (
    Accepted,
    RateLimiter,
    Rejected,
    Subscriptions,
    handle_control,
    parse_target,
)
from ._wsfake import FakeConnection, FakeVenueServer

__all__ = ["FakeBinance"]

_SHUTDOWN_STREAM = "!serverShutdown"


@attrs.define(eq=False)
class _Session:
    """What the fake keeps for one connection, in its ``state["binance"]``."""

    subs: Subscriptions
    limiter: RateLimiter
    over_limit: trio.Event = attrs.field(factory=trio.Event)
    """Set once the client went over the message rate limit."""


def _session(conn: FakeConnection) -> _Session:
    return cast(_Session, conn.state["binance"])


def _encode(payload: object) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload).decode()
    return orjson.dumps(payload).decode()


def _wrap(stream: str, text: str) -> str:
    # Wrapping the text, not the object, keeps a raw payload exactly as given.
    return '{"stream":' + orjson.dumps(stream).decode() + ',"data":' + text + "}"


@attrs.define(eq=False)
class FakeBinance(FakeVenueServer):
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
    - :meth:`send_raw` sends a ``str`` as a text frame and ``bytes`` as a binary frame.

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

    name = "FakeBinance"
    bytes_as_text = False

    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    max_messages_per_second: int = 5
    max_streams: int = 1024
    # Declared again (the base has it too) so that it stays the last positional parameter.
    close_timeout: float = 5.0
    pongs: list[bytes] = attrs.field(factory=list, init=False)
    rate_limit_closes: int = attrs.field(default=0, init=False)
    pong_timeouts: int = attrs.field(default=0, init=False)

    # The protocol, as FakeVenueServer hooks.

    def check_path(self, path: str) -> tuple[int, str] | None:
        """Refuse unknown paths (404) and bad stream names or parameters in the URL (400)."""
        target = parse_target(path, max_streams=self.max_streams)
        return (target.status, target.body) if isinstance(target, Rejected) else None

    def init_connection(self, conn: FakeConnection) -> None:
        """Start with the streams and framing the URL asks for."""
        target = parse_target(conn.path, max_streams=self.max_streams)
        assert isinstance(target, Accepted)  # check_path let it in
        subs = Subscriptions(
            combined=target.combined,
            streams=dict.fromkeys(target.streams),
            max_streams=self.max_streams,
        )
        conn.state["binance"] = _Session(subs, RateLimiter(self.max_messages_per_second))

    def on_frame(self, conn: FakeConnection, opcode: int, payload: bytes) -> None:
        """Record pongs; count every frame but close frames toward the rate limit."""
        if opcode == 8:
            return
        if opcode == 10:
            self.pongs.append(payload)
        session = _session(conn)
        if session.limiter.hit(trio.current_time()):
            session.over_limit.set()

    async def on_receive(self, conn: FakeConnection, message: str | bytes) -> None:
        """Answer one control message, unless the client is over the rate limit."""
        session = _session(conn)
        if session.over_limit.is_set():
            await trio.lowlevel.checkpoint()
            return
        outcome = handle_control(session.subs, message)
        if outcome.parsed:
            self.requests.append(outcome.request)
        if outcome.changed:
            self.notify()
        await self.send(conn, orjson.dumps(outcome.reply).decode())

    async def background(self, conn: FakeConnection) -> None:
        """Ping every ``ping_interval`` (not while stalled); enforce the rate limit."""
        conn.nursery.start_soon(self._enforce_rate_limit, conn)
        count = 0
        while True:
            await trio.sleep(self.ping_interval)
            if not self.stalled:
                count += 1
                conn.nursery.start_soon(self._ping, conn, str(count).encode())

    async def _ping(self, conn: FakeConnection, payload: bytes) -> None:
        with trio.move_on_after(self.pong_timeout):
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await conn.ws.ping(payload)
            return
        self.pong_timeouts += 1
        await conn.stream.aclose()

    async def _enforce_rate_limit(self, conn: FakeConnection) -> None:
        await _session(conn).over_limit.wait()
        self.rate_limit_closes += 1
        await self.close(conn, 1008, "too many messages")

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
        targets = [conn for conn in self.connections if stream in _session(conn).subs.streams]
        sent = 0
        for conn in targets:
            message = _wrap(stream, text) if _session(conn).subs.combined else text
            sent += await self.send(conn, message)
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
        for conn in self.connections:
            subs = _session(conn).subs
            messages = [
                _wrap(stream, text) if subs.combined else text
                for stream, text in encoded
                if stream in subs.streams
            ]
            if messages:
                sent += await self.send_many(conn, messages)
        await trio.lowlevel.checkpoint()
        return sent

    # Faults.

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
        text = orjson.dumps(
            server_shutdown(time.time_ns() // 1_000_000 if time_ms is None else time_ms)
        ).decode()

        def notice(conn: FakeConnection) -> str:
            return _wrap(_SHUTDOWN_STREAM, text) if _session(conn).subs.combined else text

        return await self.close_all(code, reason, farewell=notice)

    # Observing.

    def subscriptions(self) -> set[str]:
        """Every stream some open connection is subscribed to."""
        return {stream for conn in self.connections for stream in _session(conn).subs.streams}

    def subscribers(self, stream: str) -> int:
        """How many open connections are subscribed to ``stream``."""
        return sum(stream in _session(conn).subs.streams for conn in self.connections)

    async def wait_subscribed(self, stream: str, connections: int = 1) -> None:
        """Wait until at least ``connections`` open connections are subscribed to ``stream``."""
        await self.wait_until(lambda: self.subscribers(stream) >= connections)
