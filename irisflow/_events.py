"""Typed, normalised events: what every venue decoder produces and every step consumes.

All events share four fields: ``venue``, ``symbol`` (venue-native spelling, upper case),
``ts`` (exchange time) and ``recv_ts`` (local receive time). Times are integers: nanoseconds
since the Unix epoch, UTC. Integers keep the venues' full precision (Coinbase sends
nanoseconds) and cost nothing to compare; :func:`to_datetime` turns one into a ``datetime``.
Prices and quantities are exact :class:`~decimal.Decimal` values, never floats.

Each kind is a frozen, slotted attrs class registered under its ``kind`` name, so the filter
language, the JSON lines writer and ``irisflow venues`` can list kinds and fields by name.
"""

from __future__ import annotations

import datetime as _dt
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import attrs

__all__ = [
    "KINDS",
    "Book",
    "BookUpdate",
    "Candle",
    "Event",
    "Gap",
    "Level",
    "Quote",
    "Ticker",
    "Trade",
    "described",
    "event_kind",
    "field_doc",
    "is_time_field",
    "to_datetime",
]

Level = tuple[Decimal, Decimal]
"""One order-book level: ``(price, quantity)``."""

KINDS: dict[str, type[Event]] = {}
"""Every registered event kind by its ``kind`` name, in registration order."""

_E = TypeVar("_E", bound="type[Event]")


def described(text: str, *, time: bool = False, bigint: bool = False, **kwargs: Any) -> Any:
    """An attrs field of an event kind, with its one-line description.

    Every event module declares its fields with this, so ``irisflow venues`` and the docs can
    show them. ``time`` marks an int-ns time (JSON lines show ISO-8601 UTC); ``bigint`` an int
    that may pass 64 bits (JSON lines show it as text). ``kwargs`` go to ``attrs.field``.
    """
    metadata: dict[str, object] = {"doc": text}
    if time:
        metadata["time"] = True
    if bigint:
        metadata["bigint"] = True
    return attrs.field(metadata=metadata, **kwargs)


def _doc(text: str) -> Any:
    return described(text)


def _time(text: str) -> Any:
    return described(text, time=True)


def _opt(text: str) -> Any:
    return described(text, default=None)


def event_kind(cls: _E) -> _E:
    """Register an event class under its ``kind`` name (a class decorator).

    Raises:
        ValueError: another class already holds that kind name.
    """
    kind = cls.kind
    if kind in KINDS and KINDS[kind] is not cls:
        raise ValueError(f"event kind {kind!r} is already registered by {KINDS[kind].__name__}")
    KINDS[kind] = cls
    return cls


def field_doc(cls: type[Event], name: str) -> str:
    """The one-line description of field ``name`` of event class ``cls``."""
    field = attrs.fields_dict(cls)[name]
    return str(field.metadata.get("doc", ""))


def is_time_field(cls: type[Event], name: str) -> bool:
    """Whether field ``name`` of ``cls`` holds a time (int ns since the epoch)."""
    return bool(attrs.fields_dict(cls)[name].metadata.get("time", False))


def to_datetime(ns: int) -> _dt.datetime:
    """Turn an irisflow timestamp (ns since the epoch) into an aware UTC ``datetime``.

    Sub-microsecond digits are dropped, as ``datetime`` cannot hold them.
    """
    seconds, rest = divmod(ns, 1_000_000_000)
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC) + _dt.timedelta(microseconds=rest // 1000)


@attrs.frozen
class Event:
    """Fields every event has. Not produced on its own: see the kinds below."""

    kind: ClassVar[str] = "event"

    venue: str = _doc("venue name, e.g. 'binance'")
    symbol: str = _doc("venue-native symbol, upper case, e.g. 'BTCUSDT'")
    ts: int = _time("exchange time, ns since the Unix epoch (UTC)")
    recv_ts: int = _time("local receive time, ns since the Unix epoch (UTC)")


@event_kind
@attrs.frozen
class Trade(Event):
    """One trade (Binance ``trade``), or one aggregated taker order (Binance ``aggTrade``)."""

    kind: ClassVar[str] = "trade"

    price: Decimal = _doc("trade price, quote currency per unit of base")
    qty: Decimal = _doc("traded quantity, units of base")
    side: str = _doc("taker side: 'buy', 'sell', or 'unknown' where the venue does not say")
    trade_id: int | None = _doc("venue trade id (aggregate id for Binance aggTrade); None if none")
    aggregate: bool = attrs.field(
        default=False,
        metadata={"doc": "true for Binance aggTrade: one taker order, maybe several trades"},
    )


@event_kind
@attrs.frozen
class Quote(Event):
    """Best bid and offer (Binance ``bookTicker``)."""

    kind: ClassVar[str] = "quote"

    bid_price: Decimal = _doc("best bid price, quote currency")
    bid_qty: Decimal | None = _doc("quantity at the best bid, units of base (None: not sent)")
    ask_price: Decimal = _doc("best ask price, quote currency")
    ask_qty: Decimal | None = _doc("quantity at the best ask, units of base (None: not sent)")
    update_id: int | None = _opt("order-book update id, when the venue sends one")


@event_kind
@attrs.frozen
class Candle(Event):
    """An OHLCV bar from the venue (Binance ``kline_<interval>``); re-sent until closed."""

    kind: ClassVar[str] = "candle"

    interval: str = _doc("bar length in the venue's notation, e.g. '1m'")
    start: int = _time("bar open time, ns since the epoch")
    end: int = _time("bar close time, ns since the epoch")
    open: Decimal = _doc("first price in the bar")
    high: Decimal = _doc("highest price in the bar")
    low: Decimal = _doc("lowest price in the bar")
    close: Decimal = _doc("last price in the bar so far")
    volume: Decimal = _doc("traded quantity, units of base")
    quote_volume: Decimal | None = _opt("traded value, quote currency")
    trades: int | None = _opt("number of trades in the bar")
    closed: bool = attrs.field(default=True, metadata={"doc": "true once the bar is final"})


@event_kind
@attrs.frozen
class Ticker(Event):
    """Rolling-window statistics (Binance ``24hrTicker`` and ``24hrMiniTicker``)."""

    kind: ClassVar[str] = "ticker"

    window: str = _doc("length of the rolling window, e.g. '24h'")
    last: Decimal = _doc("last traded price")
    open: Decimal = _doc("price at the start of the window")
    high: Decimal = _doc("highest price in the window")
    low: Decimal = _doc("lowest price in the window")
    volume: Decimal = _doc("traded quantity in the window, units of base")
    quote_volume: Decimal = _doc("traded value in the window, quote currency")
    change: Decimal | None = _opt("last minus open, quote currency (full ticker only)")
    change_pct: Decimal | None = _opt("change in percent of open (full ticker only)")
    vwap: Decimal | None = _opt("volume-weighted average price (full ticker only)")
    bid_price: Decimal | None = _opt("best bid price (full ticker only)")
    bid_qty: Decimal | None = _opt("quantity at the best bid (full ticker only)")
    ask_price: Decimal | None = _opt("best ask price (full ticker only)")
    ask_qty: Decimal | None = _opt("quantity at the best ask (full ticker only)")
    trades: int | None = _opt("number of trades in the window (full ticker only)")


@event_kind
@attrs.frozen
class Book(Event):
    """A partial order-book snapshot: the top N levels (Binance ``depth<N>``)."""

    kind: ClassVar[str] = "book"

    update_id: int | None = _doc("order-book update id or sequence of the snapshot, if any")
    bids: tuple[Level, ...] = _doc("bid levels (price, qty), best first")
    asks: tuple[Level, ...] = _doc("ask levels (price, qty), best first")


@event_kind
@attrs.frozen
class BookUpdate(Event):
    """A diff of the order book (Binance ``depthUpdate``); a qty of 0 removes the level."""

    kind: ClassVar[str] = "book_update"

    first_update_id: int | None = _doc("first update id in this diff (Binance U), if any")
    last_update_id: int | None = _doc("last update id in this diff (Binance u), if any")
    bids: tuple[Level, ...] = _doc("changed bid levels (price, absolute qty)")
    asks: tuple[Level, ...] = _doc("changed ask levels (price, absolute qty)")


@event_kind
@attrs.frozen
class Gap(Event):
    """Data may be missing: a connection dropped between ``start`` and ``end``.

    ``symbol`` is ``'*'``; ``ts`` equals ``end``. Gaps pass every filter, so an output always
    shows where its data has holes.
    """

    kind: ClassVar[str] = "gap"

    streams: tuple[str, ...] = _doc("the venue streams affected")
    start: int = _time("when the data stopped, ns since the epoch")
    end: int = _time("when the data resumed (or irisflow stopped), ns since the epoch")
    cause: str = _doc("why, e.g. 'connection closed (1006)' or 'stale: no data for 30s'")
