"""Binance Spot frames to events: the sans-IO decoder (see ``binance.py`` for the rest).

Combined-stream frames (``{"stream": ..., "data": ...}``) are routed by their stream name, which
also covers the payloads that carry no ``e`` field (``bookTicker``, ``depth<N>``). Raw frames
(``/ws`` recordings, or files of bare payloads) are routed by ``e`` and, failing that, by keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from operator import length_hint
from typing import Any

import msgspec
import orjson

from .._build import (
    TradeFiller,
    build_book,
    build_book_update,
    build_candle,
    build_quote,
    build_ticker,
)
from .._errors import DecodeError
from .._events import Event, Level, Trade
from .._feed import RawFrame
from ._common import make_decode_error

__all__ = ["VENUE", "BinanceDecoder"]

VENUE = "binance"
_MS = 1_000_000  # ns per ms

Route = Callable[[Any, int], Event]


# -- decoding -------------------------------------------------------------------------------
#
# The per-frame path: one orjson.loads, one dict lookup of the stream name, one route call that
# builds the event straight from the parsed dict, with a fast constructor (see _build.py).
# A run of trades only, the commonest and busiest, goes faster still: while every payload a
# decoder has seen was a trade, it decodes each frame with msgspec straight into a struct of the
# six fields a Trade needs, with no dicts and no key lookups, and only what msgspec refuses
# takes the dict path. The first payload of another kind ends that for the decoder.
# Anything unexpected (a missing key, a wrong type, a frame msgspec refuses) falls out as an
# exception and takes the slow path, which decodes it with orjson and the stream's route (the
# reference), or diagnoses it; never on the fast path.


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


def _make_trade(
    symbol: Any,
    ts: Any,
    p: Any,
    q: Any,
    m: Any,
    trade_id: Any,
    recv_ts: int,
    aggregate: bool = False,
) -> Event:
    """A ``trade`` or ``aggTrade`` payload's fields as a :class:`~irisflow.Trade`, built in
    place.

    The hottest route: the time check, the Decimal cache and ``build_trade`` are written out
    here (the builder's call was about a twelfth of the route's instructions).
    """
    if type(ts) is not int:
        raise TypeError("expected an integer time in ms")
    try:
        price = _DECIMALS[p]
    except KeyError:
        price = _new_decimal(p)
    try:
        qty = _DECIMALS[q]
    except KeyError:
        qty = _new_decimal(q)
    trade: Any = TradeFiller()
    trade.venue = VENUE
    trade.symbol = symbol
    trade.ts = ts * _MS
    trade.recv_ts = recv_ts
    trade.price = price
    trade.qty = qty
    trade.side = "sell" if m else "buy"  # m: the buyer was the maker: the taker sold
    trade.trade_id = trade_id
    trade.aggregate = aggregate
    trade.__class__ = Trade
    return trade  # type: ignore[no-any-return]


def _trade(d: Any, recv_ts: int) -> Event:
    return _make_trade(d["s"], d["T"], d["p"], d["q"], d["m"], d["t"], recv_ts)


class _TradeData(msgspec.Struct, tag_field="e", tag="trade"):
    """What a ``trade`` payload holds that a Trade needs; its other keys are skipped unread.
    Any other ``e`` (``aggTrade``, ...) is refused at once."""

    s: str
    T: int
    p: str
    q: str
    m: bool
    t: int


class _TradeFrame(msgspec.Struct):
    """A combined-stream frame whose data is a trade (the stream name is not read: only a
    decoder that has seen nothing but trades tries this)."""

    data: _TradeData


_decode_trade_frame = msgspec.json.Decoder(_TradeFrame).decode


def _agg_trade(d: Any, recv_ts: int) -> Event:
    return _make_trade(d["s"], d["T"], d["p"], d["q"], d["m"], d["a"], recv_ts, True)


def _kline(d: Any, recv_ts: int) -> Event:
    k = d["k"]
    return build_candle(
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
    return build_ticker(
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
    return build_ticker(
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
    return build_quote(
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
    return build_book_update(
        VENUE, d["s"], _ms(d["E"]), recv_ts, d["U"], d["u"], _levels(d["b"]), _levels(d["a"])
    )


def _partial_depth(symbol: str) -> Route:
    # depth<N> payloads have no symbol and no time: the symbol comes from the stream name.
    def route(d: Any, recv_ts: int) -> Event:
        return build_book(
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


def _diagnose(frame: RawFrame, exc: BaseException) -> DecodeError:
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
        self._routes: dict[str, Route] = {}
        """Streams whose ``data`` is one object, and their routes: the fast path's table.
        Array streams (``!miniTicker@arr``) and streams without market data stay out of it,
        so the per-frame loop needs no test of the payload's type and no ``None`` route."""
        self._trades_only = True
        """Whether every payload seen so far was a trade: while it holds, frames are decoded
        as trades by msgspec first (the usual ``--channels trade`` run). The first payload of
        any other kind turns it off for good, and frames go straight to the dict path."""

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
        append = out.append
        todo = iter(frames)
        if self._trades_only:
            self._decode_trades(todo, len(frames), recv_ts, out, errors)
        for frame in todo:  # what _decode_trades left, if anything
            try:
                msg = loads(frame)
                append(routes[msg["stream"]](msg["data"], recv_ts))
            except Exception as exc:  # any surprise, the slow path sorts it out
                error = self._slow(frame, recv_ts, out, exc)
                if error is not None:
                    # The frame's place, worked out only here: no enumerate on every frame.
                    errors.append((len(frames) - length_hint(todo) - 1, error))

    def _decode_trades(
        self,
        todo: Iterator[RawFrame],
        count: int,
        recv_ts: int,
        out: list[Event],
        errors: list[tuple[int, DecodeError]],
    ) -> None:
        """:meth:`decode_batch` while only trades were seen: msgspec first, for every frame.

        Stops after the first payload of another kind, leaving the rest of ``todo`` to the
        dict path.
        """
        decode_trade_frame, make_trade, append = _decode_trade_frame, _make_trade, out.append
        for frame in todo:
            try:
                d = decode_trade_frame(frame).data
                append(make_trade(d.s, d.T, d.p, d.q, d.m, d.t, recv_ts))
            except Exception as exc:  # not a trade, or a bad one: the slow path decides
                error = self._slow(frame, recv_ts, out, exc)
                if error is not None:
                    errors.append((count - length_hint(todo) - 1, error))
                if not self._trades_only:
                    return

    def _slow(
        self, frame: RawFrame, recv_ts: int, out: list[Event], exc: BaseException
    ) -> DecodeError | None:
        """Decode a frame the fast path could not: a new stream, an array stream, a stream
        without market data, a raw payload, or a bad frame."""
        mark = len(out)
        try:
            msg = orjson.loads(frame)
            if isinstance(msg, dict) and isinstance(msg.get("stream"), str) and "data" in msg:
                stream, data = msg["stream"], msg["data"]
                route = self._routes.get(stream) or _route_for_stream(stream)
                if route is None:
                    return None  # a notice, or a stream without market data
                if isinstance(data, list):
                    out.extend([route(item, recv_ts) for item in data])
                else:
                    out.append(route(data, recv_ts))
                    self._routes[stream] = route  # only once a frame of it decoded
                if route is not _trade:
                    self._trades_only = False
            else:
                self._decode_raw(msg, recv_ts, out)
                if len(out) > mark:  # a raw payload (a control reply decodes to nothing)
                    self._trades_only = False
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
