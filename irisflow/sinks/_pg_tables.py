"""Which table each event kind goes to and how its rows are written: PostgresSink's schema side.

Every kind irisflow produces has a table and a natural key (the migrations' unique indexes):

- market data (``trade`` ... ``gap``): a table per kind (0001; books keyed by depth too, 0007),
  inserted unless stored; candles upsert (an open bar's last update wins, a closed one is final).
  Ids a venue may leave out (``trade_id``, quote sizes, book-diff update ids) are optional
  columns, and the keys read a missing one as -1, so an id-less row still dedupes on the rest of
  its key; a full and a mini ticker of one instant are two rows, and so are a trade and a
  Binance aggTrade with the same number (``aggregate``) (0010).
- pipeline results (``window`` for windows and bars, ``rsi``, ``spike``, ``join``, ``late``):
  ``window_results`` (0008); :func:`~._pg_results.result_row` says how each fills the key
  columns, every other field goes to the jsonb ``values`` (decimals and uint256 as strings,
  times as ISO-8601 UTC). **A complete result is final**: it replaces an incomplete row, and
  only a complete recomputation replaces it, so a window cut short at the end of one run and
  complete in another is stored complete, whatever the order of the runs. A revision (a window
  or RSI corrected after a reorg: ``revision`` in ``values``, absent when 0) replaces its row,
  and within one chunk the highest revision wins.
- chain events (``block``, ``transaction``, ``log``, ``token_transfer``, ``swap``; and
  ``internal_tx``, ``approval``, ``nft_transfer`` from 0012): the chain tables, upserted; a
  stored row is only touched to clear ``removed`` (the event came again after a retraction: its
  block is canonical again) or to set ``confirmed``.
- ``retraction`` and ``confirmation`` change the row they name
  (:func:`~._pg_chain.apply_marks`).
- ``alert``: none. ``irisflow.alerts`` is the outbox of :class:`~irisflow.AlertSink` (one row
  per alert and chat, ``id = "<key>|<chat>"``), which every run with alert rules and a database
  has; a second writer could only add rows no chat owns, never sent.

The tables themselves are built in ``_pg_copy.py`` (:class:`~._pg_copy.Table`: COPY, stage,
merge; times as binary ``timestamptz``, see :func:`~._pg_copy.pg_time`); this module holds the
market data rows and the map of every kind, ``_pg_results.py`` the results and ``_pg_chain.py``
the chain tables and marks.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import attrs

from .._events import Book, BookUpdate, Candle, Event, Gap, Quote, Ticker, Trade
from .._join import Joined
from .._trackers import Rsi, Spike
from .._windows import Late, Window
from ._pg_chain import CHAIN_TABLES
from ._pg_copy import PG_EPOCH_NS, TS, Table, make_table, pg_time
from ._pg_results import RESULTS

__all__ = ["TABLES", "TS", "Table", "pg_time", "sink_tables"]

# --------------------------------------------------------------------------- market data


def _levels(levels: Sequence[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    return [p for p, _ in levels], [q for _, q in levels]


def _trade_row(e: Trade, k: int = PG_EPOCH_NS) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, (e.ts - k) // 1000, (e.recv_ts - k) // 1000,
        e.price, e.qty, e.side, e.trade_id, e.aggregate,
    )  # fmt: skip


def _quote_row(e: Quote, k: int = PG_EPOCH_NS) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, (e.ts - k) // 1000, (e.recv_ts - k) // 1000,
        e.bid_price, e.bid_qty, e.ask_price, e.ask_qty, e.update_id,
    )  # fmt: skip


def _candle_row(e: Candle) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        e.interval, pg_time(e.start), pg_time(e.end),
        e.open, e.high, e.low, e.close, e.volume, e.quote_volume, e.trades, e.closed,
    )  # fmt: skip


def _ticker_row(e: Ticker) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        e.window, e.last, e.open, e.high, e.low, e.volume, e.quote_volume,
        e.change, e.change_pct, e.vwap, e.bid_price, e.bid_qty, e.ask_price, e.ask_qty, e.trades,
    )  # fmt: skip


def _book_row(e: Book) -> tuple[Any, ...]:
    bp, bq = _levels(e.bids)
    ap, aq = _levels(e.asks)
    # The depth is part of the key: depth5 and depth10 snapshots of one update are two rows.
    depth = max(len(bp), len(ap))
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts), e.update_id, depth, bp, bq, ap, aq
    )  # fmt: skip


def _book_update_row(e: BookUpdate) -> tuple[Any, ...]:
    bp, bq = _levels(e.bids)
    ap, aq = _levels(e.asks)
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        e.first_update_id, e.last_update_id, bp, bq, ap, aq,
    )  # fmt: skip


def _gap_row(e: Gap) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        pg_time(e.start), pg_time(e.end), list(e.streams), e.cause,
    )  # fmt: skip


# --------------------------------------------------------------------------- the mapping

_HEAD = "venue symbol ts:ts recv_ts:ts "

TABLES: dict[type[Event], Table] = {
    Trade: make_table(
        "trade", "trades", _trade_row, _HEAD + "price:num qty:num side trade_id:int8 aggregate:bool"
    ),
    Quote: make_table(
        "quote",
        "quotes",
        _quote_row,
        _HEAD + "bid_price:num bid_qty:num ask_price:num ask_qty:num update_id:int8",
    ),
    Candle: make_table(
        "candle",
        "candles",
        _candle_row,
        _HEAD + "interval start_ts:ts end_ts:ts open:num high:num low:num close:num volume:num"
        " quote_volume:num trades:int8 closed:bool",
        upsert_key=("venue", "symbol", "interval", "start_ts"),
        # Within a chunk: a closed bar beats an open one, then the latest update wins.
        order="closed DESC, ts DESC, recv_ts DESC",
        # Against the table: a closed bar is final; an open one yields to anything newer.
        upsert_where="NOT irisflow.candles.closed"
        " AND (excluded.closed OR excluded.ts >= irisflow.candles.ts)",
    ),
    Ticker: make_table(
        "ticker",
        "tickers",
        _ticker_row,
        _HEAD + "window_len last:num open:num high:num low:num volume:num quote_volume:num"
        " change:num change_pct:num vwap:num bid_price:num bid_qty:num ask_price:num"
        " ask_qty:num trades:int8",
    ),
    Book: make_table(
        "book",
        "books",
        _book_row,
        _HEAD + "update_id:int8 depth:int4 bid_prices:nums bid_qtys:nums ask_prices:nums"
        " ask_qtys:nums",
    ),
    BookUpdate: make_table(
        "book_update",
        "book_updates",
        _book_update_row,
        _HEAD + "first_update_id:int8 last_update_id:int8 bid_prices:nums bid_qtys:nums"
        " ask_prices:nums ask_qtys:nums",
    ),
    Gap: make_table("gap", "gaps", _gap_row, _HEAD + "start_ts:ts end_ts:ts streams:text[] cause"),
    Window: RESULTS,
    Rsi: RESULTS,
    Spike: RESULTS,
    Joined: RESULTS,
    Late: RESULTS,
    **CHAIN_TABLES,
}
"""Which table each event class goes to (the sink works on its own copies)."""


def sink_tables(chain: str) -> dict[type[Event], Table]:
    """:data:`TABLES` as one sink's own copies (``use_staging`` is per sink), chain rows bound
    to ``chain``; kinds that share a table share the copy."""
    copies: dict[int, Table] = {}
    for t in TABLES.values():
        if id(t) not in copies:
            row = functools.partial(t.row, chain=chain) if t.chain else t.row
            copies[id(t)] = attrs.evolve(t, row=row)
    return {cls: copies[id(t)] for cls, t in TABLES.items()}
