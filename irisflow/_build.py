"""Fast builders for the frozen market-data events: the decoders' per-message allocation.

A frozen attrs class sets each field in ``__init__`` through ``object.__setattr__``, because its
own ``__setattr__`` refuses writes. That is a method call per field, about four times the cost
of a plain slot store; for a nine-field :class:`~irisflow.Trade` it was most of the time a
decoder spends on a message. The ``build_*`` functions here make the same instance in a
cheaper way:

1. :func:`filler` makes, once per class, a private subclass that adds no slots and restores
   ``object``'s ``__setattr__`` and ``__delattr__``, so attribute stores on its instances are
   plain slot stores;
2. a builder makes an instance of that subclass, stores every field, and then sets the
   instance's ``__class__`` to the event class. The layouts are identical, so CPython allows
   the switch.

A route that runs for nearly every message (Binance ``trade``) may do the same in place, with
:data:`TradeFiller`, and save the builder's call.

What comes out is an instance of the event class itself: frozen, equal and hashing as one built
by ``__init__``. The builders take the class's arguments in the class's order, with its
defaults; the tests build every field of every kind both ways and compare, so a field added to
a class and not to its builder fails there. Only classes whose fields have no validators,
converters or factories may have a builder (:func:`filler` refuses the others).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

import attrs

from ._events import Book, BookUpdate, Candle, Level, Quote, Ticker, Trade

__all__ = [
    "TradeFiller",
    "build_book",
    "build_book_update",
    "build_candle",
    "build_quote",
    "build_ticker",
    "build_trade",
    "filler",
]

_T = TypeVar("_T")


def filler(cls: type[_T]) -> type[_T]:
    """The subclass of ``cls`` whose instances take plain slot stores (see the module docs).

    Raises:
        TypeError: ``cls`` is not an attrs class whose fields can simply be set in order (a
            validator, converter, factory default, alias, keyword-only field, init hook or hash
            cache would be skipped or misplaced).
    """
    if not attrs.has(cls):
        raise TypeError(f"{cls.__name__} is not an attrs class")
    for hook in ("__attrs_pre_init__", "__attrs_post_init__", "_attrs_cached_hash"):
        if hasattr(cls, hook):
            raise TypeError(f"{cls.__name__} has {hook}, which a builder would skip")
    for field in attrs.fields(cls):
        if (
            field.validator is not None
            or field.converter is not None
            or not field.init
            or field.kw_only
            or field.alias != field.name
            or isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
        ):
            raise TypeError(f"field {field.name!r} of {cls.__name__} needs attrs' __init__")
    namespace: dict[str, Any] = {
        "__slots__": (),
        # ``Filler()`` takes no arguments and sets nothing: cheaper than ``object.__new__``.
        "__init__": object.__init__,
        # Both: CPython takes the plain slot store only when neither is overridden.
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
        "__module__": cls.__module__,
    }
    return type(f"_{cls.__name__}Filler", (cls,), namespace)


TradeFiller = filler(Trade)
"""Fill one of these, then set its ``__class__`` to :class:`~irisflow.Trade` (see above)."""
_QuoteFiller = filler(Quote)
_CandleFiller = filler(Candle)
_TickerFiller = filler(Ticker)
_BookFiller = filler(Book)
_BookUpdateFiller = filler(BookUpdate)


def build_trade(
    venue: str,
    symbol: str,
    ts: int,
    recv_ts: int,
    price: Decimal,
    qty: Decimal,
    side: str,
    trade_id: int | None,
    aggregate: bool = False,
) -> Trade:
    """``Trade(...)``, faster."""
    o: Any = TradeFiller()
    o.venue = venue
    o.symbol = symbol
    o.ts = ts
    o.recv_ts = recv_ts
    o.price = price
    o.qty = qty
    o.side = side
    o.trade_id = trade_id
    o.aggregate = aggregate
    o.__class__ = Trade
    return o  # type: ignore[no-any-return]


def build_quote(
    venue: str,
    symbol: str,
    ts: int,
    recv_ts: int,
    bid_price: Decimal,
    bid_qty: Decimal | None,
    ask_price: Decimal,
    ask_qty: Decimal | None,
    update_id: int | None = None,
) -> Quote:
    """``Quote(...)``, faster."""
    o: Any = _QuoteFiller()
    o.venue = venue
    o.symbol = symbol
    o.ts = ts
    o.recv_ts = recv_ts
    o.bid_price = bid_price
    o.bid_qty = bid_qty
    o.ask_price = ask_price
    o.ask_qty = ask_qty
    o.update_id = update_id
    o.__class__ = Quote
    return o  # type: ignore[no-any-return]


def build_candle(
    venue: str,
    symbol: str,
    ts: int,
    recv_ts: int,
    interval: str,
    start: int,
    end: int,
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
    volume: Decimal,
    quote_volume: Decimal | None = None,
    trades: int | None = None,
    closed: bool = True,
) -> Candle:
    """``Candle(...)``, faster."""
    o: Any = _CandleFiller()
    o.venue = venue
    o.symbol = symbol
    o.ts = ts
    o.recv_ts = recv_ts
    o.interval = interval
    o.start = start
    o.end = end
    o.open = open
    o.high = high
    o.low = low
    o.close = close
    o.volume = volume
    o.quote_volume = quote_volume
    o.trades = trades
    o.closed = closed
    o.__class__ = Candle
    return o  # type: ignore[no-any-return]


def build_ticker(
    venue: str,
    symbol: str,
    ts: int,
    recv_ts: int,
    window: str,
    last: Decimal,
    open: Decimal,
    high: Decimal,
    low: Decimal,
    volume: Decimal,
    quote_volume: Decimal,
    change: Decimal | None = None,
    change_pct: Decimal | None = None,
    vwap: Decimal | None = None,
    bid_price: Decimal | None = None,
    bid_qty: Decimal | None = None,
    ask_price: Decimal | None = None,
    ask_qty: Decimal | None = None,
    trades: int | None = None,
) -> Ticker:
    """``Ticker(...)``, faster."""
    o: Any = _TickerFiller()
    o.venue = venue
    o.symbol = symbol
    o.ts = ts
    o.recv_ts = recv_ts
    o.window = window
    o.last = last
    o.open = open
    o.high = high
    o.low = low
    o.volume = volume
    o.quote_volume = quote_volume
    o.change = change
    o.change_pct = change_pct
    o.vwap = vwap
    o.bid_price = bid_price
    o.bid_qty = bid_qty
    o.ask_price = ask_price
    o.ask_qty = ask_qty
    o.trades = trades
    o.__class__ = Ticker
    return o  # type: ignore[no-any-return]


def build_book(
    venue: str,
    symbol: str,
    ts: int,
    recv_ts: int,
    update_id: int | None,
    bids: tuple[Level, ...],
    asks: tuple[Level, ...],
) -> Book:
    """``Book(...)``, faster."""
    o: Any = _BookFiller()
    o.venue = venue
    o.symbol = symbol
    o.ts = ts
    o.recv_ts = recv_ts
    o.update_id = update_id
    o.bids = bids
    o.asks = asks
    o.__class__ = Book
    return o  # type: ignore[no-any-return]


def build_book_update(
    venue: str,
    symbol: str,
    ts: int,
    recv_ts: int,
    first_update_id: int | None,
    last_update_id: int | None,
    bids: tuple[Level, ...],
    asks: tuple[Level, ...],
) -> BookUpdate:
    """``BookUpdate(...)``, faster."""
    o: Any = _BookUpdateFiller()
    o.venue = venue
    o.symbol = symbol
    o.ts = ts
    o.recv_ts = recv_ts
    o.first_update_id = first_update_id
    o.last_update_id = last_update_id
    o.bids = bids
    o.asks = asks
    o.__class__ = BookUpdate
    return o  # type: ignore[no-any-return]
