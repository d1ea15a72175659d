"""Coinbase Advanced Trade public market data: plan, decoder and subscriber.

Wire facts: ``shared/venues.md`` §6.1. irisflow uses the Advanced Trade market-data endpoint
(``wss://advanced-trade-ws.coinbase.com``), whose public channels need no key. Every message is
an envelope ``{"channel", "client_id", "timestamp", "sequence_num", "events": [...]}``;
``sequence_num`` counts every message of the connection, across channels, so a hole in it
means a lost message: the connection is dropped and opened again (the ``level2`` snapshot
that follows a resubscription rebuilds the book) and a gap event marks the hole.

``market_trades.side`` is the *maker's* side (venues.md §6.1): irisflow's taker side is the
opposite. The trades Coinbase sends as a snapshot on every subscription are real trades and
are emitted, but only once: the decoder remembers the last 4096 trade ids per product.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import trio

from .._build import build_book, build_book_update, build_candle, build_quote, build_trade
from .._errors import DecodeError, UsageError, VenueError
from .._events import Book, BookUpdate, Candle, Event, Level, Quote, Trade
from .._feed import FeedItem, FeedStats, RawFrame
from .._transport import WebSocket
from .._venue import ChannelInfo, FeedOptions, Plan, VenueParams, register_venue
from ._common import (
    Reconnect,
    VenueConnection,
    ack_deadline_error,
    make_decode_error,
    run_connections,
)
from ._wire import RecentIds, dec_str, rfc3339_ns

__all__ = ["COINBASE", "CoinbaseDecoder", "CoinbaseVenue"]

VENUE = "coinbase"
DEFAULT_ENDPOINT = "wss://advanced-trade-ws.coinbase.com"
CANDLE_SECONDS = 300
"""Advanced Trade's ``candles`` channel sends five-minute bars only."""
TRADE_IDS_REMEMBERED = 4096

_NS = 1_000_000_000
_SEQUENCE = re.compile(rb'"sequence_num":\s*(\d+)')
_TAKER = {"BUY": "sell", "SELL": "buy"}  # side is the maker's: a maker buy was a taker sell

Route = Callable[[Any, Any, int, list[Event]], None]


def _UNKNOWN(msg: Any, events: Any, recv_ts: int, out: list[Event]) -> None:
    raise AssertionError("a marker for channels without a route; never called")


# -- decoding -------------------------------------------------------------------------------


def _levels(updates: list[Level], *, descending: bool) -> tuple[Level, ...]:
    updates.sort(key=lambda level: level[0], reverse=descending)
    return tuple(updates)


def _trade_id(value: Any) -> int:
    if value.__class__ is not str or not (value.isascii() and value.isdigit()):
        raise ValueError(f"expected a numeric trade id string, got {value!r}")
    return int(value)


class CoinbaseDecoder:
    """Decodes Advanced Trade envelopes into events.

    ``subscriptions``, ``heartbeats``, ``status`` and error messages decode to nothing;
    channels irisflow does not map are counted in :attr:`skipped`.
    """

    def __init__(self) -> None:
        self.skipped: dict[str, int] = {}
        """Messages skipped per unknown channel name (at most 64 names)."""
        self._seen = RecentIds(TRADE_IDS_REMEMBERED)
        self._routes: dict[str, Route | None] = {
            "market_trades": self._market_trades,
            "ticker": self._ticker,
            "candles": self._candles,
            "l2_data": self._l2_data,
            "heartbeats": None,
            "subscriptions": None,
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
        loads = orjson.loads
        routes = self._routes
        for index, frame in enumerate(frames):
            mark = len(out)
            try:
                msg = loads(frame)
                channel = msg.get("channel") if msg.__class__ is dict else None
                if channel is None:
                    if msg.__class__ is dict and msg.get("type") == "error":
                        continue  # the connection reports it
                    raise KeyError("channel")
                route = routes.get(channel, _UNKNOWN)
                if route is _UNKNOWN:
                    self._skip(channel)
                elif route is not None:
                    route(msg, msg["events"], recv_ts, out)
            except Exception as exc:  # any surprise, the slow path explains it
                del out[mark:]
                errors.append((index, _diagnose(frame, exc)))

    def _skip(self, channel: Any) -> None:
        if not isinstance(channel, str):
            raise TypeError(f"channel is not a string: {channel!r}")
        if channel in self.skipped or len(self.skipped) < 64:
            self.skipped[channel] = self.skipped.get(channel, 0) + 1

    def _market_trades(self, msg: Any, events: Any, recv_ts: int, out: list[Event]) -> None:
        trades = [
            build_trade(
                VENUE,
                t["product_id"],
                rfc3339_ns(t["time"]),
                recv_ts,
                dec_str(t["price"]),
                dec_str(t["size"]),
                _TAKER[t["side"]],
                _trade_id(t["trade_id"]),
            )
            for event in events
            for t in event["trades"]
        ]
        if len(trades) > 1:
            # Snapshots list the newest trade first: emit in time order, or event-time windows
            # would count the older ones as late.
            trades.sort(key=lambda trade: trade.ts)
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

    def _ticker(self, msg: Any, events: Any, recv_ts: int, out: list[Event]) -> None:
        ts = rfc3339_ns(msg["timestamp"])
        out.extend(
            [
                build_quote(
                    VENUE,
                    t["product_id"],
                    ts,
                    recv_ts,
                    dec_str(t["best_bid"]),
                    dec_str(t["best_bid_quantity"]),
                    dec_str(t["best_ask"]),
                    dec_str(t["best_ask_quantity"]),
                )
                for event in events
                for t in event["tickers"]
            ]
        )

    def _candles(self, msg: Any, events: Any, recv_ts: int, out: list[Event]) -> None:
        ts = rfc3339_ns(msg["timestamp"])
        for event in events:
            for c in event["candles"]:
                start_text = c["start"]
                if start_text.__class__ is not str or not (
                    start_text.isascii() and start_text.isdigit()
                ):
                    raise ValueError(f"expected Unix seconds as a string, got {start_text!r}")
                start = int(start_text) * _NS
                out.append(
                    build_candle(
                        VENUE,
                        c["product_id"],
                        ts,
                        recv_ts,
                        "5m",
                        start,
                        start + CANDLE_SECONDS * _NS,
                        dec_str(c["open"]),
                        dec_str(c["high"]),
                        dec_str(c["low"]),
                        dec_str(c["close"]),
                        dec_str(c["volume"]),
                        closed=False,  # the running bar is re-sent; no message marks it final
                    )
                )

    def _l2_data(self, msg: Any, events: Any, recv_ts: int, out: list[Event]) -> None:
        ts = rfc3339_ns(msg["timestamp"])
        seq = msg["sequence_num"]
        if seq.__class__ is not int:
            raise TypeError("sequence_num is not an integer")
        for event in events:
            bids: list[Level] = []
            asks: list[Level] = []
            for u in event["updates"]:
                level = (dec_str(u["price_level"]), dec_str(u["new_quantity"]))
                side = u["side"]
                if side == "bid":
                    bids.append(level)
                elif side in ("offer", "ask"):
                    asks.append(level)
                else:
                    raise ValueError(f"unknown book side {side!r}")
            kind = event["type"]
            if kind == "snapshot":
                out.append(
                    build_book(
                        VENUE,
                        event["product_id"],
                        ts,
                        recv_ts,
                        seq,
                        _levels(bids, descending=True),
                        _levels(asks, descending=False),
                    )
                )
            elif kind == "update":
                out.append(
                    build_book_update(
                        VENUE, event["product_id"], ts, recv_ts, seq, seq, tuple(bids), tuple(asks)
                    )
                )
            else:
                raise ValueError(f"unknown l2_data event type {kind!r}")


_STR = "a string"
_FIELDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # channel: (list inside each event, envelope fields, fields of each list element)
    "market_trades": ("trades", (), ("trade_id", "product_id", "price", "size", "side", "time")),
    "ticker": (
        "tickers",
        ("timestamp",),
        ("product_id", "best_bid", "best_bid_quantity", "best_ask", "best_ask_quantity"),
    ),
    "candles": (
        "candles",
        ("timestamp",),
        ("product_id", "start", "open", "high", "low", "close", "volume"),
    ),
    "l2_data": ("updates", ("timestamp", "sequence_num"), ("side", "price_level", "new_quantity")),
}


def _diagnose(frame: RawFrame, exc: BaseException) -> DecodeError:
    """Explain why ``frame`` did not decode, as a path into the frame."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as err:
        return make_decode_error(VENUE, f"invalid JSON ({err})", frame, cause=err)
    if not isinstance(msg, dict):
        return make_decode_error(VENUE, "expected an object @ $", frame, cause=exc)
    channel = msg.get("channel")
    if not isinstance(channel, str):
        what = "missing field" if channel is None else f"expected a string, got {channel!r}"
        return make_decode_error(VENUE, f"{what} @ $.channel", frame, cause=exc)
    inner, envelope, fields = _FIELDS.get(channel, ("", (), ()))
    for name in envelope:
        if name not in msg:
            return make_decode_error(VENUE, f"missing field @ $.{name}", frame, cause=exc)
    events = msg.get("events")
    if not isinstance(events, list):
        return make_decode_error(VENUE, "expected a list @ $.events", frame, cause=exc)
    for i, event in enumerate(events):
        root = f"$.events[{i}]"
        if not isinstance(event, dict):
            return make_decode_error(VENUE, f"expected an object @ {root}", frame, cause=exc)
        if inner and not isinstance(event.get(inner), list):
            return make_decode_error(VENUE, f"expected a list @ {root}.{inner}", frame, cause=exc)
        for j, item in enumerate(event.get(inner, ())):
            path = f"{root}.{inner}[{j}]"
            if not isinstance(item, dict):
                return make_decode_error(VENUE, f"expected an object @ {path}", frame, cause=exc)
            for name in fields:
                if name not in item:
                    return make_decode_error(
                        VENUE, f"missing field @ {path}.{name}", frame, cause=exc
                    )
                if not isinstance(item[name], str):
                    return make_decode_error(
                        VENUE,
                        f"expected {_STR}, got {item[name]!r} @ {path}.{name}",
                        frame,
                        cause=exc,
                    )
    return make_decode_error(VENUE, f"bad value in {channel} message ({exc})", frame, cause=exc)


# -- planning -------------------------------------------------------------------------------

_SYMBOL = re.compile(r"^[A-Z0-9]{1,15}-[A-Z0-9]{1,15}$")
_CHANNELS = {
    "market_trades": "market_trades",
    "trades": "market_trades",
    "trade": "market_trades",
    "ticker": "ticker",
    "candles": "candles",
    "level2": "level2",
    "book": "level2",
    "heartbeats": "heartbeats",
}
_KINDS: dict[str, frozenset[type[Event]]] = {
    "market_trades": frozenset({Trade}),
    "ticker": frozenset({Quote}),
    "candles": frozenset({Candle}),
    "level2": frozenset({Book, BookUpdate}),
    "heartbeats": frozenset(),
}
CHANNELS = (
    ChannelInfo("market_trades", ("trade",), "every trade, batched over ~250 ms (alias: trades)"),
    ChannelInfo("ticker", ("quote",), "best bid and ask with sizes, on every match"),
    ChannelInfo("candles", ("candle",), "five-minute OHLCV bars, updated every second"),
    ChannelInfo(
        "level2",
        ("book", "book_update"),
        "full order book snapshot, then level updates (alias: book)",
    ),
)


def _symbol(raw: str) -> str:
    text = raw.strip().upper().replace("/", "-")
    if not _SYMBOL.match(text):
        raise UsageError(f"bad coinbase product {raw!r}: use the venue's spelling, e.g. BTC-USD")
    return text


def _channel(raw: str) -> str:
    key = raw.strip().lower()
    if key in _CHANNELS:
        return _CHANNELS[key]
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, list(_CHANNELS), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(
        f"unknown coinbase channel {raw!r}{hint}; channels: market_trades (trades), ticker,"
        " candles, level2 (book)"
    )


# -- subscribing ----------------------------------------------------------------------------


class CoinbaseVenue:
    """Coinbase Advanced Trade public market data."""

    name = VENUE
    title = "Coinbase Advanced Trade"
    default_endpoint = DEFAULT_ENDPOINT
    credentials: tuple[str, ...] = ()
    default_channels = ("trades",)

    def channel_info(self) -> Sequence[ChannelInfo]:
        """The channels Coinbase offers (``heartbeats`` is always subscribed)."""
        return CHANNELS

    def plan(
        self,
        symbols: Sequence[str],
        channels: Sequence[str],
        endpoint: str | None = None,
        params: VenueParams = VenueParams(),  # noqa: B008  (frozen, so sharing is safe)
    ) -> Plan:
        """Validate products and channels; streams are ``<channel>:<product>``.

        Raises:
            UsageError: a bad product or channel, or nothing to subscribe.
        """
        chans: list[str] = []
        for raw in channels:
            channel = _channel(raw)
            if channel != "heartbeats" and channel not in chans:
                chans.append(channel)
        if not chans:
            raise UsageError("no channels given: pass --channels, e.g. --channels market_trades")
        syms: list[str] = []
        for raw in symbols:
            sym = _symbol(raw)
            if sym not in syms:
                syms.append(sym)
        if not syms:
            raise UsageError("no products given: pass --symbols, e.g. --symbols BTC-USD,ETH-USD")
        return Plan(
            venue=VENUE,
            endpoint=(endpoint or DEFAULT_ENDPOINT).rstrip("/"),
            symbols=tuple(syms),
            channels=tuple(chans),
            streams=tuple(f"{c}:{s}" for c in chans for s in syms),
            kinds=frozenset().union(*(_KINDS[c] for c in chans)),
        )

    def decoder(self) -> CoinbaseDecoder:
        """A fresh decoder."""
        return CoinbaseDecoder()

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
    """One websocket connection to the Advanced Trade market-data endpoint."""

    venue = VENUE

    def __init__(
        self,
        url: str,
        streams: Sequence[str],
        channels: Sequence[str],
        products: Sequence[str],
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: FeedStats,
    ) -> None:
        super().__init__(url, streams, send, options, stats)
        self._channels = tuple(channels)
        self._products = tuple(products)
        self._pending: set[tuple[str, str]] = set()
        self._next_seq: int | None = None
        self._broken: str | None = None

    async def handshake(self, ws: WebSocket) -> None:
        """Subscribe to ``heartbeats`` and each channel; wait until all are confirmed."""
        self._next_seq = None
        self._broken = None
        # heartbeats is not waited for: whether "subscriptions" lists it is not documented.
        self._pending = {(c, p) for c in self._channels for p in self._products}
        # heartbeats needs no products, but the docs' example names them: harmless either way.
        for channel in ("heartbeats", *self._channels):
            request = {"type": "subscribe", "product_ids": list(self._products), "channel": channel}
            await ws.send(orjson.dumps(request).decode())
        timeout = self.options.ack_timeout
        with trio.move_on_after(timeout) as scope:
            await self.read_until(ws, lambda: not self._pending)
        if scope.cancelled_caught:
            pending = sorted(f"{c}:{p}" for c, p in self._pending)
            raise Reconnect(ack_deadline_error(VENUE, timeout, {0: pending}))

    def is_control(self, frame: RawFrame) -> bool:
        """Check ``sequence_num`` of every frame; pick confirmations, errors and holes."""
        match = _SEQUENCE.search(frame)
        if match is None:
            return True  # errors carry no sequence number
        seq = int(match.group(1))
        expected, self._next_seq = self._next_seq, seq + 1
        if expected is not None and seq != expected and self._broken is None:
            self._broken = f"sequence gap: expected sequence_num {expected}, got {seq}"
            return True
        return b'"subscriptions"' in frame

    def on_control(self, frame: RawFrame) -> str | None:
        """A sequence hole resyncs; an error is fatal; confirmations clear pending ones."""
        if self._broken is not None:
            raise Reconnect(self._broken + " (resync)")
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None  # the decoder reports it
        if not isinstance(msg, dict):
            return None
        if msg.get("type") == "error":
            detail = "; ".join(str(msg[k]) for k in ("message", "reason") if msg.get(k))
            raise VenueError(
                f"coinbase refused the subscription: {detail or 'error'}; check the product ids"
                f" ({', '.join(self._products)}) and channels"
            )
        if msg.get("channel") == "subscriptions":
            for event in msg.get("events") or ():
                subs = event.get("subscriptions") if isinstance(event, dict) else None
                if not isinstance(subs, dict):
                    continue
                for channel, products in subs.items():
                    name = "level2" if channel == "l2_data" else channel
                    for product in products if isinstance(products, list) else ():
                        self._pending.discard((name, product))
        return None


COINBASE = CoinbaseVenue()
register_venue(VENUE, lambda: COINBASE)
