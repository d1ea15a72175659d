"""Binance Spot market streams: plan, subscriber and live subscription control.

Wire facts: ``shared/venues.md`` §1. irisflow connects to the combined-stream endpoint
(``<base>/stream``) and subscribes with ``SUBSCRIBE`` requests whose acks it matches by id; a
:class:`BinanceControl` changes a running subscription (``SUBSCRIBE``, ``UNSUBSCRIBE``,
``LIST_SUBSCRIPTIONS``). The decoder lives in ``_binance_decode.py``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import trio

from .._errors import ConnectionClosed, UsageError, VenueError
from .._events import Book, BookUpdate, Candle, Event, Quote, Ticker, Trade
from .._feed import FeedItem, FeedStats, RawFrame
from .._transport import WebSocket
from .._venue import ChannelInfo, FeedOptions, Plan, VenueParams, register_venue
from ._binance_decode import VENUE, BinanceDecoder
from ._common import Reconnect, VenueConnection, ack_deadline_error, join_url, run_connections

__all__ = ["BINANCE", "BinanceControl", "BinanceDecoder", "BinanceVenue"]

DEFAULT_ENDPOINT = "wss://stream.binance.com:9443"
MAX_STREAMS_PER_CONNECTION = 1024
STREAMS_PER_REQUEST = 200
CONTROL_INTERVAL = 0.25
"""Seconds between control messages: Binance closes a connection sending more than 5 per
second (pongs count too), so 4 per second leaves room for pongs."""

KLINE_INTERVALS: tuple[str, ...] = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h")
KLINE_INTERVALS += ("6h", "8h", "12h", "1d", "3d", "1w", "1M")


# -- planning -------------------------------------------------------------------------------

_DATA_FLOOR = b'{"stream":""'
"""The least data frame: a frame that sorts below it is a control frame.

Data frames start ``{"stream":"`` and a stream name. Every Binance reply starts with a key
that sorts below ``stream`` (``{"result"``, ``{"id"``, ``{"code"``, ``{"error"``, raw
``{"e":"serverShutdown"``), and a notice's stream name starts with ``!``, which sorts below
``"``; short and odd frames (``[]``, ``{"s":1}``) sort below too. So one comparison tells,
and ``min`` of a read tells for the whole read. A frame above it that is not data after all
goes to the decoder, which reports it.
"""
_SYMBOL = re.compile(r"^[A-Za-z0-9]{2,30}$")
_PAIR = re.compile(r"^([A-Za-z0-9]{1,15})[-/]([A-Za-z0-9]{1,15})$")


def binance_symbol(text: str) -> str:
    """The Binance spelling of a symbol: ``btcusdt`` as is; ``BTC-USDT`` or ``BTC/USDT`` joined.

    Binance Spot quotes dollars in USDT, so a ``-USD`` pair means ``USDT``: ``BTC-USD`` is
    ``BTCUSDT``, which lets one ``--symbols BTC-USD`` serve Binance, Coinbase and Kraken.

    Raises:
        UsageError: anything else.
    """
    sym = text.strip()
    pair = _PAIR.match(sym)
    if pair is not None:
        base, quote = pair.group(1).upper(), pair.group(2).upper()
        return base + ("USDT" if quote == "USD" else quote)
    if not _SYMBOL.match(sym):
        raise UsageError(
            f"bad binance symbol {text!r}: use the venue's spelling (btcusdt) "
            "or BASE-QUOTE (BTC-USDT)"
        )
    return sym.upper()


_CHANNELS = {
    "trade": "trade",
    "trades": "trade",  # the name other venues use, so one --channels serves several
    "aggtrade": "aggTrade",
    "miniticker": "miniTicker",
    "ticker": "ticker",
    "bookticker": "bookTicker",
    "depth": "depth",
}
_CHANNEL_KINDS: dict[str, type[Event]] = {
    "trade": Trade,
    "aggTrade": Trade,
    "kline": Candle,
    "miniTicker": Ticker,
    "ticker": Ticker,
    "bookTicker": Quote,
    "depth": BookUpdate,
    "depthN": Book,
}
CHANNELS = (
    ChannelInfo("trade", ("trade",), "every trade, real time"),
    ChannelInfo("aggTrade", ("trade",), "trades aggregated per taker order, real time"),
    ChannelInfo(
        "kline_<interval>", ("candle",), f"OHLCV bars; interval one of {' '.join(KLINE_INTERVALS)}"
    ),
    ChannelInfo("miniTicker", ("ticker",), "24h rolling OHLC and volume, every second"),
    ChannelInfo("ticker", ("ticker",), "24h rolling statistics with best bid/ask, every second"),
    ChannelInfo("bookTicker", ("quote",), "best bid and ask, real time"),
    ChannelInfo("depth5|10|20[@100ms]", ("book",), "top-N book snapshots, every 1 s or 100 ms"),
    ChannelInfo("depth[@100ms]", ("book_update",), "order-book diffs with U/u ids"),
)


def _normalise_channel(raw: str) -> tuple[str, str]:
    """Return ``(channel as sent, kind key)`` for a channel the user typed, or raise."""
    text = raw.strip()
    base, at, speed = text.partition("@")
    if at and speed.lower() != "100ms":
        raise UsageError(
            f"unknown update speed {'@' + speed!r} in binance channel {raw!r}: use @100ms"
        )
    suffix = "@100ms" if at else ""
    lower = base.lower()
    if lower.startswith("kline_"):
        if at:
            raise UsageError(f"binance channel {raw!r} takes no @speed")
        interval = base[len("kline_") :]
        if interval not in KLINE_INTERVALS:
            hint = (
                f" (did you mean 'kline_{interval.lower()}'?)"
                if interval.lower() in KLINE_INTERVALS
                else ""
            )
            raise UsageError(
                f"unknown kline interval {interval!r} in binance channel {raw!r}{hint}; "
                f"valid intervals: {', '.join(KLINE_INTERVALS)}"
            )
        return f"kline_{interval}", "kline"
    if lower in ("depth5", "depth10", "depth20"):
        return lower + suffix, "depthN"
    if lower == "depth":
        return "depth" + suffix, "depth"
    if at:
        raise UsageError(f"binance channel {raw!r} takes no @speed; only depth channels do")
    if lower in _CHANNELS:
        name = _CHANNELS[lower]
        return name, name
    names = [
        "trade",
        "aggTrade",
        "kline_1m",
        "miniTicker",
        "ticker",
        "bookTicker",
        "depth5",
        "depth",
    ]
    close = difflib.get_close_matches(text, names, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(
        f"unknown binance channel {raw!r}{hint}; channels: trade, aggTrade, kline_<interval>, "
        "miniTicker, ticker, bookTicker, depth5|10|20[@100ms], depth[@100ms]"
    )


# -- subscribing ----------------------------------------------------------------------------


class BinanceVenue:
    """Binance Spot public market streams."""

    name = VENUE
    title = "Binance Spot"
    default_endpoint = DEFAULT_ENDPOINT
    credentials: tuple[str, ...] = ()
    default_symbols = ("btcusdt",)
    default_channels = ("trade",)

    def channel_info(self) -> Sequence[ChannelInfo]:
        """The channels Binance offers."""
        return CHANNELS

    def plan(
        self,
        symbols: Sequence[str],
        channels: Sequence[str],
        endpoint: str | None = None,
        params: VenueParams = VenueParams(),  # noqa: B008  (frozen, so sharing is safe)
    ) -> Plan:
        """Validate symbols and channels; stream names are lower case whatever was typed.

        Raises:
            UsageError: a bad symbol, channel or kline interval, or nothing to subscribe.
        """
        syms: list[str] = []
        for raw in symbols:
            sym = binance_symbol(raw)
            if sym not in syms:
                syms.append(sym)
        if not syms:
            raise UsageError("no symbols given: pass --symbols, e.g. --symbols btcusdt,ethusdt")
        chans: list[tuple[str, str]] = []
        for raw in channels:
            normal = _normalise_channel(raw)
            if normal not in chans:
                chans.append(normal)
        if not chans:
            raise UsageError("no channels given: pass --channels, e.g. --channels trade")
        streams = tuple(f"{s.lower()}@{c}" for s in syms for c, _ in chans)
        return Plan(
            venue=VENUE,
            endpoint=(endpoint or DEFAULT_ENDPOINT).rstrip("/"),
            symbols=tuple(syms),
            channels=tuple(c for c, _ in chans),
            streams=streams,
            kinds=frozenset(_CHANNEL_KINDS[k] for _, k in chans),
        )

    def decoder(self) -> BinanceDecoder:
        """A fresh decoder."""
        return BinanceDecoder()

    async def subscribe(
        self,
        plan: Plan,
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: list[FeedStats],
        *,
        control: BinanceControl | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one connection per 1024 streams until cancelled; closes ``send`` at the end.

        Args:
            control: Attach it to change the subscription while it runs.
        """

        def make(
            streams: Sequence[str], channel: trio.MemorySendChannel[FeedItem], counters: FeedStats
        ) -> VenueConnection:
            conn = _Connection(plan.endpoint, streams, channel, options, counters)
            if control is not None:
                control.connections.append(conn)
            return conn

        await run_connections(
            VENUE,
            plan.streams,
            MAX_STREAMS_PER_CONNECTION,
            make,
            send,
            stats,
            task_status=task_status,
        )


@attrs.define
class BinanceControl:
    """Changes a running Binance subscription, request by request, acks matched by id.

    Pass one to :meth:`BinanceVenue.subscribe` (or ``Runner.watch(..., controls=...)``). A
    change survives reconnects: the new set of streams is what gets resubscribed.
    """

    connections: list[_Connection] = attrs.field(factory=list)

    async def subscribe(self, streams: Sequence[str]) -> None:
        """Add streams (Binance names, e.g. ``'ethusdt@trade'``) to the connection with room.

        Raises:
            VenueError: Binance refused them (the feed goes on), or no connection has room.
            ConnectionClosed: the connection is down; try again once it is back.
        """
        wanted = [s for s in streams if not any(s in c.streams for c in self.connections)]
        if not wanted:
            return
        for conn in self.connections:
            if len(conn.streams) + len(wanted) <= MAX_STREAMS_PER_CONNECTION:
                await conn.request("SUBSCRIBE", wanted)
                return
        raise VenueError(f"no binance connection has room for {len(wanted)} more streams")

    async def unsubscribe(self, streams: Sequence[str]) -> None:
        """Drop streams from whichever connections carry them."""
        for conn in self.connections:
            mine = [s for s in streams if s in conn.streams]
            if mine:
                await conn.request("UNSUBSCRIBE", mine)

    async def list_subscriptions(self) -> list[str]:
        """What Binance says each connection is subscribed to (``LIST_SUBSCRIPTIONS``)."""
        found: list[str] = []
        for conn in self.connections:
            result = await conn.request("LIST_SUBSCRIPTIONS", None)
            found += [str(s) for s in result or ()]
        return found


@attrs.define
class _Request:
    """A control request waiting for its reply."""

    method: str
    params: tuple[str, ...]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None
    error: str | None = None


class _Connection(VenueConnection):
    """One websocket connection to Binance's combined-stream endpoint."""

    venue = VENUE

    def __init__(
        self,
        endpoint: str,
        streams: Sequence[str],
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: FeedStats,
    ) -> None:
        super().__init__(join_url(endpoint, "/stream"), streams, send, options, stats)
        self._next_id = 1
        self._requests: dict[int, _Request] = {}
        self._ws: WebSocket | None = None
        self._control_lock = trio.Lock()
        self._last_control = -CONTROL_INTERVAL

    async def handshake(self, ws: WebSocket) -> None:
        """Send SUBSCRIBE requests, paced, and wait until every one is acknowledged.

        A refusal here is fatal (the run stops with the venue's reason): it means a stream
        name Binance does not know, and retrying would not help.
        """
        self._ws = ws
        initial = [
            await self._send("SUBSCRIBE", self.streams[i : i + STREAMS_PER_REQUEST])
            for i in range(0, len(self.streams), STREAMS_PER_REQUEST)
        ]
        with trio.move_on_after(self.options.ack_timeout) as scope:
            await self.read_until(ws, lambda: all(r.done.is_set() for r in initial))
        if scope.cancelled_caught:
            waiting = {n: r.params for n, r in self._requests.items() if not r.done.is_set()}
            raise Reconnect(ack_deadline_error(VENUE, self.options.ack_timeout, waiting))
        for request in initial:
            if request.error is not None:
                raise VenueError(f"binance refused {', '.join(request.params)}: {request.error}")

    async def request(self, method: str, params: Sequence[str] | None) -> Any:
        """Send a control request on the live connection and wait for its reply.

        The reader task matches the reply; streams change only once Binance acknowledged.

        Raises:
            VenueError: Binance answered with an error.
            ConnectionClosed: not connected now, or the connection went away meanwhile.
        """
        if self._ws is None:
            raise ConnectionClosed(f"binance connection {self.stats.connection} is not connected")
        request = await self._send(method, tuple(params) if params is not None else None)
        with trio.move_on_after(self.options.ack_timeout):
            await request.done.wait()
        if not request.done.is_set():
            raise VenueError(
                f"binance did not answer {method} within {self.options.ack_timeout:g}s"
            )
        if request.error == "connection lost":
            raise ConnectionClosed(f"binance connection lost before it answered {method}")
        if request.error is not None:
            named = ", ".join(request.params) or method
            raise VenueError(f"binance refused {named}: {request.error}")
        return request.result

    async def _send(self, method: str, params: Sequence[str] | None) -> _Request:
        """Send one request, never faster than Binance's control-message limit allows."""
        assert self._ws is not None
        async with self._control_lock:
            await trio.sleep_until(self._last_control + CONTROL_INTERVAL)
            request_id = self._next_id
            self._next_id += 1
            request = _Request(method, tuple(params or ()))
            self._requests[request_id] = request
            message: dict[str, Any] = {"method": method, "id": request_id}
            if params is not None:
                message["params"] = list(params)
            await self._ws.send(orjson.dumps(message).decode())
            self._last_control = trio.current_time()
        return request

    def on_disconnect(self) -> None:
        """Requests still waiting fail at once: their connection is gone."""
        self._ws = None
        for request in self._requests.values():
            request.error = "connection lost"
            request.done.set()
        self._requests.clear()

    def is_control(self, frame: RawFrame) -> bool:
        """Replies and ``!`` notices sort below :data:`_DATA_FLOOR`; data frames do not."""
        return frame < _DATA_FLOOR

    def control_frames(self, frames: Sequence[RawFrame]) -> list[RawFrame]:
        """:meth:`is_control` over one read (it runs on every frame).

        A read of data frames only, the usual one, is recognised by its least frame: one
        ``min``, compared in C, and no Python loop.
        """
        if min(frames, default=_DATA_FLOOR) >= _DATA_FLOOR:
            return []
        return [f for f in frames if f < _DATA_FLOOR]

    def on_control(self, frame: RawFrame) -> str | None:
        """Match replies to requests by id; a shutdown notice reconnects."""
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None  # the decoder counts it
        if not isinstance(msg, dict):
            return None
        data = msg.get("data", msg)
        if isinstance(data, dict) and data.get("e") == "serverShutdown":
            return "server announced shutdown"
        request_id = msg.get("id")
        request = self._requests.pop(request_id, None) if isinstance(request_id, int) else None
        if "code" in msg and "msg" in msg:
            if request is None:
                raise VenueError(f"binance refused a request: {msg['msg']} (code {msg['code']})")
            request.error = f"{msg['msg']} (code {msg['code']})"
            request.done.set()
        elif "result" in msg and request is not None:
            request.result = msg["result"]
            if request.method == "SUBSCRIBE":
                self.streams += tuple(s for s in request.params if s not in self.streams)
            elif request.method == "UNSUBSCRIBE":
                self.streams = tuple(s for s in self.streams if s not in request.params)
            self.stats.streams = len(self.streams)
            request.done.set()
        return None


BINANCE = BinanceVenue()
register_venue(VENUE, lambda: BINANCE)
