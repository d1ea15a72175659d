"""What every websocket venue shares: the reconnect loop, gap events, decode errors."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import trio

from .._errors import ConnectError, ConnectionClosed, DecodeError
from .._events import Gap
from .._feed import (
    Backoff,
    ConnectionState,
    FeedItem,
    FeedStats,
    Frames,
    Overflow,
    RawFrame,
    now_ns,
)
from .._transport import WebSocket, open_websocket
from .._venue import FeedOptions

__all__ = [
    "Reconnect",
    "VenueConnection",
    "ack_deadline_error",
    "emit_gap",
    "join_url",
    "make_decode_error",
    "run_connections",
]

PING_ANSWER = 10.0
"""Seconds a quiet connection gets to answer a ping before it counts as stale."""
_SHOWN = 120  # characters of a bad frame quoted in its error


def join_url(endpoint: str, path: str) -> str:
    """``endpoint`` with ``path`` appended, unless the endpoint already names a path."""
    rest = endpoint.partition("://")[2]
    if "/" in rest.rstrip("/"):
        return endpoint
    return endpoint.rstrip("/") + path


def make_decode_error(
    venue: str, what: str, frame: RawFrame, *, cause: BaseException | None = None
) -> DecodeError:
    """A DecodeError that says what is wrong, where, and shows the start of the frame."""
    text = frame[:_SHOWN].decode("utf-8", "replace")
    more = "..." if len(frame) > _SHOWN else ""
    err = DecodeError(f"{venue}: {what} in frame {text}{more}")
    err.__cause__ = cause
    return err


def ack_deadline_error(venue: str, timeout: float, pending: Mapping[int, Sequence[str]]) -> str:
    """The reason text for subscriptions that were never acknowledged."""
    streams = [s for group in pending.values() for s in group]
    shown = ", ".join(streams[:5]) + (" ..." if len(streams) > 5 else "")
    return f"{venue} did not acknowledge the subscription to {shown} within {timeout:g}s"


async def emit_gap(
    send: trio.MemorySendChannel[FeedItem],
    venue: str,
    streams: Sequence[str],
    start: int,
    cause: str,
    stats: FeedStats,
) -> None:
    """Put a gap event into the feed; a closed pipeline is not an error here."""
    end = now_ns()
    gap = Gap(venue, "*", end, end, tuple(streams), start, end, cause)
    stats.gaps += 1
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await send.send(gap)


class Reconnect(Exception):
    """Drop this connection and open a new one (stale, unacknowledged, told to go).

    Raised by :class:`VenueConnection` hooks; a :class:`~irisflow.VenueError` raised there is
    fatal instead (a bad key or subscription is not retried).
    """


class VenueConnection:
    """One websocket connection of a venue, kept open until cancelled.

    The loop: connect, :meth:`handshake` (authenticate, subscribe, wait for acks), then read
    until the connection fails or goes quiet for ``stale_timeout``; reconnect with capped
    exponential backoff and jitter, and put a :class:`~irisflow.Gap` into the feed for the
    time it was down. Every socket read goes down the channel as one :class:`Frames` item.

    Subclasses set :attr:`venue` and implement :meth:`handshake`; they may override
    :meth:`is_control` (a cheap test, run on every frame; or :meth:`control_frames`, the same
    test over a whole read) and :meth:`on_control` (the parse of
    the frames that test picks, e.g. acks and status messages).

    Args:
        url: The websocket address to connect to.
        streams: The venue streams this connection carries (named in gap events).
        send: This connection's own clone of the channel to the pipeline; closed on exit.
        options: Timeouts, backoff and overflow policy.
        stats: Counters for the status display.
        display_url: ``url`` as it may be shown (without API keys).
    """

    venue: ClassVar[str] = ""
    ping_when_quiet: ClassVar[bool] = False
    """Venues that send no heartbeats set this: after ``stale_timeout`` of silence the
    connection is pinged, and only a missing pong counts as stale."""

    def __init__(
        self,
        url: str,
        streams: Sequence[str],
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: FeedStats,
        *,
        display_url: str | None = None,
    ) -> None:
        self.url = url
        self.display_url = display_url
        self.streams = tuple(streams)
        self.send = send
        self.options = options
        self.stats = stats
        self.backoff = Backoff(options.backoff_initial, options.backoff_cap)
        self._reconnect: str | None = None

    async def handshake(self, ws: WebSocket) -> None:
        """Authenticate and subscribe on a fresh connection; return once data may flow."""
        raise NotImplementedError

    def is_control(self, frame: RawFrame) -> bool:
        """Whether ``frame`` may be a control message that :meth:`on_control` must see."""
        return True

    def control_frames(self, frames: Sequence[RawFrame]) -> list[RawFrame]:
        """The frames of one read that :meth:`on_control` must see (by :meth:`is_control`).

        Venues with a stateless test override this with one comprehension: no method call per
        frame.
        """
        is_control = self.is_control
        return [frame for frame in frames if is_control(frame)]

    def on_disconnect(self) -> None:
        """The connection is gone (it will be reopened unless the run is stopping)."""

    def on_control(self, frame: RawFrame) -> str | None:
        """Look at a control frame; return a reason to reconnect after this read, or None.

        Raises:
            VenueError: the venue refused something; the run stops with this error.
            Reconnect: drop the connection now.
        """
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, handshake and read until cancelled, reconnecting on failures.

        The first connection must succeed: an endpoint that cannot be reached at start is
        reported (``ConnectError``), not retried forever. Later failures reconnect.
        """
        gap_start: int | None = None
        cause = ""
        started = False
        async with self.send:
            try:
                while True:
                    try:
                        async with open_websocket(
                            self.url,
                            connect_timeout=self.options.connect_timeout,
                            ssl_context=self.options.ssl_context,
                            display_url=self.display_url,
                        ) as ws:
                            self.stats.state = ConnectionState.SUBSCRIBING
                            await self.handshake(ws)
                            if not started:
                                started = True
                                task_status.started()
                            if gap_start is not None:
                                await emit_gap(
                                    self.send,
                                    self.venue,
                                    self.streams,
                                    gap_start,
                                    cause,
                                    self.stats,
                                )
                                gap_start = None
                            self.stats.state = ConnectionState.LIVE
                            self.backoff.reset()
                            await self._read(ws)
                    except (ConnectionClosed, Reconnect) as exc:
                        reason = str(exc)
                    except ConnectError as exc:
                        if not started:
                            raise
                        reason = str(exc)
                    finally:
                        self.on_disconnect()
                    if gap_start is None:  # the gap keeps the cause that opened it
                        gap_start, cause = now_ns(), reason
                    self.stats.last_error = reason
                    self.stats.state = ConnectionState.RECONNECTING
                    self.stats.reconnects += 1
                    await self.backoff.sleep()
                    self.stats.state = ConnectionState.CONNECTING
            finally:
                self.stats.state = ConnectionState.STOPPED
                if gap_start is not None:
                    # Stopped while disconnected: the hole still deserves a gap event.
                    with trio.move_on_after(1, shield=True):
                        await emit_gap(
                            self.send,
                            self.venue,
                            self.streams,
                            gap_start,
                            cause + " (not resumed)",
                            self.stats,
                        )

    async def read_until(self, ws: WebSocket, done: Callable[[], bool]) -> None:
        """Read and forward frames until ``done()`` (checked after each read).

        Callers bound the wait with ``trio.move_on_after`` and raise :class:`Reconnect`.
        """
        while not done():
            await self.forward(await ws.receive_batch())

    async def _read(self, ws: WebSocket) -> None:
        stale = self.options.stale_timeout
        probing = False
        while True:
            with trio.move_on_after(min(stale, PING_ANSWER) if probing else stale) as scope:
                frames = await ws.receive_batch()
            if scope.cancelled_caught:
                if not self.ping_when_quiet or probing:
                    raise Reconnect(f"stale: no data for {stale:g}s")
                # A venue without heartbeats may just be quiet: ask before reconnecting.
                probing = True
                await ws.ping()
                continue
            probing = False
            if frames:
                await self.forward(frames)

    async def forward(self, frames: list[RawFrame]) -> None:
        """Show control frames to :meth:`on_control`, then send the whole read on."""
        if not frames:
            return
        for frame in self.control_frames(frames):
            reason = self.on_control(frame)
            if reason is not None:
                self._reconnect = reason
        self.stats.frames_in += len(frames)
        self.stats.reads += 1
        item = Frames(self.venue, now_ns(), frames)
        try:
            # No checkpoint when there is room: the next socket read is one, so a task
            # switch here would be a second one per read.
            self.send.send_nowait(item)
        except trio.WouldBlock:
            if self.options.overflow is Overflow.DROP:
                self.stats.dropped += len(frames)
            else:
                await self.send.send(item)
        if self._reconnect is not None:
            reason, self._reconnect = self._reconnect, None
            raise Reconnect(reason)


async def run_connections(
    venue: str,
    streams: Sequence[str],
    per_connection: int,
    make: Callable[[Sequence[str], trio.MemorySendChannel[FeedItem], FeedStats], VenueConnection],
    send: trio.MemorySendChannel[FeedItem],
    stats: list[FeedStats],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one connection per ``per_connection`` streams until cancelled; close ``send`` after.

    Each connection gets its own clone of ``send`` and its own :class:`FeedStats` (appended to
    ``stats`` before ``started()``, which comes once every connection is subscribed).

    Args:
        make: Builds a connection from its streams, its channel clone and its counters.
    """
    chunks = [streams[i : i + per_connection] for i in range(0, len(streams), per_connection)]
    async with send, trio.open_nursery() as nursery:
        for number, chunk in enumerate(chunks):
            feed_stats = FeedStats(venue, connection=number, streams=len(chunk))
            stats.append(feed_stats)
            await nursery.start(make(chunk, send.clone(), feed_stats).run)
        task_status.started()
