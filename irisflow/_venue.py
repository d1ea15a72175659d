"""The shape every venue module has, and the venue registry.

A venue is three things: a *plan* (validate what the user asked for and turn it into the
venue's stream names and the event kinds they produce), a sans-IO *decoder* (raw frames in,
events out), and a *subscriber* (the async part: connect, subscribe, read, reconnect).
"""

from __future__ import annotations

import difflib
import ssl
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
import trio

from ._errors import DecodeError, UsageError
from ._events import Event
from ._feed import FeedItem, FeedStats, Overflow, RawFrame

__all__ = [
    "ChannelInfo",
    "Decoder",
    "FeedOptions",
    "Plan",
    "Venue",
    "VenueParams",
    "get_venue",
    "register_venue",
    "venue_names",
]


@attrs.frozen
class ChannelInfo:
    """One channel a venue offers, for ``irisflow venues``."""

    name: str
    """The channel as the user types it, e.g. ``'kline_<interval>'``."""
    kinds: tuple[str, ...]
    """Event kinds the channel produces."""
    doc: str
    """One line on what it carries."""


@attrs.frozen
class Plan:
    """A validated subscription for one venue."""

    venue: str
    """Venue name."""
    endpoint: str
    """Base websocket address, e.g. ``'wss://stream.binance.com:9443'``."""
    symbols: tuple[str, ...]
    """Venue-native symbols, upper case."""
    channels: tuple[str, ...]
    """Channels as given (normalised)."""
    streams: tuple[str, ...]
    """The venue's own stream names, in subscription order."""
    kinds: frozenset[type[Event]]
    """Event classes these streams can produce (gaps excluded)."""


@attrs.frozen
class VenueParams:
    """Venue-specific choices from the command line or config; each venue reads what it needs."""

    market: str | None = None
    """Polygon/Massive market: ``crypto``, ``stocks``, ``forex`` or ``options``."""
    network: str | None = None
    """Alchemy network, e.g. ``eth-mainnet``."""
    listen: str | None = None
    """``HOST:PORT`` a webhook venue (Moralis) listens on."""
    delayed: bool = False
    """Polygon/Massive: the delayed feed instead of real time."""


@attrs.frozen
class FeedOptions:
    """How subscribers behave; the CLI fills it from its options."""

    stale_timeout: float = 30.0
    """Reconnect when nothing at all arrived for this many seconds."""
    connect_timeout: float = 10.0
    """Give up on one connection attempt after this many seconds."""
    ack_timeout: float = 10.0
    """Reconnect when a subscription is not acknowledged within this many seconds."""
    backoff_initial: float = 0.5
    """First reconnect delay bound, in seconds (doubles each attempt, with jitter)."""
    backoff_cap: float = 30.0
    """Largest reconnect delay, in seconds."""
    overflow: Overflow = Overflow.BLOCK
    """What to do when the channel to the pipeline is full."""
    ssl_context: ssl.SSLContext | None = None
    """TLS settings for ``wss://`` endpoints (None: the system's default trust store)."""


class Decoder(Protocol):
    """Sans-IO: raw frames of one venue in, events out."""

    def decode_batch(
        self,
        frames: Sequence[RawFrame],
        recv_ts: int,
        out: list[Event],
        errors: list[tuple[int, DecodeError]],
    ) -> None:
        """Append events of ``frames`` to ``out``, ``(index, error)`` per bad frame to ``errors``.

        Must never raise for a bad frame: a frame either decodes completely or adds one error.
        """
        ...


class Venue(Protocol):
    """What every venue module provides.

    A venue may also name ``default_symbols`` and ``default_channels`` (tuples of text): what
    the CLI asks for when ``--symbols`` or ``--channels`` is not given.
    """

    name: str
    title: str
    default_endpoint: str
    credentials: tuple[str, ...]

    def channel_info(self) -> Sequence[ChannelInfo]:
        """The channels this venue offers."""
        ...

    def plan(
        self,
        symbols: Sequence[str],
        channels: Sequence[str],
        endpoint: str | None = None,
        params: VenueParams = VenueParams(),
    ) -> Plan:
        """Validate a request and turn it into streams; raises UsageError."""
        ...

    def decoder(self) -> Decoder:
        """A fresh decoder (decoders may cache per-stream routes)."""
        ...

    async def subscribe(
        self,
        plan: Plan,
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: list[FeedStats],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run every connection the plan needs until cancelled; closes ``send`` at the end.

        Appends one :class:`FeedStats` per connection to ``stats`` before ``started()``.
        """
        ...


_VENUES: dict[str, Callable[[], Venue]] = {}


def register_venue(name: str, factory: Callable[[], Venue]) -> None:
    """Make a venue available under ``name``."""
    _VENUES[name] = factory


def venue_names() -> list[str]:
    """Names of every registered venue, sorted."""
    from . import venues  # noqa: F401  (registers the bundled venues)

    return sorted(_VENUES)


def get_venue(name: str) -> Venue:
    """The venue called ``name`` (case-insensitive).

    Raises:
        UsageError: no venue has that name; the message suggests the closest.
    """
    from . import venues  # noqa: F401  (registers the bundled venues)

    key = name.strip().lower()
    factory = _VENUES.get(key)
    if factory is None:
        known = venue_names()
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown venue {name!r}{hint}; known venues: {', '.join(known)}")
    return factory()
