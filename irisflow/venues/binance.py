"""Binance Spot market streams: plan, decoder and subscriber.

Wire facts: ``shared/venues.md`` §1. irisflow connects to the combined-stream endpoint
(``<base>/stream``) and subscribes live with ``SUBSCRIBE``, so every data frame arrives as
``{"stream": ..., "data": ...}`` and is routed by its stream name: that also covers the payloads
that carry no ``e`` field (``bookTicker``, ``depth<N>``). Raw frames (``/ws`` recordings, or
files of bare payloads) are routed by ``e`` and, failing that, by their keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import orjson
import trio

from .._errors import DecodeError, UsageError, VenueError
from .._events import Book, BookUpdate, Candle, Event, Level, Quote, Ticker, Trade
from .._feed import FeedItem, FeedStats
from .._transport import WebSocket
from .._venue import ChannelInfo, FeedOptions, Plan, VenueParams, register_venue
from ._common import Reconnect, VenueConnection, ack_deadline_error, join_url, make_decode_error

__all__ = ["BINANCE", "BinanceDecoder", "BinanceVenue"]

VENUE = "binance"
DEFAULT_ENDPOINT = "wss://stream.binance.com:9443"
MAX_STREAMS_PER_CONNECTION = 1024
STREAMS_PER_REQUEST = 200
CONTROL_INTERVAL = 0.25
"""Seconds between control messages: Binance closes a connection sending more than 5 per
second (pongs count too), so 4 per second leaves room for pongs."""

KLINE_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)
_MS = 1_000_000  # ns per ms

Route = Callable[[Any, int], Event]


# -- decoding -------------------------------------------------------------------------------
#
# The per-frame path: one orjson.loads, one dict lookup of the stream name, one route call that
# builds the event straight from the parsed dict. Anything unexpected (a missing key, a wrong
# type) falls out as an exception and is diagnosed on the slow path, never on the fast one.


def _ms(value: Any) -> int:
    if value.__class__ is not int:
        raise TypeError("expected an integer time in ms")
    return value * _MS


def _levels(raw: Any) -> tuple[Level, ...]:
    return tuple([(Decimal(p), Decimal(q)) for p, q in raw])


_DECIMALS: dict[str, Decimal] = {}
"""Trade prices and quantities seen lately, as Decimals.

Trades repeat the same few thousand price and size strings, and a dict lookup costs a third
of parsing a Decimal; Decimals are immutable, so sharing one is safe. Bounded: it is emptied
when full.
"""
_DECIMALS_MAX = 16384


def _new_decimal(text: str) -> Decimal:
    if len(_DECIMALS) >= _DECIMALS_MAX:
        _DECIMALS.clear()
    value = _DECIMALS[text] = Decimal(text)
    return value


def _trade(d: Any, recv_ts: int) -> Event:
    # The hottest route: the time check and the Decimal cache are inlined.
    ts = d["T"]
    if ts.__class__ is not int:
        raise TypeError("expected an integer time in ms")
    p, q = d["p"], d["q"]
    price = _DECIMALS.get(p)
    if price is None:
        price = _new_decimal(p)
    qty = _DECIMALS.get(q)
    if qty is None:
        qty = _new_decimal(q)
    # m: the buyer was the maker, so the taker sold.
    return Trade(VENUE, d["s"], ts * _MS, recv_ts, price, qty, "sell" if d["m"] else "buy", d["t"])


def _agg_trade(d: Any, recv_ts: int) -> Event:
    ts = d["T"]
    if ts.__class__ is not int:
        raise TypeError("expected an integer time in ms")
    p, q = d["p"], d["q"]
    price = _DECIMALS.get(p)
    if price is None:
        price = _new_decimal(p)
    qty = _DECIMALS.get(q)
    if qty is None:
        qty = _new_decimal(q)
    return Trade(VENUE, d["s"], ts * _MS, recv_ts, price, qty, "sell" if d["m"] else "buy", d["a"])


def _kline(d: Any, recv_ts: int) -> Event:
    k = d["k"]
    return Candle(
        VENUE,
        d["s"],
        _ms(d["E"]),
        recv_ts,
        k["i"],
        _ms(k["t"]),
        _ms(k["T"]),
        Decimal(k["o"]),
        Decimal(k["h"]),
        Decimal(k["l"]),
        Decimal(k["c"]),
        Decimal(k["v"]),
        Decimal(k["q"]),
        k["n"],
        bool(k["x"]),
    )


def _mini_ticker(d: Any, recv_ts: int) -> Event:
    return Ticker(
        VENUE,
        d["s"],
        _ms(d["E"]),
        recv_ts,
        "24h",
        Decimal(d["c"]),
        Decimal(d["o"]),
        Decimal(d["h"]),
        Decimal(d["l"]),
        Decimal(d["v"]),
        Decimal(d["q"]),
    )


def _ticker(d: Any, recv_ts: int) -> Event:
    return Ticker(
        VENUE,
        d["s"],
        _ms(d["E"]),
        recv_ts,
        "24h",
        Decimal(d["c"]),
        Decimal(d["o"]),
        Decimal(d["h"]),
        Decimal(d["l"]),
        Decimal(d["v"]),
        Decimal(d["q"]),
        Decimal(d["p"]),
        Decimal(d["P"]),
        Decimal(d["w"]),
        Decimal(d["b"]),
        Decimal(d["B"]),
        Decimal(d["a"]),
        Decimal(d["A"]),
        d["n"],
    )


def _book_ticker(d: Any, recv_ts: int) -> Event:
    # Spot bookTicker carries no event time: the receive time stands in for it.
    return Quote(
        VENUE,
        d["s"],
        _ms(d["E"]) if "E" in d else recv_ts,
        recv_ts,
        Decimal(d["b"]),
        Decimal(d["B"]),
        Decimal(d["a"]),
        Decimal(d["A"]),
        d["u"],
    )


def _depth_update(d: Any, recv_ts: int) -> Event:
    return BookUpdate(
        VENUE, d["s"], _ms(d["E"]), recv_ts, d["U"], d["u"], _levels(d["b"]), _levels(d["a"])
    )


def _partial_depth(symbol: str) -> Route:
    # depth<N> payloads have no symbol and no time: the symbol comes from the stream name.
    def route(d: Any, recv_ts: int) -> Event:
        return Book(
            VENUE,
            symbol,
            recv_ts,
            recv_ts,
            d["lastUpdateId"],
            _levels(d["bids"]),
            _levels(d["asks"]),
        )

    return route


_BY_EVENT_TYPE: dict[str, Route] = {
    "trade": _trade,
    "aggTrade": _agg_trade,
    "kline": _kline,
    "24hrMiniTicker": _mini_ticker,
    "24hrTicker": _ticker,
    "depthUpdate": _depth_update,
    "bookTicker": _book_ticker,
}

# What each field of each payload must be, for the slow path that explains a bad frame.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "trade": ("s", "T", "p", "q", "m", "t"),
    "aggTrade": ("s", "T", "p", "q", "m", "a"),
    "kline": ("s", "E", "k", "k.i", "k.t", "k.T", "k.o", "k.h", "k.l", "k.c", "k.v", "k.q", "k.n"),
    "24hrMiniTicker": ("s", "E", "c", "o", "h", "l", "v", "q"),
    "24hrTicker": ("s", "E", "c", "o", "h", "l", "v", "q", "p", "P", "w", "b", "B", "a", "A", "n"),
    "depthUpdate": ("s", "E", "U", "u", "b", "a"),
    "bookTicker": ("s", "b", "B", "a", "A", "u"),
    "depth": ("lastUpdateId", "bids", "asks"),
}
_INT_FIELDS = frozenset({"T", "E", "t", "a", "n", "U", "u", "lastUpdateId", "k.t", "k.T", "k.n"})
_NO_EVENTS: Route | None = None  # routes for streams that carry no market data


def _channel_of(stream: str) -> tuple[str, str]:
    """Split ``'btcusdt@depth5@100ms'`` into ``('BTCUSDT', 'depth5')``."""
    symbol, _, rest = stream.partition("@")
    channel = rest.split("@", 1)[0]
    return symbol.upper(), channel


def _route_for_stream(stream: str) -> Route | None:
    """The route for a combined-stream name, or None for streams without market data."""
    if stream.startswith("!"):
        if stream.startswith("!miniTicker@arr"):
            return _mini_ticker  # each element of the array, see BinanceDecoder
        return None  # !serverShutdown and other notices
    symbol, channel = _channel_of(stream)
    if channel.startswith("kline_"):
        return _kline
    if channel.startswith("depth") and channel != "depth":
        return _partial_depth(symbol)
    return {
        "trade": _trade,
        "aggTrade": _agg_trade,
        "miniTicker": _mini_ticker,
        "ticker": _ticker,
        "bookTicker": _book_ticker,
        "depth": _depth_update,
    }.get(channel)


def _payload_type(stream: str | None, data: Any) -> str:
    if isinstance(data, dict):
        e = data.get("e")
        if isinstance(e, str):
            return e
        if "lastUpdateId" in data:
            return "depth"
        if "u" in data and "b" in data:
            return "bookTicker"
    if stream is not None:
        _, channel = _channel_of(stream)
        for name in ("kline", "miniTicker", "ticker", "bookTicker", "aggTrade", "trade"):
            if channel.startswith(name):
                return {"miniTicker": "24hrMiniTicker", "ticker": "24hrTicker"}.get(name, name)
        if channel == "depth":
            return "depthUpdate"
        if channel.startswith("depth"):
            return "depth"
    return "?"


def _diagnose(frame: bytes, exc: BaseException) -> DecodeError:
    """Explain why ``frame`` did not decode, as a path into the frame."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as err:
        return make_decode_error(VENUE, f"invalid JSON ({err})", frame, cause=err)
    stream = msg.get("stream") if isinstance(msg, dict) else None
    combined = isinstance(msg, dict) and "data" in msg and isinstance(stream, str)
    data = msg["data"] if combined else msg
    root = "$.data" if combined else "$"
    if isinstance(data, list):
        data = data[0] if data else {}
        root += "[0]"
    if not isinstance(data, dict):
        return make_decode_error(VENUE, f"expected an object @ {root}", frame, cause=exc)
    kind = _payload_type(stream if combined else None, data)
    for name in _REQUIRED.get(kind, ()):
        obj: Any = data
        for part in name.split("."):
            if not isinstance(obj, dict) or part not in obj:
                return make_decode_error(VENUE, f"missing field @ {root}.{name}", frame, cause=exc)
            obj = obj[part]
        if name in _INT_FIELDS and obj.__class__ is not int:
            return make_decode_error(
                VENUE, f"expected an integer, got {obj!r} @ {root}.{name}", frame, cause=exc
            )
    if kind == "?":
        return make_decode_error(VENUE, f"unknown payload @ {root}", frame, cause=exc)
    return make_decode_error(
        VENUE, f"bad value in {kind} payload @ {root} ({exc})", frame, cause=exc
    )


class BinanceDecoder:
    """Decodes Binance frames, combined (``{"stream","data"}``) or raw, into events.

    Control replies (``{"result":..,"id":..}``, ``{"code":..,"msg":..}``) and notices such as
    ``serverShutdown`` decode to no events.
    """

    def __init__(self) -> None:
        self._routes: dict[str, Route | None] = {}

    def decode_batch(
        self,
        frames: Sequence[bytes],
        recv_ts: int,
        out: list[Event],
        errors: list[tuple[int, DecodeError]],
    ) -> None:
        """Append events of ``frames`` to ``out``, one ``(index, error)`` per bad frame."""
        loads = orjson.loads
        routes = self._routes
        append = out.append
        for index, frame in enumerate(frames):
            try:
                msg = loads(frame)
                stream = msg["stream"]
                route = routes[stream]
                data = msg["data"]
                if route is not None:
                    if data.__class__ is dict:
                        append(route(data, recv_ts))
                    else:
                        for item in data:
                            append(route(item, recv_ts))
            except Exception as exc:  # any surprise, the slow path sorts it out
                error = self._slow(frame, recv_ts, out, exc)
                if error is not None:
                    errors.append((index, error))

    def _slow(
        self, frame: bytes, recv_ts: int, out: list[Event], exc: BaseException
    ) -> DecodeError | None:
        """Decode a frame the fast path could not: a new stream, a raw payload or a bad frame."""
        mark = len(out)
        try:
            msg = orjson.loads(frame)
            if isinstance(msg, dict) and isinstance(msg.get("stream"), str) and "data" in msg:
                stream = msg["stream"]
                if stream in self._routes:
                    raise exc
                route = self._routes[stream] = _route_for_stream(stream)
                data = msg["data"]
                if route is not None:
                    items = data if isinstance(data, list) else (data,)
                    out.extend([route(item, recv_ts) for item in items])
            else:
                self._decode_raw(msg, recv_ts, out)
        except Exception as err:
            del out[mark:]
            return _diagnose(frame, err)
        return None

    def _decode_raw(self, msg: Any, recv_ts: int, out: list[Event]) -> None:
        items = msg if isinstance(msg, list) else [msg]
        for d in items:
            if not isinstance(d, dict):
                raise TypeError("payload is not an object")
            if ("result" in d and "id" in d) or ("code" in d and "msg" in d):
                continue  # a control reply
            kind = _payload_type(None, d)
            if kind == "depth":
                raise ValueError("a depth<N> payload has no symbol: record combined streams")
            if kind == "serverShutdown":
                continue
            route = _BY_EVENT_TYPE.get(kind)
            if route is None:
                raise ValueError(f"unknown payload type {kind!r}")
            out.append(route(d, recv_ts))


# -- planning -------------------------------------------------------------------------------

_SYMBOL = re.compile(r"^[A-Za-z0-9]{2,30}$")
_CHANNELS = {
    "trade": "trade",
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
    import difflib  # only on the error path

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
            sym = raw.strip()
            if not _SYMBOL.match(sym):
                raise UsageError(
                    f"bad binance symbol {raw!r}: use the venue's spelling, e.g. btcusdt or BTCUSDT"
                )
            if sym.upper() not in syms:
                syms.append(sym.upper())
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
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one connection per 1024 streams until cancelled; closes ``send`` at the end."""
        chunks = [
            plan.streams[i : i + MAX_STREAMS_PER_CONNECTION]
            for i in range(0, len(plan.streams), MAX_STREAMS_PER_CONNECTION)
        ]
        async with send, trio.open_nursery() as nursery:
            for number, streams in enumerate(chunks):
                feed_stats = FeedStats(VENUE, connection=number, streams=len(streams))
                stats.append(feed_stats)
                conn = _Connection(plan.endpoint, streams, send.clone(), options, feed_stats)
                await nursery.start(conn.run)
            task_status.started()


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
        self._pending: dict[int, tuple[str, ...]] = {}

    async def handshake(self, ws: WebSocket) -> None:
        """Send SUBSCRIBE requests, paced, and wait until every one is acknowledged."""
        self._pending.clear()
        for i in range(0, len(self.streams), STREAMS_PER_REQUEST):
            params = list(self.streams[i : i + STREAMS_PER_REQUEST])
            request_id = self._next_id
            self._next_id += 1
            self._pending[request_id] = tuple(params)
            if i:
                await trio.sleep(CONTROL_INTERVAL)
            request = {"method": "SUBSCRIBE", "params": params, "id": request_id}
            await ws.send(orjson.dumps(request).decode())
        with trio.move_on_after(self.options.ack_timeout) as scope:
            await self.read_until(ws, lambda: not self._pending)
        if scope.cancelled_caught:
            raise Reconnect(ack_deadline_error(VENUE, self.options.ack_timeout, self._pending))

    def is_control(self, frame: bytes) -> bool:
        """Data frames start with a stream name; replies and ``!`` notices do not."""
        return not frame.startswith(b'{"stream":"') or frame.startswith(b'{"stream":"!')

    def on_control(self, frame: bytes) -> str | None:
        """Match acks to requests; an error reply is fatal; a shutdown notice reconnects."""
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
        if "code" in msg and "msg" in msg:
            streams = self._pending.pop(request_id, ()) if isinstance(request_id, int) else ()
            named = ", ".join(streams) if streams else "a subscription"
            raise VenueError(f"binance refused {named}: {msg['msg']} (code {msg['code']})")
        if "result" in msg and isinstance(request_id, int):
            self._pending.pop(request_id, None)
        return None


BINANCE = BinanceVenue()
register_venue(VENUE, lambda: BINANCE)
