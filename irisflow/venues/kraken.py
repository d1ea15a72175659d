"""Kraken Spot WebSocket v2: plan, decoder and subscriber.

Wire facts: ``shared/venues.md`` §6.2. One connection to ``wss://ws.kraken.com/v2``; one
``{"method":"subscribe","params":{..},"req_id":n}`` per channel, acknowledged once per symbol
(``success:false`` is fatal). Data arrives as ``{"channel","type":"snapshot"|"update","data"}``
with prices as JSON numbers (see :mod:`irisflow.venues._wire` for exact Decimals).

The ``book`` channel carries a CRC32 checksum of the top ten levels with every message. The
connection keeps its own copy of each book, built from the numbers' *text* (Kraken's checksum
is computed on the digits as sent, trailing zeros included) and truncated to the subscribed
depth, and checks every update: a mismatch drops the connection and subscribes again, so a
fresh snapshot replaces the book, and a gap event marks the hole. If a *snapshot* already
fails the check, the formatting cannot be reproduced (not a lost message): verification is
switched off for that symbol rather than resyncing forever, and ``last_error`` says so.

Trades: irisflow asks for the trade snapshot (the last 50 trades) so that a reconnect fills
what it can of the hole; the decoder remembers the last 4096 trade ids per symbol, so trades
already emitted are not emitted again.
"""

from __future__ import annotations

import heapq
import json
import re
import zlib
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import orjson
import trio

from .._build import build_book, build_book_update, build_candle, build_ticker, build_trade
from .._errors import DecodeError, UsageError, VenueError
from .._events import Book, BookUpdate, Candle, Event, Level, Ticker, Trade
from .._feed import FeedItem, FeedStats, RawFrame
from .._transport import WebSocket
from .._venue import ChannelInfo, FeedOptions, Plan, VenueParams, register_venue
from ._common import (
    Reconnect,
    VenueConnection,
    ack_deadline_error,
    join_url,
    make_decode_error,
    run_connections,
)
from ._wire import RecentIds, dec, loads_exact, rfc3339_ns

__all__ = ["KRAKEN", "KrakenDecoder", "KrakenVenue", "book_checksum"]

VENUE = "kraken"
_CHANNEL = b'{"channel":"'
"""How a channel message starts (replies to methods start with ``{"method"``)."""
_BOOK = b'{"channel":"book"'
DEFAULT_ENDPOINT = "wss://ws.kraken.com/v2"
TRADE_IDS_REMEMBERED = 4096
OHLC_INTERVALS = {
    1: "1m",
    5: "5m",
    15: "15m",
    30: "30m",
    60: "1h",
    240: "4h",
    1440: "1d",
    10080: "1w",
    21600: "15d",
}
BOOK_DEPTHS = (10, 25, 100, 500, 1000)
CHECKSUM_LEVELS = 10

_NS = 1_000_000_000
_SIDES = frozenset({"buy", "sell"})

Route = Callable[[Any, Any, int, list[Event]], None]


# -- decoding -------------------------------------------------------------------------------


def _levels(raw: Any, *, descending: bool | None) -> tuple[Level, ...]:
    levels = [(dec(level["price"]), dec(level["qty"])) for level in raw]
    if descending is not None:
        levels.sort(key=lambda level: level[0], reverse=descending)
    return tuple(levels)


def _time_or(d: Any, key: str, default: int) -> int:
    return rfc3339_ns(d[key]) if key in d else default


def _UNKNOWN(msg: Any, data: Any, recv_ts: int, out: list[Event]) -> None:
    raise AssertionError("a marker for channels without a route; never called")


class KrakenDecoder:
    """Decodes Kraken v2 messages into events.

    Method replies (acks, ``pong``), ``heartbeat`` and ``status`` decode to nothing; channels
    irisflow does not map are counted in :attr:`skipped`.
    """

    def __init__(self) -> None:
        self.skipped: dict[str, int] = {}
        """Messages skipped per unknown channel name (at most 64 names)."""
        self._seen = RecentIds(TRADE_IDS_REMEMBERED)
        self._routes: dict[str, Route | None] = {
            "trade": self._trade,
            "ticker": self._ticker,
            "ohlc": self._ohlc,
            "book": self._book,
            "heartbeat": None,
            "status": None,
        }

    def decode_batch(
        self,
        frames: Sequence[RawFrame],
        recv_ts: int,
        out: list[Event],
        errors: list[tuple[int, DecodeError]],
    ) -> None:
        """Append events of ``frames`` to ``out``, one ``(index, error)`` per bad frame."""
        routes = self._routes
        for index, frame in enumerate(frames):
            mark = len(out)
            try:
                msg = loads_exact(frame)
                if msg.__class__ is not dict:
                    raise TypeError("not an object")
                channel = msg.get("channel")
                if channel is None:
                    if "method" in msg or "error" in msg:
                        continue  # a method reply: the connection looks at it
                    raise KeyError("channel")
                route = routes.get(channel, _UNKNOWN)
                if route is _UNKNOWN:
                    self._skip(channel)
                elif route is not None:
                    data = msg["data"]
                    if data.__class__ is not list:
                        raise TypeError("data is not a list")
                    route(msg, data, recv_ts, out)
            except Exception as exc:  # any surprise, the slow path explains it
                del out[mark:]
                errors.append((index, _diagnose(frame, exc)))

    def _skip(self, channel: Any) -> None:
        if not isinstance(channel, str):
            raise TypeError(f"channel is not a string: {channel!r}")
        if channel in self.skipped or len(self.skipped) < 64:
            self.skipped[channel] = self.skipped.get(channel, 0) + 1

    def _trade(self, msg: Any, data: Any, recv_ts: int, out: list[Event]) -> None:
        trades: list[Trade] = []
        for d in data:
            side = d["side"]
            if side not in _SIDES:
                raise ValueError(f"unknown side {side!r}")
            trade_id = d["trade_id"]
            if trade_id.__class__ is not int:
                raise TypeError("trade_id is not an integer")
            trades.append(
                build_trade(
                    VENUE,
                    d["symbol"],
                    rfc3339_ns(d["timestamp"]),
                    recv_ts,
                    dec(d["price"]),
                    dec(d["qty"]),
                    side,  # Kraken names the taker's side
                    trade_id,
                )
            )
        # Remember ids only once the whole frame decoded (a bad frame must not hide trades).
        keep = [True] * len(trades)
        by_symbol: dict[str, list[int]] = {}
        for i, trade in enumerate(trades):
            by_symbol.setdefault(trade.symbol, []).append(i)
        for symbol, indexes in by_symbol.items():
            fresh = self._seen.fresh(symbol, [trades[i].trade_id for i in indexes])
            for i, new in zip(indexes, fresh, strict=True):
                keep[i] = new
        out.extend([trade for trade, new in zip(trades, keep, strict=True) if new])

    def _ticker(self, msg: Any, data: Any, recv_ts: int, out: list[Event]) -> None:
        for d in data:
            last, change, vwap, volume = (
                dec(d["last"]),
                dec(d["change"]),
                dec(d["vwap"]),
                dec(d["volume"]),
            )
            out.append(
                build_ticker(
                    VENUE,
                    d["symbol"],
                    _time_or(d, "timestamp", recv_ts),
                    recv_ts,
                    "24h",
                    last,
                    last - change,  # Kraken sends the change, not the open
                    dec(d["high"]),
                    dec(d["low"]),
                    volume,
                    vwap * volume,  # quote volume, to the rounding of Kraken's vwap
                    change,
                    dec(d["change_pct"]),
                    vwap,
                    dec(d["bid"]),
                    dec(d["bid_qty"]),
                    dec(d["ask"]),
                    dec(d["ask_qty"]),
                )
            )

    def _ohlc(self, msg: Any, data: Any, recv_ts: int, out: list[Event]) -> None:
        ts = _time_or(msg, "timestamp", recv_ts)
        for d in data:
            minutes = d["interval"]
            label = OHLC_INTERVALS[minutes] if minutes.__class__ is int else None
            if label is None:
                raise ValueError(f"unknown interval {minutes!r}")
            start = rfc3339_ns(d["interval_begin"])
            trades = d.get("trades")
            out.append(
                build_candle(
                    VENUE,
                    d["symbol"],
                    ts,
                    recv_ts,
                    label,
                    start,
                    start + minutes * 60 * _NS,
                    dec(d["open"]),
                    dec(d["high"]),
                    dec(d["low"]),
                    dec(d["close"]),
                    dec(d["volume"]),
                    None,
                    trades if trades.__class__ is int else None,
                    closed=False,  # the running bar is re-sent; no message marks it final
                )
            )

    def _book(self, msg: Any, data: Any, recv_ts: int, out: list[Event]) -> None:
        kind = msg["type"]
        for d in data:
            ts = _time_or(d, "timestamp", recv_ts)
            if kind == "snapshot":
                bids = _levels(d["bids"], descending=True)
                asks = _levels(d["asks"], descending=False)
                out.append(build_book(VENUE, d["symbol"], ts, recv_ts, None, bids, asks))
            elif kind == "update":
                bids = _levels(d["bids"], descending=None)
                asks = _levels(d["asks"], descending=None)
                out.append(
                    build_book_update(VENUE, d["symbol"], ts, recv_ts, None, None, bids, asks)
                )
            else:
                raise ValueError(f"unknown book message type {kind!r}")


_FIELDS: dict[str, tuple[str, ...]] = {
    "trade": ("symbol", "side", "price", "qty", "trade_id", "timestamp"),
    "ticker": ("symbol", "bid", "bid_qty", "ask", "ask_qty", "last", "volume", "vwap", "low"),
    "ohlc": ("symbol", "open", "high", "low", "close", "volume", "interval_begin", "interval"),
    "book": ("symbol", "bids", "asks"),
}
_TEXT_FIELDS = frozenset({"symbol", "side", "timestamp", "interval_begin"})
_LIST_FIELDS = frozenset({"bids", "asks"})
_INT_FIELDS = frozenset({"trade_id", "interval"})


def _diagnose(frame: RawFrame, exc: BaseException) -> DecodeError:
    """Explain why ``frame`` did not decode, as a path into the frame."""
    try:
        msg = loads_exact(frame)
    except Exception as err:  # ValueError, or RecursionError from a deeply nested frame
        return make_decode_error(VENUE, f"invalid JSON ({err})", frame, cause=err)
    if not isinstance(msg, dict):
        return make_decode_error(VENUE, "expected an object @ $", frame, cause=exc)
    channel = msg.get("channel")
    if not isinstance(channel, str):
        what = "missing field" if channel is None else f"expected a string, got {channel!r}"
        return make_decode_error(VENUE, f"{what} @ $.channel", frame, cause=exc)
    data = msg.get("data")
    if not isinstance(data, list):
        return make_decode_error(VENUE, "expected a list @ $.data", frame, cause=exc)
    for i, item in enumerate(data):
        root = f"$.data[{i}]"
        if not isinstance(item, dict):
            return make_decode_error(VENUE, f"expected an object @ {root}", frame, cause=exc)
        for name in _FIELDS.get(channel, ()):
            if name not in item:
                return make_decode_error(VENUE, f"missing field @ {root}.{name}", frame, cause=exc)
            value = item[name]
            if name in _TEXT_FIELDS:
                ok = isinstance(value, str)
                want = "a string"
            elif name in _LIST_FIELDS:
                ok = isinstance(value, list)
                want = "a list"
            elif name in _INT_FIELDS:
                ok = value.__class__ is int
                want = "an integer"
            else:
                ok = value.__class__ in (int, float, Decimal)
                want = "a number"
            if not ok:
                return make_decode_error(
                    VENUE, f"expected {want}, got {value!r} @ {root}.{name}", frame, cause=exc
                )
    return make_decode_error(VENUE, f"bad value in {channel} message ({exc})", frame, cause=exc)


# -- the book checksum ----------------------------------------------------------------------


def _checksum_text(text: str) -> str:
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text.replace(".", "").lstrip("0")


def book_checksum(bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> int:
    """Kraken's CRC32 of the top ten levels, from the numbers' text as sent.

    Args:
        bids: ``(price, qty)`` texts, best (highest) first; only the first ten are used.
        asks: ``(price, qty)`` texts, best (lowest) first; only the first ten are used.

    Returns:
        The checksum as an unsigned 32-bit integer.
    """
    parts = [
        _checksum_text(price) + _checksum_text(qty)
        for side in (asks, bids)
        for price, qty in side[:CHECKSUM_LEVELS]
    ]
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF


class _LocalBook:
    """One symbol's book as text, for the checksum; truncated to the subscribed depth."""

    __slots__ = ("asks", "bids", "depth", "verify")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.verify = True

    def apply(self, bids: Any, asks: Any) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for level in levels:
                price, qty = level["price"], level["qty"]
                key = Decimal(price)
                if Decimal(qty) == 0:
                    side.pop(key, None)
                else:
                    side[key] = (price, qty)
        for side, best in ((self.bids, heapq.nlargest), (self.asks, heapq.nsmallest)):
            if len(side) > self.depth:
                kept = best(self.depth, side)
                for key in set(side) - set(kept):
                    del side[key]

    def checksum(self) -> int:
        bids = [self.bids[k] for k in heapq.nlargest(CHECKSUM_LEVELS, self.bids)]
        asks = [self.asks[k] for k in heapq.nsmallest(CHECKSUM_LEVELS, self.asks)]
        return book_checksum(bids, asks)


# -- planning -------------------------------------------------------------------------------

_SYMBOL = re.compile(r"^[A-Z0-9.]{1,16}/[A-Z0-9.]{1,16}$")
_LABELS = {label: minutes for minutes, label in OHLC_INTERVALS.items()}
_KINDS: dict[str, frozenset[type[Event]]] = {
    "trade": frozenset({Trade}),
    "ticker": frozenset({Ticker}),
    "ohlc": frozenset({Candle}),
    "book": frozenset({Book, BookUpdate}),
}
CHANNELS = (
    ChannelInfo("trade", ("trade",), "every trade with the taker's side (alias: trades)"),
    ChannelInfo("ticker", ("ticker",), "24h statistics with best bid/ask, on every trade"),
    ChannelInfo(
        "ohlc[_<interval>]",
        ("candle",),
        "OHLCV bars; interval 1m (default) 5m 15m 30m 1h 4h 1d 1w 15d (or minutes)",
    ),
    ChannelInfo(
        "book[_<depth>]",
        ("book", "book_update"),
        "order book snapshot then updates, CRC32-checked; depth 10 (default) 25 100 500 1000",
    ),
)


def _channel(raw: str) -> str:
    """``'trade'``, ``'ticker'``, ``'ohlc_<minutes>'`` or ``'book_<depth>'``, or raise."""
    text = raw.strip().lower()
    if text in ("trade", "trades"):
        return "trade"
    if text == "ticker":
        return "ticker"
    base, _, arg = text.partition("_")
    if base == "ohlc":
        minutes = _LABELS.get(arg) if arg else 1
        if minutes is None and arg.isascii() and arg.isdigit() and int(arg) in OHLC_INTERVALS:
            minutes = int(arg)
        if minutes is None:
            raise UsageError(
                f"unknown ohlc interval {arg!r} in kraken channel {raw!r}; intervals:"
                f" {', '.join(_LABELS)} (or minutes: {', '.join(map(str, OHLC_INTERVALS))})"
            )
        return f"ohlc_{minutes}"
    if base == "book":
        depth = int(arg) if arg.isascii() and arg.isdigit() else (10 if not arg else None)
        if depth not in BOOK_DEPTHS:
            raise UsageError(
                f"unknown book depth {arg!r} in kraken channel {raw!r};"
                f" depths: {', '.join(map(str, BOOK_DEPTHS))}"
            )
        return f"book_{depth}"
    raise UsageError(
        f"unknown kraken channel {raw!r}; channels: trade, ticker, ohlc[_<interval>],"
        " book[_<depth>]"
    )


def _symbol(raw: str) -> str:
    text = raw.strip().upper().replace("-", "/")
    if not _SYMBOL.match(text):
        raise UsageError(f"bad kraken symbol {raw!r}: use BASE/QUOTE, e.g. BTC/USD")
    return text


def _request(channel: str, symbols: Sequence[str], req_id: int) -> dict[str, Any]:
    name, _, arg = channel.partition("_")
    params: dict[str, Any] = {"channel": name, "symbol": list(symbols)}
    if name == "trade":
        params["snapshot"] = True  # the last 50 trades: a reconnect fills what it can
    elif name == "ohlc":
        params["interval"] = int(arg)
    elif name == "book":
        params["depth"] = int(arg)
    return {"method": "subscribe", "params": params, "req_id": req_id}


# -- subscribing ----------------------------------------------------------------------------


class KrakenVenue:
    """Kraken Spot WebSocket v2 public market data."""

    name = VENUE
    title = "Kraken Spot (WebSocket v2)"
    default_endpoint = DEFAULT_ENDPOINT
    credentials: tuple[str, ...] = ()
    default_channels = ("trade",)

    def channel_info(self) -> Sequence[ChannelInfo]:
        """The channels Kraken offers."""
        return CHANNELS

    def plan(
        self,
        symbols: Sequence[str],
        channels: Sequence[str],
        endpoint: str | None = None,
        params: VenueParams = VenueParams(),  # noqa: B008  (frozen, so sharing is safe)
    ) -> Plan:
        """Validate symbols and channels; streams are ``<channel>:<symbol>``.

        Raises:
            UsageError: a bad symbol, channel, interval or depth, two book depths, or
                nothing to subscribe.
        """
        chans: list[str] = []
        for raw in channels:
            channel = _channel(raw)
            if channel not in chans:
                chans.append(channel)
        if not chans:
            raise UsageError("no channels given: pass --channels, e.g. --channels trade")
        books = [c for c in chans if c.startswith("book_")]
        if len(books) > 1:
            raise UsageError(f"pick one kraken book depth (got {', '.join(books)})")
        syms: list[str] = []
        for raw in symbols:
            sym = _symbol(raw)
            if sym not in syms:
                syms.append(sym)
        if not syms:
            raise UsageError("no symbols given: pass --symbols, e.g. --symbols BTC/USD")
        return Plan(
            venue=VENUE,
            endpoint=join_url(endpoint or DEFAULT_ENDPOINT, "/v2"),
            symbols=tuple(syms),
            channels=tuple(chans),
            streams=tuple(f"{c}:{s}" for c in chans for s in syms),
            kinds=frozenset().union(*(_KINDS[c.partition("_")[0]] for c in chans)),
        )

    def decoder(self) -> KrakenDecoder:
        """A fresh decoder."""
        return KrakenDecoder()

    async def subscribe(
        self,
        plan: Plan,
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: list[FeedStats],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one connection for the whole plan until cancelled; closes ``send`` at the end."""

        def make(
            streams: Sequence[str], channel: trio.MemorySendChannel[FeedItem], counters: FeedStats
        ) -> _Connection:
            return _Connection(
                plan.endpoint, streams, plan.channels, plan.symbols, channel, options, counters
            )

        # The whole plan fits one connection.
        await run_connections(
            VENUE,
            plan.streams,
            max(1, len(plan.streams)),
            make,
            send,
            stats,
            task_status=task_status,
        )


class _Connection(VenueConnection):
    """One websocket connection to Kraken's public v2 endpoint."""

    venue = VENUE

    def __init__(
        self,
        url: str,
        streams: Sequence[str],
        channels: Sequence[str],
        symbols: Sequence[str],
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: FeedStats,
    ) -> None:
        super().__init__(url, streams, send, options, stats)
        self._channels = tuple(channels)
        self._symbols = tuple(symbols)
        self._depth = next((int(c[5:]) for c in channels if c.startswith("book_")), 0)
        self._next_id = 1
        self._pending: dict[int, tuple[str, set[str]]] = {}
        self._books: dict[str, _LocalBook] = {}
        self._unverifiable: set[str] = set()

    async def handshake(self, ws: WebSocket) -> None:
        """Send one subscribe request per channel and wait for every symbol's ack."""
        self._pending.clear()
        self._books.clear()
        for channel in self._channels:
            req_id = self._next_id
            self._next_id += 1
            self._pending[req_id] = (channel, set(self._symbols))
            await ws.send(orjson.dumps(_request(channel, self._symbols, req_id)).decode())
        timeout = self.options.ack_timeout
        with trio.move_on_after(timeout) as scope:
            await self.read_until(ws, lambda: not self._pending)
        if scope.cancelled_caught:
            pending = {
                req_id: [f"{channel}:{s}" for s in sorted(symbols)]
                for req_id, (channel, symbols) in self._pending.items()
            }
            raise Reconnect(ack_deadline_error(VENUE, timeout, pending))

    def is_control(self, frame: RawFrame) -> bool:
        """Book messages (checksums) and method replies; not trades, tickers, bars, beats."""
        return not frame.startswith(_CHANNEL) or frame.startswith(_BOOK)

    def control_frames(self, frames: Sequence[RawFrame]) -> list[RawFrame]:
        """:meth:`is_control` over one read, inlined (it runs on every frame)."""
        return [f for f in frames if not f.startswith(_CHANNEL) or f.startswith(_BOOK)]

    def on_control(self, frame: RawFrame) -> str | None:
        """Check book checksums (a mismatch resyncs); match acks; refusals are fatal."""
        if frame.startswith(_BOOK) or (b'"channel":"book"' in frame and b'"method"' not in frame):
            self._check_book(frame)
            return None
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None  # the decoder reports it
        if not isinstance(msg, dict) or msg.get("method") != "subscribe":
            return None
        req_id = msg.get("req_id")
        pending = self._pending.get(req_id) if isinstance(req_id, int) else None
        result = msg.get("result")
        symbol = result.get("symbol") if isinstance(result, dict) else msg.get("symbol")
        if msg.get("success") is not True:
            channel = pending[0] if pending else "a channel"
            what = f"{channel} for {symbol}" if isinstance(symbol, str) else channel
            raise VenueError(
                f"kraken refused {what}: {msg.get('error', 'no reason given')};"
                " check the symbols (BASE/QUOTE, e.g. BTC/USD) and the channel options"
            )
        if pending is None and isinstance(result, dict):
            # An ack without our req_id: match it by channel and symbol instead.
            base = result.get("channel")
            pending = next(
                (
                    p
                    for p in self._pending.values()
                    if p[0].partition("_")[0] == base and symbol in p[1]
                ),
                None,
            )
        if pending is not None and isinstance(symbol, str):
            pending[1].discard(symbol)
            if not pending[1]:
                self._pending = {k: v for k, v in self._pending.items() if v is not pending}
        return None

    def _check_book(self, frame: RawFrame) -> None:
        try:
            msg = json.loads(frame, parse_float=str, parse_int=str)
            if msg.get("channel") != "book":
                return
            kind, data = msg["type"], msg["data"]
            for d in data:
                symbol = d["symbol"]
                if kind == "snapshot":
                    book = self._books[symbol] = _LocalBook(self._depth or 10)
                    book.verify = symbol not in self._unverifiable
                else:
                    book = self._books[symbol]
                book.apply(d["bids"], d["asks"])
                if "checksum" not in d or not book.verify:
                    continue
                expected, actual = int(d["checksum"]), book.checksum()
                if expected == actual:
                    continue
                if kind == "snapshot":
                    # Not a lost message: the formatting cannot be reproduced. Stop checking.
                    book.verify = False
                    self._unverifiable.add(symbol)
                    self.stats.last_error = (
                        f"kraken book checksum of {symbol} does not match its snapshot;"
                        " checksum verification is off for it"
                    )
                    continue
                raise Reconnect(
                    f"kraken book checksum mismatch for {symbol}: expected {expected},"
                    f" computed {actual} (resync)"
                )
        except Reconnect:
            raise
        except Exception:
            return  # a malformed book message: the decoder reports it


KRAKEN = KrakenVenue()
register_venue(VENUE, lambda: KRAKEN)
