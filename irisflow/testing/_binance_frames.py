"""Binance Spot payload builders: dicts shaped exactly like the venue's market-stream events.

Each builder returns the event object of one stream (``venues.md`` section 1.6) with Binance's
key names, key order and types: prices and quantities as strings with eight decimals
(``"94250.01000000"``), ids and times (ms) as integers. Serialise with :func:`frame_text`,
which writes compact JSON the way Binance does, optionally wrapped for a combined stream.

Numbers may be given as :class:`~decimal.Decimal`, ``str``, ``int`` or ``float``; they are
rounded half-even to the wire's decimals.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Final

import orjson

from .._errors import UsageError
from ._binance_protocol import KLINE_INTERVALS

__all__ = [
    "EXAMPLE_COMBINED_TRADE",
    "EXAMPLE_OPEN_KLINE",
    "EXAMPLE_RAW_DEPTH_UPDATE",
    "EXAMPLE_SUBSCRIBE_REQUEST",
    "EXAMPLE_SUBSCRIBE_RESPONSE",
    "Number",
    "agg_trade",
    "book_ticker",
    "combined",
    "depth_update",
    "frame_text",
    "kline",
    "mini_ticker",
    "partial_depth",
    "server_shutdown",
    "ticker",
    "trade",
]

Number = Decimal | str | int | float
"""A price, quantity or volume as the builders accept it."""

# The constructed examples of venues.md section 1.8 (Binance spot), verbatim.

EXAMPLE_COMBINED_TRADE: Final = (
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1767225600123,"s":"BTCUSDT",'
    '"t":5123456789,"p":"94250.01000000","q":"0.00530000","T":1767225600122,"m":false,"M":true}}'
)
"""A combined-stream trade frame."""

EXAMPLE_SUBSCRIBE_REQUEST: Final = (
    '{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms","btcusdt@bookTicker"],"id":7}'
)
"""A SUBSCRIBE request, answered by :data:`EXAMPLE_SUBSCRIBE_RESPONSE`."""

EXAMPLE_SUBSCRIBE_RESPONSE: Final = '{"result":null,"id":7}'
"""The reply to :data:`EXAMPLE_SUBSCRIBE_REQUEST`."""

EXAMPLE_RAW_DEPTH_UPDATE: Final = (
    '{"e":"depthUpdate","E":1767225600450,"s":"BTCUSDT","U":71234567890,"u":71234567902,'
    '"b":[["94249.99000000","1.20450000"],["94249.50000000","0.00000000"]],'
    '"a":[["94250.01000000","0.33100000"]]}'
)
"""A diff-depth event as a raw (``/ws``) connection receives it."""

EXAMPLE_OPEN_KLINE: Final = (
    '{"e":"kline","E":1767225602000,"s":"ETHUSDT","k":{"t":1767225600000,"T":1767225659999,'
    '"s":"ETHUSDT","i":"1m","f":2911000001,"L":2911000188,"o":"3301.15000000",'
    '"c":"3302.40000000","h":"3302.90000000","l":"3300.80000000","v":"41.77210000","n":188,'
    '"x":false,"q":"137910.55310000","V":"25.10000000","Q":"82866.10300000","B":"0"}}'
)
"""A raw kline event for a bar that is still open."""

_INTERVAL_MS: Final = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
_DAY_MS: Final = 86_400_000


def _dec(value: Number) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    try:
        return Decimal(value)
    except ArithmeticError:
        raise UsageError(f"not a number: {value!r} (give a Decimal, int, float or str)") from None


def fmt(value: Number, places: int = 8) -> str:
    """Format a number the way Binance does: fixed point, ``places`` decimals, no ``-0``."""
    d = _dec(value).quantize(Decimal(1).scaleb(-places))
    if d.is_zero():
        d = abs(d)
    return f"{d:f}"


def _levels(levels: Iterable[tuple[Number, Number]]) -> list[list[str]]:
    return [[fmt(price), fmt(qty)] for price, qty in levels]


def _close_ms(interval: str, start_ms: int) -> int:
    if interval == "1M":
        start = _dt.datetime.fromtimestamp(start_ms / 1000, _dt.UTC)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        nxt = _dt.datetime(year, month, 1, tzinfo=_dt.UTC)
        return int(nxt.timestamp()) * 1000 - 1
    return start_ms + _INTERVAL_MS[interval] - 1


def trade(
    symbol: str,
    *,
    price: Number,
    qty: Number,
    trade_id: int,
    time_ms: int,
    buyer_maker: bool,
    event_time_ms: int | None = None,
) -> dict[str, Any]:
    """A ``<symbol>@trade`` event.

    Args:
        symbol: The symbol in any case; the payload carries it upper case.
        price: Trade price.
        qty: Traded quantity.
        trade_id: Trade id (``t``).
        time_ms: Trade time (``T``), ms since the epoch.
        buyer_maker: True if the buyer was the maker, i.e. the taker sold (``m``).
        event_time_ms: Event time (``E``); defaults to ``time_ms``.
    """
    return {
        "e": "trade",
        "E": time_ms if event_time_ms is None else event_time_ms,
        "s": symbol.upper(),
        "t": trade_id,
        "p": fmt(price),
        "q": fmt(qty),
        "T": time_ms,
        "m": buyer_maker,
        "M": True,
    }


def agg_trade(
    symbol: str,
    *,
    price: Number,
    qty: Number,
    agg_id: int,
    first_id: int,
    last_id: int,
    time_ms: int,
    buyer_maker: bool,
    event_time_ms: int | None = None,
) -> dict[str, Any]:
    """A ``<symbol>@aggTrade`` event: the trades ``first_id..last_id`` of one taker order.

    Args:
        symbol: The symbol in any case; the payload carries it upper case.
        price: Price of the aggregated trades.
        qty: Their total quantity.
        agg_id: Aggregate trade id (``a``).
        first_id: First trade id (``f``).
        last_id: Last trade id (``l``).
        time_ms: Trade time (``T``), ms since the epoch.
        buyer_maker: True if the buyer was the maker (``m``).
        event_time_ms: Event time (``E``); defaults to ``time_ms``.
    """
    return {
        "e": "aggTrade",
        "E": time_ms if event_time_ms is None else event_time_ms,
        "s": symbol.upper(),
        "a": agg_id,
        "p": fmt(price),
        "q": fmt(qty),
        "f": first_id,
        "l": last_id,
        "T": time_ms,
        "m": buyer_maker,
        "M": True,
    }


def kline(
    symbol: str,
    interval: str,
    *,
    start_ms: int,
    open: Number,
    high: Number,
    low: Number,
    close: Number,
    volume: Number,
    closed: bool,
    event_time_ms: int | None = None,
    close_ms: int | None = None,
    first_id: int = 0,
    last_id: int = 0,
    trades: int = 0,
    quote_volume: Number = 0,
    taker_buy_volume: Number = 0,
    taker_buy_quote_volume: Number = 0,
) -> dict[str, Any]:
    """A ``<symbol>@kline_<interval>`` event.

    Args:
        symbol: The symbol in any case; the payload carries it upper case.
        interval: One of Binance's intervals, e.g. ``"1m"``.
        start_ms: Bar open time (``t``), ms since the epoch.
        open: First price (``o``).
        high: Highest price (``h``).
        low: Lowest price (``l``).
        close: Last price so far (``c``).
        volume: Base volume (``v``).
        closed: Whether the bar is final (``x``).
        event_time_ms: Event time (``E``); defaults to the close time for a closed bar and to
            ``start_ms`` otherwise.
        close_ms: Bar close time (``T``); defaults to the last ms of the interval.
        first_id: First trade id (``f``).
        last_id: Last trade id (``L``).
        trades: Number of trades (``n``).
        quote_volume: Quote volume (``q``).
        taker_buy_volume: Taker-buy base volume (``V``).
        taker_buy_quote_volume: Taker-buy quote volume (``Q``).

    Raises:
        UsageError: ``interval`` is not a Binance interval.
    """
    if interval not in KLINE_INTERVALS:
        raise UsageError(
            f"unknown kline interval {interval!r} (use one of {', '.join(KLINE_INTERVALS)})"
        )
    end = _close_ms(interval, start_ms) if close_ms is None else close_ms
    if event_time_ms is None:
        event_time_ms = end if closed else start_ms
    sym = symbol.upper()
    return {
        "e": "kline",
        "E": event_time_ms,
        "s": sym,
        "k": {
            "t": start_ms,
            "T": end,
            "s": sym,
            "i": interval,
            "f": first_id,
            "L": last_id,
            "o": fmt(open),
            "c": fmt(close),
            "h": fmt(high),
            "l": fmt(low),
            "v": fmt(volume),
            "n": trades,
            "x": closed,
            "q": fmt(quote_volume),
            "V": fmt(taker_buy_volume),
            "Q": fmt(taker_buy_quote_volume),
            "B": "0",
        },
    }


def mini_ticker(
    symbol: str,
    *,
    event_time_ms: int,
    close: Number,
    open: Number,
    high: Number,
    low: Number,
    volume: Number,
    quote_volume: Number,
) -> dict[str, Any]:
    """A ``<symbol>@miniTicker`` event (24-hour rolling window).

    Args:
        symbol: The symbol in any case; the payload carries it upper case.
        event_time_ms: Event time (``E``), ms since the epoch.
        close: Last price (``c``).
        open: Price 24 hours ago (``o``).
        high: 24-hour high (``h``).
        low: 24-hour low (``l``).
        volume: 24-hour base volume (``v``).
        quote_volume: 24-hour quote volume (``q``).
    """
    return {
        "e": "24hrMiniTicker",
        "E": event_time_ms,
        "s": symbol.upper(),
        "c": fmt(close),
        "o": fmt(open),
        "h": fmt(high),
        "l": fmt(low),
        "v": fmt(volume),
        "q": fmt(quote_volume),
    }


def ticker(
    symbol: str,
    *,
    event_time_ms: int,
    last: Number,
    last_qty: Number,
    open: Number,
    high: Number,
    low: Number,
    volume: Number,
    quote_volume: Number,
    bid: Number,
    bid_qty: Number,
    ask: Number,
    ask_qty: Number,
    first_id: int,
    last_id: int,
    trades: int | None = None,
    weighted_avg: Number | None = None,
    prev_close: Number | None = None,
    open_time_ms: int | None = None,
    close_time_ms: int | None = None,
) -> dict[str, Any]:
    """A ``<symbol>@ticker`` event (24-hour rolling window).

    ``p`` (change) and ``P`` (change in percent, three decimals) are computed from ``last``
    and ``open``.

    Args:
        symbol: The symbol in any case; the payload carries it upper case.
        event_time_ms: Event time (``E``), ms since the epoch.
        last: Last price (``c``).
        last_qty: Last quantity (``Q``).
        open: Price 24 hours ago (``o``).
        high: 24-hour high (``h``).
        low: 24-hour low (``l``).
        volume: 24-hour base volume (``v``).
        quote_volume: 24-hour quote volume (``q``).
        bid: Best bid price (``b``).
        bid_qty: Best bid quantity (``B``).
        ask: Best ask price (``a``).
        ask_qty: Best ask quantity (``A``).
        first_id: First trade id in the window (``F``).
        last_id: Last trade id in the window (``L``).
        trades: Trade count (``n``); defaults to ``last_id - first_id + 1``.
        weighted_avg: Weighted average price (``w``); defaults to quote volume / volume.
        prev_close: Last price before the window (``x``); defaults to ``open``.
        open_time_ms: Statistics open time (``O``); defaults to ``close_time_ms`` - 24 h.
        close_time_ms: Statistics close time (``C``); defaults to ``event_time_ms``.
    """
    o, c = _dec(open), _dec(last)
    vol, qvol = _dec(volume), _dec(quote_volume)
    if weighted_avg is None:
        weighted_avg = qvol / vol if vol else c
    close_t = event_time_ms if close_time_ms is None else close_time_ms
    open_t = close_t - _DAY_MS if open_time_ms is None else open_time_ms
    return {
        "e": "24hrTicker",
        "E": event_time_ms,
        "s": symbol.upper(),
        "p": fmt(c - o),
        "P": fmt((c - o) / o * 100 if o else 0, 3),
        "w": fmt(weighted_avg),
        "x": fmt(open if prev_close is None else prev_close),
        "c": fmt(c),
        "Q": fmt(last_qty),
        "b": fmt(bid),
        "B": fmt(bid_qty),
        "a": fmt(ask),
        "A": fmt(ask_qty),
        "o": fmt(o),
        "h": fmt(high),
        "l": fmt(low),
        "v": fmt(vol),
        "q": fmt(qvol),
        "O": open_t,
        "C": close_t,
        "F": first_id,
        "L": last_id,
        "n": last_id - first_id + 1 if trades is None else trades,
    }


def book_ticker(
    symbol: str, *, update_id: int, bid: Number, bid_qty: Number, ask: Number, ask_qty: Number
) -> dict[str, Any]:
    """A ``<symbol>@bookTicker`` event. Spot's has no ``e`` and no ``E``.

    Args:
        symbol: The symbol in any case; the payload carries it upper case.
        update_id: Order-book update id (``u``).
        bid: Best bid price (``b``).
        bid_qty: Best bid quantity (``B``).
        ask: Best ask price (``a``).
        ask_qty: Best ask quantity (``A``).
    """
    return {
        "u": update_id,
        "s": symbol.upper(),
        "b": fmt(bid),
        "B": fmt(bid_qty),
        "a": fmt(ask),
        "A": fmt(ask_qty),
    }


def partial_depth(
    bids: Sequence[tuple[Number, Number]],
    asks: Sequence[tuple[Number, Number]],
    last_update_id: int,
) -> dict[str, Any]:
    """A ``<symbol>@depth<5|10|20>[@100ms]`` snapshot. It names no symbol and no event type.

    Args:
        bids: ``(price, qty)`` levels, best (highest) first.
        asks: ``(price, qty)`` levels, best (lowest) first.
        last_update_id: Order-book update id of the snapshot (``lastUpdateId``).
    """
    return {"lastUpdateId": last_update_id, "bids": _levels(bids), "asks": _levels(asks)}


def depth_update(
    symbol: str,
    first_id: int,
    last_id: int,
    bids: Sequence[tuple[Number, Number]],
    asks: Sequence[tuple[Number, Number]],
    time_ms: int,
) -> dict[str, Any]:
    """A ``<symbol>@depth[@100ms]`` diff event. Quantities are absolute; 0 removes a level.

    Args:
        symbol: The symbol in any case; the payload carries it upper case.
        first_id: First update id in the event (``U``); normally the previous ``u`` + 1.
        last_id: Last update id in the event (``u``).
        bids: Changed ``(price, qty)`` bid levels.
        asks: Changed ``(price, qty)`` ask levels.
        time_ms: Event time (``E``), ms since the epoch.
    """
    return {
        "e": "depthUpdate",
        "E": time_ms,
        "s": symbol.upper(),
        "U": first_id,
        "u": last_id,
        "b": _levels(bids),
        "a": _levels(asks),
    }


def server_shutdown(time_ms: int) -> dict[str, Any]:
    """The ``serverShutdown`` event Binance sends shortly before closing a connection."""
    return {"e": "serverShutdown", "E": time_ms}


def combined(stream: str, data: Any) -> dict[str, Any]:
    """Wrap an event as a combined stream delivers it: ``{"stream":..,"data":..}``."""
    return {"stream": stream, "data": data}


def frame_text(data: Any, stream: str | None = None) -> str:
    """Compact JSON text of a frame, as Binance sends it; wrapped when ``stream`` is given."""
    return orjson.dumps(data if stream is None else combined(stream, data)).decode()
