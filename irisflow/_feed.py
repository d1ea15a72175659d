"""What subscribers hand the pipeline, and the bookkeeping every venue connection shares.

A subscriber task reads one socket at a time and sends whole socket reads down the channel as
:class:`Frames`: every frame from one read travels together, stamped with one receive time. The
pipeline task decodes them, so a live run and a replay of its recording take exactly the same
path from raw bytes to events. A disconnect travels as a :class:`~irisflow.Gap` event.
"""

from __future__ import annotations

import enum
import random
import time
from typing import TypeAlias

import attrs
import trio

from ._events import Gap

__all__ = [
    "Backoff",
    "ConnectionState",
    "FeedItem",
    "FeedStatistics",
    "FeedStats",
    "Frames",
    "Overflow",
    "RawFrame",
    "now_ns",
]

RawFrame: TypeAlias = bytes | bytearray
"""One frame's exact bytes, as received: treat it as read-only.

Live frames are the ``bytearray``s websockets' parser cut them into, handed on without a copy
(a copy per message was about 2% of the live path); recordings and files give ``bytes``. Both
compare, slice, ``decode`` and parse (``orjson.loads``) alike; neither is hashed.
"""


def now_ns() -> int:
    """Wall-clock time in ns since the epoch: what ``recv_ts`` holds."""
    return time.time_ns()


@attrs.frozen
class Frames:
    """Raw frames from one socket read of one venue connection."""

    venue: str
    """Venue name, e.g. ``'binance'``."""
    recv_ts: int
    """When the read completed, ns since the epoch (shared by every frame of the read)."""
    frames: list[RawFrame]
    """The frames' exact bytes (UTF-8 text for JSON venues), in arrival order."""
    first_line: int = 0
    """In a replay, the recording line of the first frame (the rest follow it); 0 when live."""


FeedItem = Frames | Gap
"""What travels from subscribers to the pipeline."""


class ConnectionState(enum.Enum):
    """Where one venue connection is in its life."""

    CONNECTING = "connecting"
    SUBSCRIBING = "subscribing"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


class Overflow(enum.Enum):
    """What a subscriber does when the channel to the pipeline is full."""

    BLOCK = "block"
    """Wait (backpressure): the socket is not read until the pipeline catches up."""
    DROP = "drop"
    """Drop the socket read and count it; a :class:`Gap` marks the hole."""


@attrs.frozen
class FeedStatistics:
    """A snapshot of one venue connection, for the status display."""

    venue: str
    """Venue name."""
    connection: int
    """Connection number within the venue (0-based)."""
    streams: int
    """How many venue streams this connection carries."""
    state: ConnectionState
    """Current state."""
    frames_in: int
    """Frames received since start."""
    reads: int
    """Socket reads that carried data (each one channel send)."""
    reconnects: int
    """Reconnections since start."""
    gaps: int
    """Gap events emitted."""
    dropped: int
    """Frames dropped because the channel was full (only with ``Overflow.DROP``)."""
    last_error: str
    """The last connection error, '' if none."""


@attrs.define
class FeedStats:
    """Mutable counters one subscriber task updates; read through :meth:`statistics`."""

    venue: str
    connection: int = 0
    streams: int = 0
    state: ConnectionState = ConnectionState.CONNECTING
    frames_in: int = 0
    reads: int = 0
    reconnects: int = 0
    gaps: int = 0
    dropped: int = 0
    last_error: str = ""

    def statistics(self) -> FeedStatistics:
        """A frozen copy of the counters."""
        return FeedStatistics(
            venue=self.venue,
            connection=self.connection,
            streams=self.streams,
            state=self.state,
            frames_in=self.frames_in,
            reads=self.reads,
            reconnects=self.reconnects,
            gaps=self.gaps,
            dropped=self.dropped,
            last_error=self.last_error,
        )


@attrs.define
class Backoff:
    """Capped exponential backoff with full jitter.

    Args:
        initial: The first delay's upper bound, in seconds.
        cap: The largest delay, in seconds.
        rng: Random source (pass a seeded one in tests).
    """

    initial: float = 0.5
    cap: float = 30.0
    rng: random.Random = attrs.field(factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds; grows until :meth:`reset`."""
        ceiling = min(self.cap, self.initial * 2.0**self.attempt)
        self.attempt += 1
        # Full jitter: spread reconnecting clients apart, but never wait less than a tenth.
        return ceiling * (0.1 + 0.9 * self.rng.random())

    def reset(self) -> None:
        """Start over after a connection that worked."""
        self.attempt = 0

    async def sleep(self) -> None:
        """Sleep for :meth:`next_delay` seconds."""
        await trio.sleep(self.next_delay())
